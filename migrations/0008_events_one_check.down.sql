DROP FUNCTION events_last_sequence(text, text);
ALTER TABLE events
    DROP CONSTRAINT events_check,
    ADD CONSTRAINT events_position_check CHECK (position >= 1),
    ADD CONSTRAINT events_sequence_check CHECK (sequence >= 1),
    ADD CONSTRAINT events_aggregate_type_check CHECK (char_length(aggregate_type) BETWEEN 1 AND 100),
    ADD CONSTRAINT events_aggregate_id_check CHECK (char_length(aggregate_id) BETWEEN 1 AND 256),
    ADD CONSTRAINT events_event_type_check CHECK (char_length(event_type) BETWEEN 1 AND 200),
    ADD CONSTRAINT events_event_version_check CHECK (char_length(event_version) BETWEEN 1 AND 32),
    ADD CONSTRAINT events_payload_check CHECK (jsonb_typeof(payload) = 'object'),
    ADD CONSTRAINT events_metadata_check CHECK (jsonb_typeof(metadata) = 'object');
COMMENT ON TABLE events IS
    'The event store: each aggregate''s events by sequence, and one global order by position '
    '(docs/event-store.md). Written only by append_events().';
