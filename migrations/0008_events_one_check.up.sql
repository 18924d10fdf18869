-- The events table's eight CHECK constraints become one (issue #27). PostgreSQL prepares each
-- CHECK of a table anew for every INSERT statement (it reads the stored expression and plans
-- it), so eight cost a one-event append about a sixth of the server's throughput with 8
-- writers; one constraint holding the same conditions costs about a third of that. The rules are
-- unchanged (persistence.event_models' limits); a refused row now names events_check.
ALTER TABLE events
    DROP CONSTRAINT events_position_check,
    DROP CONSTRAINT events_sequence_check,
    DROP CONSTRAINT events_aggregate_type_check,
    DROP CONSTRAINT events_aggregate_id_check,
    DROP CONSTRAINT events_event_type_check,
    DROP CONSTRAINT events_event_version_check,
    DROP CONSTRAINT events_payload_check,
    DROP CONSTRAINT events_metadata_check,
    ADD CONSTRAINT events_check CHECK (
        position >= 1
        AND sequence >= 1
        AND char_length(aggregate_type) BETWEEN 1 AND 100
        AND char_length(aggregate_id) BETWEEN 1 AND 256
        AND char_length(event_type) BETWEEN 1 AND 200
        AND char_length(event_version) BETWEEN 1 AND 32
        AND jsonb_typeof(payload) = 'object'
        AND jsonb_typeof(metadata) = 'object'
    );
-- The one-event append (persistence.queries.event_store.APPEND_ONE_ALONE) checks the expected
-- sequence by the event stored there, so it relies on each aggregate's sequences being
-- contiguous (after compaction: from its snapshot on), as append_events() and the SQLite import
-- (which refuses gaps) keep them. A writer that inserts rows by hand must keep them so too.
COMMENT ON TABLE events IS
    'The event store: each aggregate''s events by sequence, contiguous, and one global order by '
    'position (docs/event-store.md). Written only by append_events() and the library''s '
    'one-event INSERT, which relies on the sequences being contiguous.';
COMMENT ON CONSTRAINT events_check ON events IS
    'position and sequence from 1; the text limits of persistence.event_models; payload and '
    'metadata JSON objects. One constraint: each CHECK is prepared again for every INSERT.';

-- The last sequence of an aggregate, read with a snapshot of its own: a statement calls it
-- after an insert that a concurrent append won (ON CONFLICT DO NOTHING waited for the winner
-- to commit; the statement's own snapshot is older and does not show the winner's event).
-- VOLATILE plpgsql, so it is never inlined into the caller and each query in it takes a new
-- snapshot (READ COMMITTED).
CREATE FUNCTION events_last_sequence(p_type text, p_id text) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN greatest(
        (SELECT max(e.sequence) FROM events e
          WHERE e.aggregate_type = p_type AND e.aggregate_id = p_id),
        (SELECT s.last_sequence FROM snapshots s
          WHERE s.aggregate_type = p_type AND s.aggregate_id = p_id),
        0);
END
$$;
COMMENT ON FUNCTION events_last_sequence(text, text) IS
    'The aggregate''s last sequence (after compaction, at least its snapshot''s), read with a '
    'fresh snapshot: what a losing append reports (docs/event-store.md).';
