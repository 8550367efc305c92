-- IsoKron substrate: this database's own roles (issue 9, item 6; docs/security.md).
-- PostgreSQL roles are cluster-wide. Releases before this one used the same three role names in
-- every database on a server, so database 1's gateway role could write into database 2. The
-- migration runner now substitutes per-database names for isokron_owner / isokron_reader /
-- isokron_gateway in every migration (isokron.substrate.dsn.database_roles); this migration
-- (numbered before the migrations that use them) creates them if missing and moves to them
-- everything the shared roles own or were granted in
-- THIS database: ownership of schemas, tables, sequences, views, functions and types, every
-- privilege (database, schemas, tables, functions), and row-level security policies. Objects
-- of other databases and the shared roles themselves are left alone (no REASSIGN OWNED, which
-- would also hand over shared objects such as databases owned by those roles). The shared names
-- are written as concatenations below so that the runner leaves them as they are.
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
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'GRANT isokron_owner TO ' || quote_ident(current_user);
    END IF;
END
$roles$;

CREATE OR REPLACE FUNCTION pg_temp.isokron_adopt(p_old TEXT, p_new TEXT) RETURNS VOID
LANGUAGE plpgsql AS $fn$
DECLARE
    v_old OID := (SELECT oid FROM pg_roles WHERE rolname = p_old);
    r RECORD;
BEGIN
    IF v_old IS NULL OR p_old = p_new THEN
        RETURN;
    END IF;
    -- Ownership (tables first: their owned sequences and row types follow them).
    FOR r IN SELECT n.nspname FROM pg_namespace n WHERE n.nspowner = v_old LOOP
        EXECUTE 'ALTER SCHEMA ' || quote_ident(r.nspname) || ' OWNER TO ' || quote_ident(p_new);
    END LOOP;
    FOR r IN SELECT c.oid::regclass AS rel, c.relkind FROM pg_class c
             WHERE c.relowner = v_old AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    LOOP
        EXECUTE CASE r.relkind WHEN 'v' THEN 'ALTER VIEW ' WHEN 'm' THEN 'ALTER MATERIALIZED VIEW '
                               WHEN 'f' THEN 'ALTER FOREIGN TABLE ' ELSE 'ALTER TABLE ' END
            || r.rel::text || ' OWNER TO ' || quote_ident(p_new);
    END LOOP;
    FOR r IN SELECT c.oid::regclass AS rel FROM pg_class c
             WHERE c.relowner = v_old AND c.relkind = 'S'
    LOOP
        EXECUTE 'ALTER SEQUENCE ' || r.rel::text || ' OWNER TO ' || quote_ident(p_new);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS fn FROM pg_proc p WHERE p.proowner = v_old LOOP
        EXECUTE 'ALTER ROUTINE ' || r.fn::text || ' OWNER TO ' || quote_ident(p_new);
    END LOOP;
    FOR r IN SELECT t.oid::regtype AS typ FROM pg_type t
             WHERE t.typowner = v_old AND t.typtype IN ('e', 'd', 'r', 'm')
    LOOP
        EXECUTE 'ALTER TYPE ' || r.typ::text || ' OWNER TO ' || quote_ident(p_new);
    END LOOP;
    -- Privileges granted to the shared role: the same ones to this database's role.
    FOR r IN SELECT DISTINCT c.oid::regclass AS rel, c.relkind, a.privilege_type
             FROM pg_class c, aclexplode(c.relacl) a
             WHERE a.grantee = v_old AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    LOOP
        EXECUTE 'GRANT ' || r.privilege_type || ' ON '
            || CASE WHEN r.relkind = 'S' THEN 'SEQUENCE ' ELSE 'TABLE ' END || r.rel::text
            || ' TO ' || quote_ident(p_new);
        EXECUTE 'REVOKE ALL ON ' || CASE WHEN r.relkind = 'S' THEN 'SEQUENCE ' ELSE 'TABLE ' END
            || r.rel::text || ' FROM ' || quote_ident(p_old);
    END LOOP;
    FOR r IN SELECT DISTINCT p.oid::regprocedure AS fn FROM pg_proc p, aclexplode(p.proacl) a
             WHERE a.grantee = v_old
    LOOP
        EXECUTE 'GRANT EXECUTE ON ROUTINE ' || r.fn::text || ' TO ' || quote_ident(p_new);
        EXECUTE 'REVOKE ALL ON ROUTINE ' || r.fn::text || ' FROM ' || quote_ident(p_old);
    END LOOP;
    FOR r IN SELECT DISTINCT n.nspname, a.privilege_type FROM pg_namespace n, aclexplode(n.nspacl) a
             WHERE a.grantee = v_old
    LOOP
        EXECUTE 'GRANT ' || r.privilege_type || ' ON SCHEMA ' || quote_ident(r.nspname)
            || ' TO ' || quote_ident(p_new);
        EXECUTE 'REVOKE ALL ON SCHEMA ' || quote_ident(r.nspname) || ' FROM ' || quote_ident(p_old);
    END LOOP;
    FOR r IN SELECT DISTINCT a.privilege_type FROM pg_database d, aclexplode(d.datacl) a
             WHERE d.datname = current_database() AND a.grantee = v_old
    LOOP
        EXECUTE 'GRANT ' || r.privilege_type || ' ON DATABASE ' || quote_ident(current_database())
            || ' TO ' || quote_ident(p_new);
    END LOOP;
    EXECUTE 'REVOKE ALL ON DATABASE ' || quote_ident(current_database()) || ' FROM '
        || quote_ident(p_old);
    -- Row-level security policies that name the shared role.
    FOR r IN SELECT pol.polname, pol.polrelid::regclass AS rel,
                    ARRAY(SELECT CASE WHEN x = v_old THEN quote_ident(p_new)
                                      WHEN x = 0 THEN 'PUBLIC'
                                      ELSE quote_ident(pg_get_userbyid(x)) END
                          FROM unnest(pol.polroles) x) AS roles
             FROM pg_policy pol WHERE v_old = ANY (pol.polroles)
    LOOP
        EXECUTE 'ALTER POLICY ' || quote_ident(r.polname) || ' ON ' || r.rel::text
            || ' TO ' || array_to_string(r.roles, ', ');
    END LOOP;
END
$fn$;

DO $adopt$
BEGIN
    PERFORM pg_temp.isokron_adopt('isokron' || '_owner', 'isokron_owner');
    PERFORM pg_temp.isokron_adopt('isokron' || '_reader', 'isokron_reader');
    PERFORM pg_temp.isokron_adopt('isokron' || '_gateway', 'isokron_gateway');
END
$adopt$;
DROP FUNCTION pg_temp.isokron_adopt(TEXT, TEXT);

-- This database's roles may connect to it; nobody else is granted anything here. (PUBLIC
-- keeps PostgreSQL's default CONNECT and TEMP on databases: docs/security.md.)
DO $connect$
BEGIN
    EXECUTE 'GRANT CREATE, CONNECT ON DATABASE ' || quote_ident(current_database()) || ' TO isokron_owner';
    EXECUTE 'GRANT CONNECT ON DATABASE ' || quote_ident(current_database())
        || ' TO isokron_reader, isokron_gateway';
END
$connect$;
