-- A repeated record_fill returns what the first call did. Until now a fill whose
-- (tx_hash, log_index) was stored already gave no row back, so a retry after a lost reply (the
-- connection dropped after the commit, an async cancel) hid the fill's id and the execution the
-- first call started. Now it returns the stored fill's id, the execution the fill first went
-- into, and already_stored = true; the same key with other values is refused (unique_violation,
-- naming the fields): that is another event under a key already taken, not a retry.
--
-- Which execution a repeat returns: the lowest-id execution linked to the fill, as it is now
-- (its current status; the links of a FAILED execution stay, as history). When the first call
-- started an execution, that is the one, because the new fill is always linked to it: an
-- execution starts only when none is pending, and with none pending every unit of work has left
-- both sides below one share (each ends with start_due_execution); so the side of the new fill
-- is the one that reaches a whole share, and its other open fills hold less than one share,
-- less than the execution's shares (at least 1, also under the 2^31-1 cap): drawing them in id
-- order reaches the new fill, whatever its id. Executions of a symbol are created under its
-- accumulator lock, so a later one has a higher id, and links to the fill cannot predate it.
-- When the first call started none, it is the first execution the fill went into later, or NULL.
-- (Data that breaks "nothing pending means both sides below one share", e.g. imported from a
-- SQLite file in that state or edited by hand, can make a first call start an execution of
-- other fills only; a repeat then returns the fill's own first execution, or NULL.)
--
-- The function's result gains a column, which CREATE OR REPLACE cannot do: drop and create.

DROP FUNCTION record_fill(text, integer, text, numeric, text, numeric, timestamptz);

-- Store a fill, add it to its symbol's accumulator (created on the symbol's first fill; the
-- upsert takes the row lock), and start an execution if one is due. One row: the fill's id, the
-- execution started, if any (NULLs if none), and already_stored false. When the
-- (tx_hash, log_index) is stored with the same symbol, amount, direction and price (created_at
-- is when it was stored, not compared): nothing changes, and the row is the stored fill's id,
-- the lowest-id execution linked to it (see above) and already_stored true.
CREATE FUNCTION record_fill(
    p_tx_hash text, p_log_index integer, p_symbol text, p_amount numeric, p_direction text,
    p_price_usdc numeric, p_created_at timestamptz
) RETURNS TABLE (trade_id bigint, execution schwab_executions, already_stored boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_trade_id bigint;
    v_stored onchain_trades;
    v_differs text;
BEGIN
    INSERT INTO onchain_trades AS f
        (tx_hash, log_index, symbol, amount, direction, price_usdc, created_at, unlinked_shares)
        VALUES (p_tx_hash, p_log_index, p_symbol, p_amount, p_direction, p_price_usdc,
                coalesce(p_created_at, now()), p_amount)
        ON CONFLICT ON CONSTRAINT onchain_trades_tx_hash_log_index_key DO NOTHING
        RETURNING f.id INTO v_trade_id;
    IF v_trade_id IS NULL THEN
        -- stored already (ON CONFLICT waited for a concurrent insert of the key to commit, and
        -- this statement's snapshot sees it); a fill is immutable, so no lock is needed
        SELECT * INTO v_stored FROM onchain_trades AS s
            WHERE s.tx_hash = p_tx_hash AND s.log_index = p_log_index;
        -- numbers compare as numbers (1.50 is 1.5) and are shown without trailing zeros
        v_differs := concat_ws(', ',
            CASE WHEN v_stored.symbol IS DISTINCT FROM p_symbol
                THEN format('symbol %s (stored: %s)', p_symbol, v_stored.symbol) END,
            CASE WHEN v_stored.amount IS DISTINCT FROM p_amount
                THEN format('amount %s (stored: %s)', trim_scale(p_amount), trim_scale(v_stored.amount)) END,
            CASE WHEN v_stored.direction IS DISTINCT FROM p_direction
                THEN format('direction %s (stored: %s)', p_direction, v_stored.direction) END,
            CASE WHEN v_stored.price_usdc IS DISTINCT FROM p_price_usdc
                THEN format('price_usdc %s (stored: %s)', trim_scale(p_price_usdc), trim_scale(v_stored.price_usdc)) END);
        IF v_differs <> '' THEN
            RAISE EXCEPTION 'the fill of tx_hash % and log_index % is stored with other values: '
                '%; a retry must repeat the stored values, and another fill needs its own '
                '(tx_hash, log_index); nothing was written', p_tx_hash, p_log_index, v_differs
                USING ERRCODE = 'unique_violation',
                      CONSTRAINT = 'onchain_trades_tx_hash_log_index_key';
        END IF;
        trade_id := v_stored.id;
        SELECT e.* INTO execution FROM trade_execution_links AS l
            JOIN schwab_executions AS e ON e.id = l.execution_id
            WHERE l.trade_id = v_stored.id
            ORDER BY e.id LIMIT 1;
        already_stored := true;
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO trade_accumulators AS a (symbol, accumulated_long, accumulated_short)
        VALUES (p_symbol,
                CASE WHEN p_direction = 'BUY' THEN p_amount ELSE 0 END,
                CASE WHEN p_direction = 'SELL' THEN p_amount ELSE 0 END)
        ON CONFLICT ON CONSTRAINT trade_accumulators_pkey DO UPDATE SET
            accumulated_long = a.accumulated_long + excluded.accumulated_long,
            accumulated_short = a.accumulated_short + excluded.accumulated_short,
            last_updated = now();
    trade_id := v_trade_id;
    execution := NULL;
    SELECT * INTO execution FROM start_due_execution(p_symbol);
    already_stored := false;
    RETURN NEXT;
END
$$;
