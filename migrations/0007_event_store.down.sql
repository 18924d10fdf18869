-- Back to schema 0006: the event store, its snapshots and checkpoints are dropped, with their
-- data. Export what you need first (docs/event-store.md).
DROP FUNCTION append_events(text, text, bigint, jsonb);
DROP TABLE checkpoints;
DROP TABLE snapshots;
DROP TABLE events;
