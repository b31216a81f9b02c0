-- Least privilege for paystream's database (docs/security.md, issue 18).
--
-- Two login roles:
--
--   paystream_migrator  owns the schema and everything the migrations create
--                       (store/migrations, version table
--                       paystream_schema_migrations): the role of
--                       PAYSTREAM_MIGRATE_DATABASE_URL, used only by
--                       `worker migrate` and `worker --migrate`.
--   paystream_runtime   the role of PAYSTREAM_DATABASE_URL: reads and writes
--                       rows and executes the claim functions, nothing else.
--                       No CREATE on the schema, owns nothing, so no DDL
--                       (CREATE, ALTER, DROP), no TRUNCATE, no TEMP tables.
--
-- Run it as a superuser (or a role with CREATEROLE that may grant on the
-- database), connected to paystream's database, before the first migration
-- and again after each migration run (it is idempotent):
--
--   psql -v ON_ERROR_STOP=1 -d paystream -f deploy/postgres/roles.sql
--   psql -d paystream -c "ALTER ROLE paystream_migrator PASSWORD '...'"   -- or \password
--   psql -d paystream -c "ALTER ROLE paystream_runtime PASSWORD '...'"
--
-- The file sets no password: put them in the roles yourself, and use a
-- pg_hba.conf with hostssl and scram-sha-256 lines (docs/security.md).
--
-- Objects that the migrations create later are granted to the runtime role
-- by the default privileges below, so a new migration needs no new grant.
-- The second run (after a migration) only takes the migration version table
-- away from the runtime role again, which the worker never reads at run time.
-- A database migrated before as another role (postgres in docker-compose.yml)
-- is taken over: its tables, sequences and functions in public are given to
-- paystream_migrator.
--
-- The worker does not need the version table at start: store.Migrate is the
-- only reader, and a worker without --migrate never calls it.

-- Roles, cluster-wide. A concurrent run may create a role between the check
-- and the CREATE: that is not an error.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'paystream_migrator') THEN
        BEGIN
            CREATE ROLE paystream_migrator LOGIN;
        EXCEPTION WHEN duplicate_object THEN NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'paystream_runtime') THEN
        BEGIN
            CREATE ROLE paystream_runtime LOGIN;
        EXCEPTION WHEN duplicate_object THEN NULL;
        END;
    END IF;
END
$$;

ALTER ROLE paystream_migrator NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE paystream_runtime NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT;

-- The database: both may connect; nobody else by default, and nobody
-- creates schemas or temporary tables in it.
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO paystream_migrator, paystream_runtime', current_database());
    EXECUTE format('REVOKE CREATE, TEMPORARY ON DATABASE %I FROM paystream_runtime', current_database());
END
$$;

-- The schema: owned by the migrator; the runtime role may look up names in
-- it but create nothing.
ALTER SCHEMA public OWNER TO paystream_migrator;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO paystream_runtime;

-- Take over what another role migrated before (idempotent: nothing to do
-- once the migrator owns everything).
DO $$
DECLARE
    obj record;
BEGIN
    FOR obj IN
        SELECT c.relname AS name, c.relkind AS kind
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND pg_get_userbyid(c.relowner) <> 'paystream_migrator'
    LOOP
        IF obj.kind = 'S' THEN
            EXECUTE format('ALTER SEQUENCE public.%I OWNER TO paystream_migrator', obj.name);
        ELSIF obj.kind = 'v' THEN
            EXECUTE format('ALTER VIEW public.%I OWNER TO paystream_migrator', obj.name);
        ELSIF obj.kind = 'm' THEN
            EXECUTE format('ALTER MATERIALIZED VIEW public.%I OWNER TO paystream_migrator', obj.name);
        ELSE
            EXECUTE format('ALTER TABLE public.%I OWNER TO paystream_migrator', obj.name);
        END IF;
    END LOOP;
    FOR obj IN
        SELECT p.oid::regprocedure AS sig
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> 'paystream_migrator'
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO paystream_migrator', obj.sig);
    END LOOP;
END
$$;

-- What exists now...
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO paystream_runtime;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO paystream_runtime;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO paystream_runtime;

-- ...and what the migrator creates later. Functions are executable by
-- PUBLIC unless revoked: only the runtime role (and the owner) may run them.
ALTER DEFAULT PRIVILEGES FOR ROLE paystream_migrator IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO paystream_runtime;
ALTER DEFAULT PRIVILEGES FOR ROLE paystream_migrator IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO paystream_runtime;
ALTER DEFAULT PRIVILEGES FOR ROLE paystream_migrator
    REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE paystream_migrator IN SCHEMA public
    GRANT EXECUTE ON FUNCTIONS TO paystream_runtime;

-- The migration version table is the migrator's alone.
DO $$
BEGIN
    IF to_regclass('public.paystream_schema_migrations') IS NOT NULL THEN
        REVOKE ALL ON public.paystream_schema_migrations FROM paystream_runtime;
    END IF;
    IF to_regclass('public.paystream_schema_migrations_id_seq') IS NOT NULL THEN
        REVOKE ALL ON SEQUENCE public.paystream_schema_migrations_id_seq FROM paystream_runtime;
    END IF;
END
$$;
