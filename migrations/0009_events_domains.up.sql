-- The events table's rules move from its CHECK constraint onto the columns' types (issue #27).
-- PostgreSQL reads a table's CHECK expressions from the catalog, parses and plans them again
-- for every INSERT statement it executes, prepared or not: for a one-event append, events_check
-- cost about 210,000 of the server's 490,000 instructions (bench.server_instructions,
-- docs/performance.md). A domain's check is planned once per session and kept in its type
-- cache; the same rules as domains cost about 31,000. The rules and their constraint names
-- are those of migration 0007; a refused value raises check_violation (ValidationError in the
-- library) as before.
-- Changing the types rewrites events and rebuilds its indexes, under an exclusive lock.
CREATE DOMAIN events_position AS bigint CONSTRAINT events_position_check CHECK (VALUE >= 1);
CREATE DOMAIN events_sequence AS bigint CONSTRAINT events_sequence_check CHECK (VALUE >= 1);
CREATE DOMAIN events_aggregate_type AS text
    CONSTRAINT events_aggregate_type_check CHECK (char_length(VALUE) BETWEEN 1 AND 100);
CREATE DOMAIN events_aggregate_id AS text
    CONSTRAINT events_aggregate_id_check CHECK (char_length(VALUE) BETWEEN 1 AND 256);
CREATE DOMAIN events_event_type AS text
    CONSTRAINT events_event_type_check CHECK (char_length(VALUE) BETWEEN 1 AND 200);
CREATE DOMAIN events_event_version AS text
    CONSTRAINT events_event_version_check CHECK (char_length(VALUE) BETWEEN 1 AND 32);
CREATE DOMAIN events_payload AS jsonb
    CONSTRAINT events_payload_check CHECK (jsonb_typeof(VALUE) = 'object');
CREATE DOMAIN events_metadata AS jsonb
    CONSTRAINT events_metadata_check CHECK (jsonb_typeof(VALUE) = 'object');

ALTER TABLE events
    DROP CONSTRAINT events_check,
    ALTER COLUMN position TYPE events_position,
    ALTER COLUMN sequence TYPE events_sequence,
    ALTER COLUMN aggregate_type TYPE events_aggregate_type,
    ALTER COLUMN aggregate_id TYPE events_aggregate_id,
    ALTER COLUMN event_type TYPE events_event_type,
    ALTER COLUMN event_version TYPE events_event_version,
    ALTER COLUMN payload TYPE events_payload,
    ALTER COLUMN metadata TYPE events_metadata;

-- append_events() of migration 0007, unchanged but for two casts: RETURN QUERY wants the
-- declared bigint columns, not the domains over them.
CREATE OR REPLACE FUNCTION append_events(p_type text, p_id text, p_expected bigint, p_events jsonb)
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
    RETURNING p_expected, e.position::bigint, e.sequence::bigint, e.recorded_at;
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

-- The one-event append reads a loser's actual sequence with a statement of its own now
-- (persistence.queries.event_store.APPEND_NEXT), not through this function.
DROP FUNCTION events_last_sequence(text, text);

COMMENT ON DOMAIN events_payload IS
    'A JSON object. The events table''s rules are domains rather than CHECK constraints: a '
    'CHECK is planned again for every INSERT, a domain once per session (migration 0009).';
