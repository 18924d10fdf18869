-- append_events() (issue #27):
-- - checks, after its insert, that no snapshot covers what it inserted, when its check found no
--   event to lock (a new aggregate, or one compacted whole). A racing writer that appended the
--   same sequence, snapshotted and compacted it committed while this insert's unique check
--   waited for it, so the check found that event deleted and the insert stored a second one
--   behind the snapshot, where load() never returns it. The snapshot that covers it committed
--   before the deletion, so a statement after the insert (a snapshot of its own) sees it.
--   db.event_store's first event goes through this function too.
-- - refuses a transaction at REPEATABLE READ or SERIALIZABLE: there every statement shares the
--   transaction's snapshot, so neither that check nor the one before the insert sees a racing
--   writer's commit, and the event was lost the same way.
-- - reports, when the expectation is wrong, the last sequence read afresh: the check's could
--   predate a racing compaction (4 for an aggregate at 5).
-- - says how many events a transaction holds: 2^20 (it said one fewer).
-- Migration 0011's function otherwise, unchanged.
CREATE OR REPLACE FUNCTION append_events(p_type text, p_id text, p_expected bigint, p_events jsonb)
RETURNS TABLE (actual bigint, "position" bigint, "sequence" bigint, recorded_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
    v_event bigint;
    v_snapshot bigint;
    v_txid bigint := pg_current_xact_id()::text::bigint;
    v_base bigint;
    v_count bigint := jsonb_array_length(p_events);
    v_inserted bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'the event store appends at READ COMMITTED, not %: append outside '
                        'this transaction, or in one at READ COMMITTED (the default), where its '
                        'checks see a racing writer''s commit', upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'feature_not_supported';
    END IF;
    -- the last event stays locked to the commit (KEY SHARE: other appends take it too): a
    -- compaction deletes it, and the racing writer's event after it, only after this
    -- transaction. Then the snapshot, in a statement (and a snapshot) of its own: after a wait
    -- for a compaction that deleted the last event, it shows the snapshot that replaced it. Not
    -- locked: a compaction updates its snapshot before it deletes, so waiting for that row
    -- while holding the event would deadlock with it.
    SELECT e.sequence INTO v_event FROM events e
     WHERE e.aggregate_type = p_type AND e.aggregate_id = p_id
     ORDER BY e.sequence DESC LIMIT 1 FOR KEY SHARE;
    SELECT s.last_sequence INTO v_snapshot FROM snapshots s
     WHERE s.aggregate_type = p_type AND s.aggregate_id = p_id;
    v_last := greatest(v_event, v_snapshot, 0);
    IF v_last <> p_expected THEN
        -- afresh: a compaction this check waited for may have left its event older than that
        v_last := greatest(
            (SELECT max(e.sequence) FROM events e
              WHERE e.aggregate_type = p_type AND e.aggregate_id = p_id),
            (SELECT s.last_sequence FROM snapshots s
              WHERE s.aggregate_type = p_type AND s.aggregate_id = p_id),
            0);
        RETURN QUERY SELECT v_last, NULL::bigint, NULL::bigint, NULL::timestamptz;
        RETURN;
    END IF;
    -- the events this transaction appended already sit in [txid << 20, (txid + 1) << 20)
    SELECT coalesce(max(e.position), (v_txid << 20) - 1) INTO v_base FROM events e
     WHERE e.position >= v_txid << 20 AND e.position < (v_txid + 1) << 20;
    IF v_base + v_count >= (v_txid + 1) << 20 THEN
        RAISE EXCEPTION 'more than % events in one transaction', 1 << 20
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
    -- nothing was locked: a snapshot that now covers the first inserted sequence was saved by
    -- a writer whose events there a compaction deleted while the insert waited
    IF v_inserted = v_count AND v_event IS NULL AND EXISTS (
        SELECT FROM snapshots s
         WHERE s.aggregate_type = p_type AND s.aggregate_id = p_id
           AND s.last_sequence > p_expected) THEN
        v_inserted := 0;
    END IF;
    IF v_inserted < v_count THEN
        -- a new statement, so a new snapshot (READ COMMITTED): it sees the winner's events;
        -- not the rows the INSERT above wrote past the clash, which the RAISE undoes
        v_last := greatest(
            (SELECT max(e.sequence) FROM events e
              WHERE e.aggregate_type = p_type AND e.aggregate_id = p_id
                AND NOT (e.position > v_base AND e.position <= v_base + v_count)),
            (SELECT s.last_sequence FROM snapshots s
              WHERE s.aggregate_type = p_type AND s.aggregate_id = p_id),
            0);
        RAISE EXCEPTION 'a concurrent append to this aggregate won the race'
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'events_pkey', TABLE = 'events',
                  DETAIL = format('actual_sequence=%s', v_last);
    END IF;
END
$$;
