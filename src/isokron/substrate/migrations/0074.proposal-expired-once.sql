-- IsoKron substrate: a proposal is expired once, whichever maintenance pass gets to it.
-- isokron.maintain_workspace (0020) picked the overdue pending proposals with a query it could
-- not lock (FOR UPDATE is refused with UNION ALL), then updated each by its id and chained a
-- governance.proposal.expired event. Two passes over one workspace at once (the gateway's
-- periodic pass and `isokron maintain`) both picked the same proposal: the second waited for
-- the first's row lock, then expired it again and chained a second event. Each update now
-- requires the proposal to be pending still, and a proposal another pass (or an operator)
-- decided meanwhile is skipped. Escalations and scratchpad entries were not affected: their
-- queries lock the rows they pick (FOR UPDATE), so a second pass re-checks them and skips
-- what the first closed. The rest of the function is 0020's, unchanged.
SET LOCAL ROLE isokron_owner;

CREATE OR REPLACE FUNCTION isokron.maintain_workspace(p_workspace_id TEXT, p_batch INTEGER)
RETURNS JSONB
LANGUAGE plpgsql AS $fn$
DECLARE
    v_tenant UUID := isokron.enter_workspace(p_workspace_id);
    v_operator UUID;
    v_now TIMESTAMPTZ := now();
    v_sla NUMERIC := isokron.policy_number(p_workspace_id, 'policy.kora_escalation_sla_hours');
    v_expiry NUMERIC := isokron.policy_number(p_workspace_id, 'policy.kora_proposal_expiry_days');
    v_keep NUMERIC := isokron.policy_number(p_workspace_id, 'policy.kora_scratchpad_retention_days');
    v_ttl NUMERIC := isokron.policy_number(p_workspace_id, 'policy.kora_idempotency_ttl_hours');
    r RECORD;
    v_eid UUID;
    v_at TIMESTAMPTZ;
    v_escalations INTEGER := 0;
    v_proposals INTEGER := 0;
    v_entries INTEGER := 0;
    v_keys INTEGER := 0;
