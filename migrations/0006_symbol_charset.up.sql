-- Symbols are 1 to 16 ASCII letters, digits, '.', '-' or '/' (persistence.models.SYMBOL_PATTERN):
-- the database refuses a lookalike ('AAPL' with a zero-width space, full-width letters) that
-- would start books of its own, whatever client writes. Case is kept: 'tAAPL' is not 'TAAPL'.
-- Each constraint checks the rows already stored: if one is refused, this migration fails and
-- changes nothing; docs/usage.md says how to find such rows.
ALTER TABLE onchain_trades ADD CONSTRAINT onchain_trades_symbol_charset_check
    CHECK (symbol ~ '^[A-Za-z0-9./-]{1,16}$');
ALTER TABLE schwab_executions ADD CONSTRAINT schwab_executions_symbol_charset_check
    CHECK (symbol ~ '^[A-Za-z0-9./-]{1,16}$');
ALTER TABLE trade_accumulators ADD CONSTRAINT trade_accumulators_symbol_charset_check
    CHECK (symbol ~ '^[A-Za-z0-9./-]{1,16}$');
