-- Back to 0002's record_fill: no row back for a fill that is stored already.

DROP FUNCTION record_fill(text, integer, text, numeric, text, numeric, timestamptz);

-- Store a fill (no row back when its (tx_hash, log_index) is stored: nothing changes), add it
-- to its symbol's accumulator (created on the symbol's first fill; the upsert takes the row
-- lock), and start an execution if one is due. One row: the fill's id, then the execution
-- started, if any (NULLs if none).
CREATE FUNCTION record_fill(
    p_tx_hash text, p_log_index integer, p_symbol text, p_amount numeric, p_direction text,
    p_price_usdc numeric, p_created_at timestamptz
) RETURNS TABLE (trade_id bigint, execution schwab_executions)
LANGUAGE plpgsql AS $$
DECLARE
    v_trade_id bigint;
BEGIN
    INSERT INTO onchain_trades AS f
        (tx_hash, log_index, symbol, amount, direction, price_usdc, created_at, unlinked_shares)
        VALUES (p_tx_hash, p_log_index, p_symbol, p_amount, p_direction, p_price_usdc,
                coalesce(p_created_at, now()), p_amount)
        ON CONFLICT ON CONSTRAINT onchain_trades_tx_hash_log_index_key DO NOTHING
        RETURNING f.id INTO v_trade_id;
    IF v_trade_id IS NULL THEN
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
    RETURN NEXT;
END
$$;
