-- IsoKron substrate: a state record computed in the query that reads its row (issue 12).
-- The keyed-records functions of 0061 built each record with hivex_foundation.row_record, an SQL
-- function whose body has sub-selects (string_agg over unnest), so PostgreSQL never inlines it:
-- every statement that called it parsed and planned that body again (fmgr_sql prepares it once
-- per executor start), about 190 µs of a scratchpad write's backend time, more than the chain
-- append itself. Here the generated functions compute the same record inline: the column bytes
-- (row_field, inlined) once per row in a LATERAL sub-select, then
--   d = hex(SHA-256("isokron-row-v1" 0x00 || field(table) || column bytes in order)),
--   c = the first 8 hex digits of SHA-256 of each column's bytes, in order,
-- which is row_record's definition with its aggregates unrolled over the table's columns (known
-- when the function is generated). The bytes are identical (tests/substrate/
-- test_substrate_state_proof.py compares every state table's keyed and dynamic records).
-- row_record itself is unchanged: record_sql (every row of a table: verify, attestation) uses it.
SET LOCAL ROLE isokron_owner;

-- The record of row r of p_table from its column bytes f.f1 .. f.fN, as row_record computes it.
CREATE OR REPLACE FUNCTION isokron.state_record_expression(p_table TEXT, p_columns INTEGER)
RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    v_prefix BYTEA := '\x69736f6b726f6e2d726f772d763100'::bytea
        || int4send(octet_length(convert_to(p_table, 'UTF8'))) || convert_to(p_table, 'UTF8');
    v_all TEXT := '';
    v_checks TEXT := '';
BEGIN
    FOR i IN 1 .. p_columns LOOP
        v_all := v_all || ' || f.f' || i;
        v_checks := v_checks || CASE WHEN i > 1 THEN ' || ' ELSE '' END
            || 'substr(encode(sha256(f.f' || i || '), ''hex''), 1, 8)';
    END LOOP;
    RETURN format('jsonb_build_object(''d'', encode(sha256(%L::bytea%s), ''hex''), ''c'', %s)',
                  v_prefix, v_all, v_checks);
END
$fn$;
REVOKE ALL ON FUNCTION isokron.state_record_expression(TEXT, INTEGER) FROM PUBLIC;

-- 0061's body with the record computed inline: FROM <table> r, LATERAL (SELECT row_field(..) AS
-- f1, ..) f. OFFSET 0 keeps the sub-select a sub-select: pulled up, each f.fi would be
-- substituted by its expression and computed twice (once for d, once for c).
CREATE OR REPLACE FUNCTION isokron.state_keyed_body(p_table TEXT) RETURNS TEXT
LANGUAGE plpgsql AS $fn$
DECLARE
    t RECORD;
    v_fields TEXT := '';
    v_from TEXT;
    v_key TEXT;
    v_record TEXT;
    v_type TEXT;
    v_n INTEGER := 0;
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
        v_n := v_n + 1;
        v_fields := v_fields || CASE WHEN v_n > 1 THEN ', ' ELSE '' END
            || 'hivex_foundation.row_field(' || quote_literal(c) || ', '
            || isokron.canonical_text_sql('r.' || quote_ident(c), v_type) || ') AS f' || v_n;
    END LOOP;
    v_record := isokron.state_record_expression(t.table_name, v_n);
    v_from := t.table_name || ' r, LATERAL (SELECT ' || v_fields || ' OFFSET 0) f';
    IF array_length(t.key_columns, 1) = 1 THEN
        SELECT format_type(a.atttypid, a.atttypmod) INTO v_type FROM pg_attribute a
            WHERE a.attrelid = t.table_name::regclass AND a.attname = t.key_columns[1];
        v_key := 'r.' || quote_ident(t.key_columns[1]);
        RETURN format(E'\nDECLARE\n    v JSONB := \'{}\';\n    v_one JSONB;\n    v_key %s;\n'
            || E'BEGIN\n    FOREACH v_key IN ARRAY CAST(p_keys AS %s[]) LOOP\n'
            || E'        SELECT jsonb_build_object(%s::text, %s) INTO v_one FROM %s\n'
            || E'            WHERE r.%I = p_workspace_id AND %s = v_key;\n'
            || E'        v := v || coalesce(v_one, \'{}\');\n    END LOOP;\n    RETURN v;\nEND\n',
            v_type, v_type, v_key, v_record, v_from, t.ws_column, v_key);
    END IF;
    v_key := array_to_string(ARRAY(SELECT 'r.' || quote_ident(k) || '::text'
                                   FROM unnest(t.key_columns) k), ' || ''/'' || ');
    RETURN format(E'\nBEGIN\n    RETURN (SELECT coalesce(jsonb_object_agg(%s, %s), \'{}\'::jsonb)'
        || E' FROM %s WHERE r.%I = p_workspace_id AND (%s) = ANY(p_keys));\nEND\n',
        v_key, v_record, v_from, t.ws_column, v_key);
END
$fn$;
REVOKE ALL ON FUNCTION isokron.state_keyed_body(TEXT) FROM PUBLIC;

DO $record_functions$ BEGIN PERFORM isokron.build_state_record_functions(); END $record_functions$;

-- Declared IMMUTABLE around STABLE built-ins (jsonb_build_object, convert_to), these SQL
-- functions were never inlined (as quota_slot and row_field before 0060): each call ran the
-- SQL-function executor, about 40 µs per write for event_result. STABLE is what their bodies
-- are; their values are unchanged.
ALTER FUNCTION isokron.event_result(JSONB) STABLE;
ALTER FUNCTION isokron.text_sha256_hex(TEXT) STABLE;

RESET ROLE;
