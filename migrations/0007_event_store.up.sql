-- The event store (issue #27): events per aggregate with a gap-free global order, snapshots,
-- and the checkpoints of projections. The bot's layout-3 store (sqlite-es) moves onto these
-- tables (issue #28), with position = its SQLite rowid.
--
-- The global order needs no writer lock. An event's position is
--     (pg_current_xact_id() << 20) + its index within its transaction
-- (pg_current_xact_id is the top-level transaction id: the same for every statement and
-- savepoint of a transaction). A reader returns only positions below
--     pg_snapshot_xmin(pg_current_snapshot()) << 20
-- : every transaction with a smaller id has ended, so nothing can commit later below what it
-- returned, and later commits sort higher. Appends to different aggregates never wait for each
-- other. docs/event-store.md says what this costs (a long write transaction anywhere on the
-- server holds readers back until it ends).

CREATE TABLE events (
    position bigint NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    sequence bigint NOT NULL,
    event_type text NOT NULL,
    event_version text NOT NULL DEFAULT '1',
    payload jsonb NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_pkey PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    CONSTRAINT events_position_key UNIQUE (position),
    CONSTRAINT events_position_check CHECK (position >= 1),
    CONSTRAINT events_sequence_check CHECK (sequence >= 1),
    -- the library's limits (persistence.event_models); a writer that skips it is refused too
    CONSTRAINT events_aggregate_type_check CHECK (char_length(aggregate_type) BETWEEN 1 AND 100),
    CONSTRAINT events_aggregate_id_check CHECK (char_length(aggregate_id) BETWEEN 1 AND 256),
    CONSTRAINT events_event_type_check CHECK (char_length(event_type) BETWEEN 1 AND 200),
    CONSTRAINT events_event_version_check CHECK (char_length(event_version) BETWEEN 1 AND 32),
    CONSTRAINT events_payload_check CHECK (jsonb_typeof(payload) = 'object'),
    CONSTRAINT events_metadata_check CHECK (jsonb_typeof(metadata) = 'object')
);
-- read_all(aggregate_type=...): one type's events in global order, one index range scan
CREATE INDEX events_type_position_idx ON events (aggregate_type, position);

COMMENT ON TABLE events IS
    'The event store: each aggregate''s events by sequence, and one global order by position '
    '(docs/event-store.md). Written only by append_events().';
COMMENT ON COLUMN events.position IS
    'Global order: (transaction id << 20) + the event''s index in its transaction, so that a '
    'reader below pg_snapshot_xmin(pg_current_snapshot()) << 20 never skips a later commit. '
    'Imported events (the bot''s SQLite file) keep their rowid, below every new position.';
COMMENT ON COLUMN events.sequence IS
    'The event''s number within its aggregate, from 1, contiguous; after compaction the stored '
    'events start after the snapshot''s last_sequence.';
COMMENT ON COLUMN events.event_version IS 'The version of the event''s payload schema.';
COMMENT ON COLUMN events.metadata IS 'A JSON object about the event (causation, user, ...).';

CREATE TABLE snapshots (
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    last_sequence bigint NOT NULL,
    snapshot_version bigint NOT NULL DEFAULT 0,
    payload jsonb NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT snapshots_pkey PRIMARY KEY (aggregate_type, aggregate_id),
    CONSTRAINT snapshots_last_sequence_check CHECK (last_sequence >= 1),
    CONSTRAINT snapshots_snapshot_version_check CHECK (snapshot_version >= 0),
    CONSTRAINT snapshots_aggregate_type_check CHECK (char_length(aggregate_type) BETWEEN 1 AND 100),
    CONSTRAINT snapshots_aggregate_id_check CHECK (char_length(aggregate_id) BETWEEN 1 AND 256),
    CONSTRAINT snapshots_payload_check CHECK (jsonb_typeof(payload) = 'object')
);
COMMENT ON TABLE snapshots IS
    'The latest snapshot of an aggregate: its state after last_sequence. compact() deletes the '
    'events it covers; the aggregate''s last sequence is then the snapshot''s.';
COMMENT ON COLUMN snapshots.snapshot_version IS
    'The version of the snapshot''s payload schema: a reader that finds another version '
    'ignores the snapshot and replays (not possible once compacted: docs/event-store.md).';

CREATE TABLE checkpoints (
    name text NOT NULL,
    position bigint NOT NULL DEFAULT 0,
    version bigint,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT checkpoints_pkey PRIMARY KEY (name),
    CONSTRAINT checkpoints_name_check CHECK (char_length(name) BETWEEN 1 AND 200),
    CONSTRAINT checkpoints_position_check CHECK (position >= 0),
    CONSTRAINT checkpoints_version_check CHECK (version >= 0)
);
COMMENT ON TABLE checkpoints IS
    'How far each projection (read model) has read the global order. Advanced in the '
    'transaction that writes the projection''s effects, so both commit or neither.';
COMMENT ON COLUMN checkpoints.position IS 'The position of the last event handled; 0: none.';
COMMENT ON COLUMN checkpoints.version IS
    'The projection''s version; a projector with a newer one resets the read model and the '
    'position to 0 (a rebuild). NULL: unversioned.';

-- Append: one round trip. Checks the expected sequence, numbers the events, gives each its
-- position, and inserts them, all or nothing.
--   p_events: a JSON array of [event_type, event_version, payload, metadata] arrays.
-- Returns one row per event (the expected sequence, position, sequence, recorded_at), or, when
-- the aggregate's last sequence is not p_expected, one row (actual last sequence, NULL, NULL,
-- NULL) and writes nothing: the caller raises ConcurrencyConflict, and the transaction stays
-- usable. A concurrent append that wins the race after the check makes the insert skip a row
-- (ON CONFLICT DO NOTHING: no subtransaction, unlike an EXCEPTION block); the function then
-- raises unique_violation on events_pkey with the actual last sequence in its DETAIL, which
-- undoes the statement. That error, and only that constraint, is a conflict to the library.
CREATE FUNCTION append_events(p_type text, p_id text, p_expected bigint, p_events jsonb)
RETURNS TABLE (actual bigint, "position" bigint, "sequence" bigint, recorded_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
    v_txid bigint := pg_current_xact_id()::text::bigint;
    v_base bigint;
    v_count bigint := jsonb_array_length(p_events);
    v_inserted bigint;
BEGIN
    v_last := greatest(
        (SELECT max(e.sequence) FROM events e
          WHERE e.aggregate_type = p_type AND e.aggregate_id = p_id),
        (SELECT s.last_sequence FROM snapshots s
          WHERE s.aggregate_type = p_type AND s.aggregate_id = p_id),
        0);
    IF v_last <> p_expected THEN
        RETURN QUERY SELECT v_last, NULL::bigint, NULL::bigint, NULL::timestamptz;
        RETURN;
    END IF;
    -- the events this transaction appended already sit in [txid << 20, (txid + 1) << 20)
    SELECT coalesce(max(e.position), (v_txid << 20) - 1) INTO v_base FROM events e
     WHERE e.position >= v_txid << 20 AND e.position < (v_txid + 1) << 20;
    IF v_base + v_count >= (v_txid + 1) << 20 THEN
        RAISE EXCEPTION 'more than % events in one transaction', (1 << 20) - 1
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'append in several transactions';
    END IF;
    RETURN QUERY
    INSERT INTO events AS e (position, aggregate_type, aggregate_id, sequence, event_type,
                             event_version, payload, metadata)
    SELECT v_base + n, p_type, p_id, p_expected + n, doc->>0, doc->>1, doc->2, doc->3
      FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(doc, n)
    ON CONFLICT ON CONSTRAINT events_pkey DO NOTHING
    RETURNING p_expected, e.position, e.sequence, e.recorded_at;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    IF v_inserted < v_count THEN
        -- a new statement, so a new snapshot (READ COMMITTED): it sees the winner's events
        v_last := greatest(
            (SELECT max(e.sequence) FROM events e
              WHERE e.aggregate_type = p_type AND e.aggregate_id = p_id),
            (SELECT s.last_sequence FROM snapshots s
              WHERE s.aggregate_type = p_type AND s.aggregate_id = p_id),
            0);
        RAISE EXCEPTION 'a concurrent append to this aggregate won the race'
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'events_pkey', TABLE = 'events',
                  DETAIL = format('actual_sequence=%s', v_last);
    END IF;
END
$$;
COMMENT ON FUNCTION append_events(text, text, bigint, jsonb) IS
    'Appends events to an aggregate if its last sequence is p_expected (docs/event-store.md).';
