-- Least-privilege roles for persistence. Run as a superuser (or the database owner), connected
-- to the bot's database, after its first migration; it is idempotent, so run it again after a
-- migration that adds a table:
--
--   psql -v ON_ERROR_STOP=1 -d "postgresql://postgres@HOST:5432/persistence" -f docs/roles.sql
--
-- The database in that URL must be the bot's (not "postgres"): the file revokes CONNECT on the
-- database it runs in from everyone but these two roles.
--
-- persistence_owner owns the schema and runs migrations; persistence_app is what the bot logs
-- in as: it reads and writes rows and can change nothing else. Set their passwords yourself:
--   \password persistence_owner      \password persistence_app

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'persistence_owner') THEN
        CREATE ROLE persistence_owner LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'persistence_app') THEN
        CREATE ROLE persistence_app LOGIN;
    END IF;
    -- nobody else may even connect; TEMPORARY lets insert_many use its staging table
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO persistence_app', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO persistence_owner', current_database());
END
$roles$;

-- The owner creates and alters; the app may only use what is there.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO persistence_owner;
GRANT USAGE ON SCHEMA public TO persistence_app;

-- Tables that exist now become the owner's (a migration applied by another role made them).
DO $tables$
DECLARE
    item record;
BEGIN
    FOR item IN SELECT c.oid::regclass AS name FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S')
          AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO persistence_owner', item.name);
    END LOOP;
END
$tables$;

-- Rows: read and write every table, use the identity sequences; now and for future tables.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO persistence_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO persistence_app;
ALTER DEFAULT PRIVILEGES FOR ROLE persistence_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO persistence_app;
ALTER DEFAULT PRIVILEGES FOR ROLE persistence_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO persistence_app;

-- The migration history is the owner's to write; the app only reads it (health check).
DO $history$
BEGIN
    IF to_regclass('public.schema_migrations') IS NOT NULL THEN
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON public.schema_migrations FROM persistence_app;
    END IF;
END
$history$;

-- What the library sets per connection, as role defaults too (needed behind PgBouncer, which
-- drops startup options).
ALTER ROLE persistence_app SET timezone = 'UTC';
ALTER ROLE persistence_app SET statement_timeout = '30s';
ALTER ROLE persistence_app SET default_transaction_isolation = 'read committed';
