-- IsoKron substrate: authenticate_token also says how long an active token remains valid, so a
-- gateway that caches authentications never serves a token past its expiry.
SET LOCAL ROLE isokron_owner;

CREATE OR REPLACE FUNCTION isokron_api.authenticate_token(p_token_sha256 BYTEA) RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v JSONB;
BEGIN
    -- The workspace is not known before the token is; look across workspaces, then scope back.
    PERFORM set_config('isokron.all_workspaces', 'on', true);
    SELECT jsonb_build_object(
        'workspace_id', t.workspace_id, 'actor_id', t.actor_id, 'actor_kind', a.actor_kind,
        'token_id', t.token_id, 'token_prefix', t.token_prefix,
        'status', CASE WHEN t.revoked_at IS NOT NULL THEN 'revoked'
                       WHEN t.expires_at IS NOT NULL AND t.expires_at <= now() THEN 'expired'
                       WHEN a.status <> 'active' THEN 'actor_disabled'
                       ELSE 'active' END,
        'expires_in_seconds', CASE WHEN t.expires_at IS NULL THEN NULL
                                   ELSE greatest(0, extract(epoch FROM (t.expires_at - now())))::float8 END)
        INTO v
        FROM isokron.service_tokens t
        JOIN public.actor_registry a ON a.workspace_id = t.workspace_id AND a.actor_id = t.actor_id
        WHERE t.token_hash = p_token_sha256;
    PERFORM set_config('isokron.all_workspaces', 'off', true);
    RETURN v;
END
$fn$;

RESET ROLE;
