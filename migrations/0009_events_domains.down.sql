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