BEGIN
    SELECT actor_id INTO v_operator FROM public.actor_registry
        WHERE workspace_id = p_workspace_id AND actor_kind = 'operator' AND status = 'active'
        ORDER BY created_at, actor_id LIMIT 1;
    IF v_operator IS NULL THEN
        RETURN jsonb_build_object('workspace_id', p_workspace_id,
                                  'skipped', 'the workspace has no active operator');
    END IF;
    IF v_sla IS NOT NULL THEN
        FOR r IN SELECT escalation_id, actor_id, tool FROM kronicle.escalations
                 WHERE workspace_id = p_workspace_id AND status = 'open'
                   AND created_at <= v_now - make_interval(secs => (v_sla * 3600)::float8)
                 ORDER BY created_at LIMIT p_batch FOR UPDATE LOOP
            v_eid := gen_random_uuid();
            v_at := clock_timestamp();
            UPDATE kronicle.escalations
                SET status = 'expired', decided_by = v_operator, decided_at = v_at,
                    decision_note = 'expired: open longer than policy.kora_escalation_sla_hours ('
                        || v_sla || ' h)', decision_event_id = v_eid
                WHERE workspace_id = p_workspace_id AND escalation_id = r.escalation_id;
            PERFORM hivex_foundation.append_chain_event(v_tenant, v_operator,
                'governance.escalation.expired',
                isokron.with_state(
                    jsonb_build_object('escalation_id', r.escalation_id, 'actor_id', r.actor_id,
                                       'tool', r.tool, 'status', 'expired', 'sla_hours', v_sla),
                    'kronicle.escalations', p_workspace_id, ARRAY[r.escalation_id::text]),
                v_eid);
            v_escalations := v_escalations + 1;
        END LOOP;
    END IF;
    IF v_expiry IS NOT NULL THEN
        FOR r IN SELECT 'convention' AS kind, proposal_id, created_at FROM kronicle.convention_proposals
                     WHERE workspace_id = p_workspace_id AND status = 'pending'
                       AND created_at <= v_now - make_interval(secs => (v_expiry * 86400)::float8)
                 UNION ALL
                 SELECT 'policy_change', proposal_id, created_at FROM kronicle.policy_change_proposals
                     WHERE workspace_id = p_workspace_id AND status = 'pending'
                       AND created_at <= v_now - make_interval(secs => (v_expiry * 86400)::float8)
                 ORDER BY created_at LIMIT p_batch LOOP
            v_eid := gen_random_uuid();
            v_at := clock_timestamp();
            IF r.kind = 'convention' THEN
                UPDATE kronicle.convention_proposals
                    SET status = 'expired', decided_by = v_operator,
                        decided_at = v_at, decision_event_id = v_eid,
                        decision_note = 'expired: pending longer than policy.kora_proposal_expiry_days'
                    WHERE workspace_id = p_workspace_id AND proposal_id = r.proposal_id
                      AND status = 'pending';
            ELSE
                UPDATE kronicle.policy_change_proposals
                    SET status = 'expired', decided_by = v_operator,
                        decided_at = v_at, decision_event_id = v_eid,
                        decision_note = 'expired: pending longer than policy.kora_proposal_expiry_days'
                    WHERE workspace_id = p_workspace_id AND proposal_id = r.proposal_id
                      AND status = 'pending';
            END IF;
            -- Decided meanwhile (another maintenance pass expired it first, or an operator
            -- decided it): nothing to expire, nothing to chain.
            CONTINUE WHEN NOT FOUND;
            PERFORM hivex_foundation.append_chain_event(v_tenant, v_operator,
                'governance.proposal.expired',
                isokron.with_state(
                    jsonb_build_object('proposal_kind', r.kind, 'proposal_id', r.proposal_id,
                                       'status', 'expired', 'expiry_days', v_expiry),
                    CASE WHEN r.kind = 'convention' THEN 'kronicle.convention_proposals'
                         ELSE 'kronicle.policy_change_proposals' END,
                    p_workspace_id, ARRAY[r.proposal_id::text]),
                v_eid);
            v_proposals := v_proposals + 1;
        END LOOP;
    END IF;
    IF v_keep IS NOT NULL THEN
        FOR r IN SELECT entry_id, actor_id, kind, content_hash FROM kronicle.agent_scratchpad_entries
                 WHERE workspace_id = p_workspace_id AND status = 'active'
                   AND created_at <= v_now - make_interval(secs => (v_keep * 86400)::float8)
                 ORDER BY created_at LIMIT p_batch FOR UPDATE LOOP
            UPDATE kronicle.agent_scratchpad_entries SET status = 'archived'
                WHERE workspace_id = p_workspace_id AND entry_id = r.entry_id;
            PERFORM hivex_foundation.append_chain_event(v_tenant, v_operator,
                'governance.scratchpad.archived',
                isokron.with_state(
                    jsonb_build_object('entry_id', r.entry_id, 'actor_id', r.actor_id,
                                       'kind', r.kind, 'content_hash', r.content_hash,
                                       'status', 'archived', 'retention_days', v_keep),
                    'kronicle.agent_scratchpad_entries', p_workspace_id, ARRAY[r.entry_id::text]));
            v_entries := v_entries + 1;
        END LOOP;
    END IF;
    IF v_ttl IS NOT NULL THEN
        DELETE FROM isokron.idempotency_keys
            WHERE workspace_id = p_workspace_id
              AND created_at <= v_now - make_interval(secs => (v_ttl * 3600)::float8);
        GET DIAGNOSTICS v_keys = ROW_COUNT;
    END IF;
    DELETE FROM isokron.quota_windows
        WHERE workspace_id = p_workspace_id AND window_start < v_now - interval '25 hours';
    RETURN jsonb_build_object('workspace_id', p_workspace_id,
        'escalations_expired', v_escalations, 'proposals_expired', v_proposals,
        'scratchpad_archived', v_entries, 'idempotency_keys_deleted', v_keys);
END
$fn$;

REVOKE ALL ON FUNCTION isokron.maintain_workspace(TEXT, INTEGER) FROM PUBLIC;

RESET ROLE;
