-- IsoKron substrate: roles and schemas.
-- Roles are cluster-wide, so they are created only when missing; a second database on the
-- same server (tests, staging) shares them. Migrations never contain a percent sign because
-- the migration driver passes an (empty) parameter tuple with every statement.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'isokron_owner') THEN
        BEGIN
            CREATE ROLE isokron_owner NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'isokron_reader') THEN
        BEGIN
            CREATE ROLE isokron_reader LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'isokron_gateway') THEN
        BEGIN
            CREATE ROLE isokron_gateway LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
END
$roles$;

-- The migrating user must be able to SET ROLE isokron_owner so that every object below is
-- owned by a non-superuser: SECURITY DEFINER functions then run under FORCEd row-level security.
DO $membership$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'GRANT isokron_owner TO ' || quote_ident(current_user);
    END IF;
    EXECUTE 'GRANT CREATE, CONNECT ON DATABASE ' || quote_ident(current_database()) || ' TO isokron_owner';
    EXECUTE 'GRANT CONNECT ON DATABASE ' || quote_ident(current_database()) || ' TO isokron_reader, isokron_gateway';
    GRANT USAGE, CREATE ON SCHEMA public TO isokron_owner;
    GRANT USAGE ON SCHEMA public TO isokron_reader, isokron_gateway;
END
$membership$;

SET LOCAL ROLE isokron_owner;

CREATE SCHEMA IF NOT EXISTS hivex_foundation;
CREATE SCHEMA IF NOT EXISTS kronicle;
CREATE SCHEMA IF NOT EXISTS isokron;
CREATE SCHEMA IF NOT EXISTS isokron_api;

RESET ROLE;
