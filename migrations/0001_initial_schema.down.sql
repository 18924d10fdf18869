DROP TABLE schwab_auth;
DROP TABLE trades;
