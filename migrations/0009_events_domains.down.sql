-- append_events() keeps 0009's casts to bigint: a no-op on bigint columns.
ALTER TABLE events
    ALTER COLUMN position TYPE bigint,
    ALTER COLUMN sequence TYPE bigint,
    ALTER COLUMN aggregate_type TYPE text,
    ALTER COLUMN aggregate_id TYPE text,
    ALTER COLUMN event_type TYPE text,
    ALTER COLUMN event_version TYPE text,
    ALTER COLUMN payload TYPE jsonb,
    ALTER COLUMN metadata TYPE jsonb,
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
COMMENT ON CONSTRAINT events_check ON events IS
    'position and sequence from 1; the text limits of persistence.event_models; payload and '
    'metadata JSON objects. One constraint: each CHECK is prepared again for every INSERT.';
DROP DOMAIN events_position, events_sequence, events_aggregate_type, events_aggregate_id,
    events_event_type, events_event_version, events_payload, events_metadata;

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
