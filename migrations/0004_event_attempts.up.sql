-- Poison events (issue #25). claim_next returned the oldest unprocessed event, so a handler that
-- always failed on one got it back forever and every event behind it waited. Now each failure
-- is recorded on the event (events.mark_failed): how many attempts, the last error and when,
-- and when it may be claimed again (an exponential backoff, so that the events behind it are
-- claimed meanwhile). After the configured number of attempts it is a dead letter: never
-- claimed again, kept for a person to look at, and put back by events.revive.
--
-- Columns with a constant default or none are added without rewriting the table; the CHECKs
-- scan it once, under the ALTER's lock (every row passes: 0 attempts, no error).

ALTER TABLE event_queue
    ADD COLUMN attempts integer NOT NULL DEFAULT 0
        CONSTRAINT event_queue_attempts_check CHECK (attempts >= 0),
    -- bounded: the library truncates a longer reason to 2000 characters before sending it
    ADD COLUMN last_error text
        CONSTRAINT event_queue_last_error_check CHECK (char_length(last_error) BETWEEN 1 AND 2000),
    ADD COLUMN last_failed_at timestamptz,
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN dead_at timestamptz,
    -- an error is recorded with its time, or neither is
    ADD CONSTRAINT event_queue_last_failure_check
        CHECK ((last_error IS NULL) = (last_failed_at IS NULL));

-- Claim order stays an ordered scan of a small partial index: the events that may still be
-- processed (neither processed nor dead). Waiting out a backoff is a filter on the few rows
-- read, not an index condition: next_attempt_at is compared with now(), which an index
-- predicate cannot hold, and keeping it out of the key keeps the (block_number, log_index) order.
DROP INDEX event_queue_unprocessed_idx;
CREATE INDEX event_queue_live_idx ON event_queue (block_number, log_index)
    WHERE processed_at IS NULL AND dead_at IS NULL;
-- The dead letters, listed and paged by id; a dead letter marked processed (dealt with by
-- hand) leaves it.
CREATE INDEX event_queue_dead_idx ON event_queue (id)
    WHERE dead_at IS NOT NULL AND processed_at IS NULL;

COMMENT ON COLUMN event_queue.attempts IS
    'Failed attempts to process the event (events.mark_failed) since it was queued or revived.';
COMMENT ON COLUMN event_queue.last_error IS
    'Why the last attempt failed, as the worker said it (at most 2000 characters); NULL if none '
    'failed. Kept when the event is revived, as history.';
COMMENT ON COLUMN event_queue.last_failed_at IS
    'When the last attempt failed; NULL if none failed.';
COMMENT ON COLUMN event_queue.next_attempt_at IS
    'Not claimed before this time: the backoff after a failure (doubling per attempt, capped). '
    'NULL: claimable now.';
COMMENT ON COLUMN event_queue.dead_at IS
    'When the event became a dead letter (its attempts reached the maximum): never claimed '
    'again until revived. NULL: alive.';
