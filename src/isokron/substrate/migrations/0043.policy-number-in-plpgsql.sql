-- IsoKron substrate: isokron.policy_number (0020) becomes PL/pgSQL, same result.
-- Citus cannot plan a parameterized query on a distributed table inside an SQL-language
-- function ("could not create distributed plan"); PL/pgSQL plans the same query fine. The
-- catalog test (tests/substrate/test_substrate_citus_catalog.py) refuses any new such function.
SET LOCAL ROLE isokron_owner;

CREATE OR REPLACE FUNCTION isokron.policy_number(p_workspace_id TEXT, p_key TEXT) RETURNS NUMERIC
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v NUMERIC;
BEGIN
    SELECT CASE WHEN jsonb_typeof(policy_value) = 'number' AND (policy_value #>> '{}')::numeric >= 0
                THEN (policy_value #>> '{}')::numeric END
        INTO v
        FROM public.kora_policy_registry
        WHERE workspace_id = p_workspace_id AND policy_key = p_key;
    RETURN v;
END
$fn$;

RESET ROLE;
