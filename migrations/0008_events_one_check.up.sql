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
COMMENT ON CONSTRAINT events_check ON events IS
    'position and sequence from 1; the text limits of persistence.event_models; payload and '
    'metadata JSON objects. One constraint: each CHECK is prepared again for every INSERT.';
