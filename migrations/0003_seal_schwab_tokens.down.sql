-- SQL cannot decrypt: refuse while sealed rows exist, rather than drop the tokens.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM schwab_auth WHERE token_key_id IS NOT NULL) THEN
        RAISE EXCEPTION 'schwab_auth holds sealed tokens, which SQL cannot decrypt'
            USING HINT = 'run python -m persistence.tokens decrypt first (it needs the keys)';
    END IF;
END
$$;

ALTER TABLE schwab_auth
    DROP CONSTRAINT schwab_auth_sealed_or_plain_check,
    DROP CONSTRAINT schwab_auth_sealed_length_check,
    DROP COLUMN token_key_id,
    DROP COLUMN refresh_token_sealed,
    DROP COLUMN access_token_sealed,
    ALTER COLUMN refresh_token SET NOT NULL,
    ALTER COLUMN access_token SET NOT NULL;

COMMENT ON COLUMN schwab_auth.access_token IS NULL;
