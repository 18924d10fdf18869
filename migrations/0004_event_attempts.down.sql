-- Back to schema 0003: the attempts, errors and dead letters are dropped, so every unprocessed
-- event, dead letters included, is claimable again, oldest first (as before 0004).
DROP INDEX event_queue_dead_idx;
DROP INDEX event_queue_live_idx;
CREATE INDEX event_queue_unprocessed_idx ON event_queue (block_number, log_index)
    WHERE processed_at IS NULL;

ALTER TABLE event_queue
    DROP CONSTRAINT event_queue_last_failure_check,
    DROP COLUMN dead_at,
    DROP COLUMN next_attempt_at,
    DROP COLUMN last_failed_at,
    DROP COLUMN last_error,
    DROP COLUMN attempts;
