DROP TABLE event_queue;
DROP TABLE trade_execution_links;
DROP TABLE trade_accumulators;
DROP TABLE schwab_executions;
DROP TABLE onchain_trades;
DROP FUNCTION onchain_trades_immutable();
