-- IsoKron substrate: state records of the rows just written, planned once per session (issue 12).
-- isokron.state_of (0011) ran its table's record_sql through EXECUTE: every state-writing
-- operation (isokron.with_state, always with the keys it just wrote) parsed and planned that
-- query on every call, measured at ~40% of a gateway write's backend CPU. Here:
--  * isokron.build_state_record_functions() generates, per row of isokron.state_tables, a static
--    PL/pgSQL function isokron."state_keyed_<schema>__<table>"(workspace_id, keys) whose body is
--    record_sql's query with the same record expression (the same canonical_text_sql /
--    row_field / row_record column expressions, so the record bytes are identical) for the keys
--    asked only (no "$2 IS NULL OR"), a one-column key looked up key by key (below);
--    PL/pgSQL prepares it once per session and caches one generic plan
--    (plan_cache_mode = force_generic_plan: most of record_sql's cost was planning its
--    inlined row_field calls; enable_seqscan = off: a plan made while the table is nearly
--    empty must still be the index lookup once it is large). It also generates
--    isokron.state_of_keyed(table, workspace_id, keys), a static
--    CASE over the table names (unknown table: IKV01 as before).
--  * isokron.state_of keeps its signature and results: keyed calls go through state_of_keyed,
--    p_keys NULL (every row: attestation, verify) still runs record_sql dynamically.
-- A later migration that adds a state table or a column updates isokron.state_tables, then calls
-- isokron.build_state_record_sql() AND isokron.build_state_record_functions().
-- The generated functions keep state_of's default (volatile) visibility: each of their queries
-- sees the rows the calling operation has just written, exactly as the EXECUTE did.
-- None is executable by PUBLIC (so neither by the reader nor by the gateway role).
SET LOCAL ROLE isokron_owner;

