-- Schwab tokens sealed at rest (AES-256-GCM, by the library: SQL cannot encrypt without the
-- key). Plain rows may remain until `python -m persistence.tokens encrypt` seals them, or the
-- next save does; a row is wholly plain or wholly sealed.

ALTER TABLE schwab_auth
    ALTER COLUMN access_token DROP NOT NULL,
    ALTER COLUMN refresh_token DROP NOT NULL,
    ADD COLUMN access_token_sealed bytea,
    ADD COLUMN refresh_token_sealed bytea,
    ADD COLUMN token_key_id text
        CONSTRAINT schwab_auth_token_key_id_check CHECK (token_key_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    -- 12-byte nonce, at least one byte of token, 16-byte tag
    ADD CONSTRAINT schwab_auth_sealed_length_check CHECK (
        octet_length(access_token_sealed) > 28 AND octet_length(refresh_token_sealed) > 28),
    ADD CONSTRAINT schwab_auth_sealed_or_plain_check CHECK (
        (token_key_id IS NULL AND access_token_sealed IS NULL AND refresh_token_sealed IS NULL
            AND access_token IS NOT NULL AND refresh_token IS NOT NULL)
        OR (token_key_id IS NOT NULL AND access_token_sealed IS NOT NULL
            AND refresh_token_sealed IS NOT NULL AND access_token IS NULL AND refresh_token IS NULL));

COMMENT ON COLUMN schwab_auth.access_token_sealed IS
    'AES-256-GCM: 12-byte nonce || ciphertext || 16-byte tag, under key token_key_id; the associated '
    'data names the table, row and column, so a ciphertext moved elsewhere does not decrypt.';
COMMENT ON COLUMN schwab_auth.refresh_token_sealed IS 'As access_token_sealed.';
COMMENT ON COLUMN schwab_auth.token_key_id IS
    'The id, in PERSISTENCE_TOKEN_KEYS, of the key that sealed both tokens; NULL for a plain row.';
COMMENT ON COLUMN schwab_auth.access_token IS
    'Plain text, only in a row not sealed yet (NULL once sealed): run python -m persistence.tokens encrypt.';