-- The PL/pgSQL body of one state table's keyed-records function: record_sql's query with the
-- same column expressions, for the keys asked. A one-column key is looked up one key at a time
-- by equality on (workspace, key), converted to the key's type once: the plan, cached for the
-- session and generic, is then the (workspace, key) unique index whatever the table's size or
-- statistics when it was made (an "= ANY(array)" filter costed as ten index descents, or a
-- cast in the WHERE clause, which is not leakproof under row-level security, made a plan built
-- on a small table scan the workspace's rows instead, and kept it as the table grew).
-- A composite key (capability matrix) is compared as record_sql compares it.
CREATE OR REPLACE FUNCTION isokron.state_keyed_body(p_table TEXT) RETURNS TEXT
LANGUAGE plpgsql AS $fn$
DECLARE
    t RECORD;
    v_cols TEXT := '';
    v_key TEXT;
    v_record TEXT;
    v_type TEXT;
    c TEXT;
BEGIN
    SELECT * INTO STRICT t FROM isokron.state_tables WHERE table_name = p_table;
    FOREACH c IN ARRAY t.columns LOOP
        SELECT format_type(a.atttypid, a.atttypmod) INTO v_type FROM pg_attribute a
            WHERE a.attrelid = t.table_name::regclass AND a.attname = c AND NOT a.attisdropped;
        IF isokron.canonical_text_sql('r.' || quote_ident(c), v_type) IS NULL THEN
            RAISE EXCEPTION 'state table % column % has no canonical form (type %)',
                t.table_name, c, v_type;
        END IF;
        v_cols := v_cols || CASE WHEN v_cols = '' THEN '' ELSE ', ' END
            || 'hivex_foundation.row_field(' || quote_literal(c) || ', '
            || isokron.canonical_text_sql('r.' || quote_ident(c), v_type) || ')';
    END LOOP;
    v_record := 'hivex_foundation.row_record(' || quote_literal(t.table_name) || ', ARRAY['
        || v_cols || '])';
    IF array_length(t.key_columns, 1) = 1 THEN
        SELECT format_type(a.atttypid, a.atttypmod) INTO v_type FROM pg_attribute a
            WHERE a.attrelid = t.table_name::regclass AND a.attname = t.key_columns[1];
        v_key := 'r.' || quote_ident(t.key_columns[1]);
        RETURN format(E'\nDECLARE\n    v JSONB := \'{}\';\n    v_one JSONB;\n    v_key %s;\n'
            || E'BEGIN\n    FOREACH v_key IN ARRAY CAST(p_keys AS %s[]) LOOP\n'
            || E'        SELECT jsonb_build_object(%s::text, %s) INTO v_one FROM %s r\n'
            || E'            WHERE r.%I = p_workspace_id AND %s = v_key;\n'
            || E'        v := v || coalesce(v_one, \'{}\');\n    END LOOP;\n    RETURN v;\nEND\n',
            v_type, v_type, v_key, v_record, t.table_name, t.ws_column, v_key);
    END IF;
    v_key := array_to_string(ARRAY(SELECT 'r.' || quote_ident(k) || '::text'
                                   FROM unnest(t.key_columns) k), ' || ''/'' || ');
    RETURN format(E'\nBEGIN\n    RETURN (SELECT coalesce(jsonb_object_agg(%s, %s), \'{}\'::jsonb)'
        || E' FROM %s r WHERE r.%I = p_workspace_id AND (%s) = ANY(p_keys));\nEND\n',
        v_key, v_record, t.table_name, t.ws_column, v_key);
END
$fn$;
REVOKE ALL ON FUNCTION isokron.state_keyed_body(TEXT) FROM PUBLIC;

-- The name of a state table's keyed-records function: state_keyed_<schema>__<table>.
CREATE OR REPLACE FUNCTION isokron.state_keyed_name(p_table TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    v_name TEXT := 'state_keyed_' || replace(p_table, '.', '__');
BEGIN
    IF octet_length(v_name) > 63 THEN
        RAISE EXCEPTION 'state table % gives a function name longer than 63 bytes', p_table;
    END IF;
    RETURN v_name;
END
$fn$;
REVOKE ALL ON FUNCTION isokron.state_keyed_name(TEXT) FROM PUBLIC;

-- (Re)generate every state table's keyed-records function and the dispatcher state_of_keyed.
-- A later migration that adds a state table or a column calls this after build_state_record_sql.
CREATE OR REPLACE FUNCTION isokron.build_state_record_functions() RETURNS VOID
LANGUAGE plpgsql AS $fn$
DECLARE
    t RECORD;
    v_fn TEXT;
    v_cases TEXT := '';
BEGIN
    FOR t IN SELECT table_name FROM isokron.state_tables ORDER BY table_name LOOP
        v_fn := 'isokron.' || quote_ident(isokron.state_keyed_name(t.table_name));
        EXECUTE format(
            'CREATE OR REPLACE FUNCTION %s(p_workspace_id TEXT, p_keys TEXT[]) RETURNS JSONB '
            || 'LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off '
            || 'AS $body$%s$body$',
            v_fn, isokron.state_keyed_body(t.table_name));
        EXECUTE format('REVOKE ALL ON FUNCTION %s(TEXT, TEXT[]) FROM PUBLIC', v_fn);
        v_cases := v_cases || format(E'        WHEN %L THEN RETURN %s(p_workspace_id, p_keys);\n',
                                     t.table_name, v_fn);
    END LOOP;
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION isokron.state_of_keyed(p_table TEXT, p_workspace_id TEXT, '
        || 'p_keys TEXT[]) RETURNS JSONB LANGUAGE plpgsql AS $body$' || E'\nBEGIN\n    CASE p_table\n'
        || '%s        ELSE PERFORM isokron.fail(''IKV01'', ''not a state table: '' || p_table);'
        || E'\n    END CASE;\n    RETURN NULL;\nEND\n$body$', v_cases);
    REVOKE ALL ON FUNCTION isokron.state_of_keyed(TEXT, TEXT, TEXT[]) FROM PUBLIC;
END
$fn$;
REVOKE ALL ON FUNCTION isokron.build_state_record_functions() FROM PUBLIC;
DO $record_functions$ BEGIN PERFORM isokron.build_state_record_functions(); END $record_functions$;

-- Records of one table's rows in a workspace: {key: record}; a key asked for whose row does not
-- exist maps to null (the row was removed). p_keys NULL: every row of the workspace.
CREATE OR REPLACE FUNCTION isokron.state_of(p_table TEXT, p_workspace_id TEXT, p_keys TEXT[])
RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_sql TEXT;
    v JSONB;
BEGIN
    IF p_keys IS NOT NULL THEN
        v := isokron.state_of_keyed(p_table, p_workspace_id, p_keys);
        RETURN coalesce((SELECT jsonb_object_agg(k, v -> k) FROM unnest(p_keys) k), '{}'::jsonb);
    END IF;
    SELECT record_sql INTO v_sql FROM isokron.state_tables WHERE table_name = p_table;
    IF NOT FOUND THEN
        PERFORM isokron.fail('IKV01', 'not a state table: ' || p_table);
    END IF;
    EXECUTE v_sql INTO v USING p_workspace_id, p_keys;
    RETURN v;
END
$fn$;
REVOKE ALL ON FUNCTION isokron.state_of(TEXT, TEXT, TEXT[]) FROM PUBLIC;

RESET ROLE;
