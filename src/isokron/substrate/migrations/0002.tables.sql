-- IsoKron substrate: the tables of a workspace.
-- Every workspace-keyed table carries workspace_id (or tenant_id) as the first column of its
-- primary key and of every unique constraint, so it can be distributed by that key (Citus).
SET LOCAL ROLE isokron_owner;

CREATE TABLE IF NOT EXISTS public.workspaces (
    id          TEXT PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS hivex_foundation.tenant (
    tenant_id     UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    clerk_org_id  TEXT NOT NULL UNIQUE REFERENCES public.workspaces (id),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.actor_registry (
    workspace_id  TEXT NOT NULL REFERENCES public.workspaces (id),
    actor_id      UUID NOT NULL DEFAULT gen_random_uuid(),
    actor_kind    TEXT NOT NULL CHECK (actor_kind ~ '^[a-z][a-z0-9_]{0,63}$'),
    display_name  TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, actor_id),
    UNIQUE (workspace_id, actor_kind, display_name)
);

CREATE TABLE IF NOT EXISTS isokron.service_tokens (
    workspace_id  TEXT NOT NULL REFERENCES public.workspaces (id),
    token_id      UUID NOT NULL DEFAULT gen_random_uuid(),
    actor_id      UUID NOT NULL,
    token_prefix  TEXT NOT NULL,
    token_hash    BYTEA NOT NULL CHECK (octet_length(token_hash) = 32),
    label         TEXT NOT NULL DEFAULT '',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ,
    approved_event_id UUID,
    PRIMARY KEY (workspace_id, token_id),
    UNIQUE (workspace_id, token_hash),
    FOREIGN KEY (workspace_id, actor_id) REFERENCES public.actor_registry (workspace_id, actor_id)
);
-- Authentication looks a token up by its hash before the workspace is known.
CREATE INDEX IF NOT EXISTS idx_service_tokens_hash ON isokron.service_tokens (token_hash);

CREATE TABLE IF NOT EXISTS public.kora_role_charter (
    workspace_id   TEXT NOT NULL REFERENCES public.workspaces (id),
    charter_id     UUID NOT NULL DEFAULT gen_random_uuid(),
    version        INTEGER NOT NULL CHECK (version >= 1),
    content_md     TEXT,
    content_jsonb  JSONB NOT NULL,
    content_hash   TEXT NOT NULL,
    is_active      BOOLEAN NOT NULL DEFAULT false,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    approved_event_id UUID,
    PRIMARY KEY (workspace_id, charter_id),
    UNIQUE (workspace_id, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS uq_kora_role_charter_one_active
    ON public.kora_role_charter (workspace_id) WHERE is_active;

CREATE TABLE IF NOT EXISTS public.kora_policy_registry (
    workspace_id  TEXT NOT NULL REFERENCES public.workspaces (id),
    policy_key    TEXT NOT NULL CHECK (policy_key ~ '^policy\.[a-z0-9_.]+$'),
    policy_value  JSONB NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    approved_event_id UUID,
    PRIMARY KEY (workspace_id, policy_key)
);

CREATE TABLE IF NOT EXISTS public.kora_capability_matrix (
    workspace_id  TEXT NOT NULL REFERENCES public.workspaces (id),
    cap_name      TEXT NOT NULL CHECK (cap_name ~ '^cap_[a-z0-9_]+$'),
    actor_kind    TEXT NOT NULL,
    granted       BOOLEAN NOT NULL,
    cap_group     TEXT NOT NULL CHECK (cap_group IN ('sea', 'kora_broader')),
    description   TEXT NOT NULL DEFAULT '',
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    approved_event_id UUID,
    PRIMARY KEY (workspace_id, cap_name, actor_kind)
);

CREATE TABLE IF NOT EXISTS kronicle.workspace_constitution_revisions (
    workspace_id     TEXT NOT NULL REFERENCES public.workspaces (id),
    revision_id      UUID NOT NULL DEFAULT gen_random_uuid(),
    revision_number  INTEGER NOT NULL CHECK (revision_number >= 1),
    rules            JSONB NOT NULL,
    rules_hash       BYTEA NOT NULL CHECK (octet_length(rules_hash) = 32),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    approved_event_id UUID,
    PRIMARY KEY (workspace_id, revision_id),
    UNIQUE (workspace_id, revision_number)
);
CREATE INDEX IF NOT EXISTS idx_constitution_revisions_workspace_current
    ON kronicle.workspace_constitution_revisions (workspace_id, revision_number DESC);

CREATE TABLE IF NOT EXISTS kronicle.agent_scratchpad_entries (
    workspace_id      TEXT NOT NULL REFERENCES public.workspaces (id),
    entry_id          UUID NOT NULL DEFAULT gen_random_uuid(),
    actor_id          UUID NOT NULL,
    session_id        TEXT,
    kind              TEXT NOT NULL CHECK (kind IN (
                          'reasoning_trail', 'observation', 'plan', 'hypothesis',
                          'decision_draft', 'handoff_note', 'tool_result')),
    visibility_scope  TEXT NOT NULL CHECK (visibility_scope IN ('own_only', 'cross_agent_dereferenceable')),
    summary           TEXT NOT NULL,
    content           TEXT,
    content_uri       TEXT,
    content_hash      TEXT NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    status            TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    approved_event_id UUID NOT NULL,
    PRIMARY KEY (workspace_id, entry_id),
    FOREIGN KEY (workspace_id, actor_id) REFERENCES public.actor_registry (workspace_id, actor_id),
    CHECK (content IS NOT NULL OR content_uri IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS idx_scratchpad_workspace_recent
    ON kronicle.agent_scratchpad_entries (workspace_id, created_at DESC);

CREATE TABLE IF NOT EXISTS kronicle.iso_nodes (
    workspace_id   TEXT NOT NULL REFERENCES public.workspaces (id),
    node_id        UUID NOT NULL DEFAULT gen_random_uuid(),
    node_type      TEXT NOT NULL CHECK (node_type ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    title          TEXT NOT NULL,
    content        TEXT NOT NULL DEFAULT '',
    properties     JSONB NOT NULL DEFAULT '{}'::jsonb,
    status         TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'superseded')),
    superseded_by  UUID,
    created_by     UUID NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    approved_event_id   UUID NOT NULL,
    superseded_event_id UUID,
    search_tsv     TSVECTOR GENERATED ALWAYS AS (
                       to_tsvector('simple'::regconfig, title || ' ' || content)) STORED,
    PRIMARY KEY (workspace_id, node_id),
    FOREIGN KEY (workspace_id, created_by) REFERENCES public.actor_registry (workspace_id, actor_id)
);
CREATE INDEX IF NOT EXISTS idx_iso_nodes_search ON kronicle.iso_nodes USING GIN (search_tsv);
CREATE INDEX IF NOT EXISTS idx_iso_nodes_workspace_type ON kronicle.iso_nodes (workspace_id, node_type, created_at DESC);

CREATE TABLE IF NOT EXISTS kronicle.iso_links (
    workspace_id  TEXT NOT NULL REFERENCES public.workspaces (id),
    link_id       UUID NOT NULL DEFAULT gen_random_uuid(),
    from_node_id  UUID NOT NULL,
    to_node_id    UUID NOT NULL,
    link_type     TEXT NOT NULL CHECK (link_type ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    properties    JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_by    UUID NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    approved_event_id UUID NOT NULL,
    PRIMARY KEY (workspace_id, link_id),
    UNIQUE (workspace_id, from_node_id, to_node_id, link_type),
    FOREIGN KEY (workspace_id, from_node_id) REFERENCES kronicle.iso_nodes (workspace_id, node_id),
    FOREIGN KEY (workspace_id, to_node_id) REFERENCES kronicle.iso_nodes (workspace_id, node_id)
);

CREATE TABLE IF NOT EXISTS kronicle.convention_proposals (
    workspace_id  TEXT NOT NULL REFERENCES public.workspaces (id),
    proposal_id   UUID NOT NULL DEFAULT gen_random_uuid(),
    actor_id      UUID NOT NULL,
    title         TEXT NOT NULL,
    body          TEXT NOT NULL,
    rationale     TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'rejected')),
    decided_by    UUID,
    decided_at    TIMESTAMPTZ,
    decision_note TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    approved_event_id UUID NOT NULL,
    decision_event_id UUID,
    PRIMARY KEY (workspace_id, proposal_id)
);

CREATE TABLE IF NOT EXISTS kronicle.policy_change_proposals (
    workspace_id    TEXT NOT NULL REFERENCES public.workspaces (id),
    proposal_id     UUID NOT NULL DEFAULT gen_random_uuid(),
    actor_id        UUID NOT NULL,
    policy_key      TEXT NOT NULL,
    proposed_value  JSONB NOT NULL,
    rationale       TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'rejected')),
    decided_by      UUID,
    decided_at      TIMESTAMPTZ,
    decision_note   TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    approved_event_id UUID NOT NULL,
    decision_event_id UUID,
    PRIMARY KEY (workspace_id, proposal_id)
);

CREATE TABLE IF NOT EXISTS kronicle.escalations (
    workspace_id   TEXT NOT NULL REFERENCES public.workspaces (id),
    escalation_id  UUID NOT NULL DEFAULT gen_random_uuid(),
    actor_id       UUID NOT NULL,
    tool           TEXT NOT NULL,
    rule_id        TEXT,
    reason         TEXT NOT NULL,
    request        JSONB NOT NULL DEFAULT '{}'::jsonb,
    status         TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'approved', 'rejected')),
    decided_by     UUID,
    decided_at     TIMESTAMPTZ,
    decision_note  TEXT,
    result         JSONB,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    approved_event_id UUID NOT NULL,
    decision_event_id UUID,
    PRIMARY KEY (workspace_id, escalation_id)
);
CREATE INDEX IF NOT EXISTS idx_escalations_open ON kronicle.escalations (workspace_id, status, created_at);

-- Idempotency: a retried write with the same key returns the first result (invariant 8).
CREATE TABLE IF NOT EXISTS isokron.idempotency_keys (
    workspace_id     TEXT NOT NULL REFERENCES public.workspaces (id),
    actor_id         UUID NOT NULL,
    idempotency_key  TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    operation        TEXT NOT NULL,
    request_digest   BYTEA NOT NULL,
    result           JSONB,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, actor_id, idempotency_key)
);

-- Rate limiting lives in the database so it holds across gateway restarts and processes.
CREATE TABLE IF NOT EXISTS isokron.rate_limit_windows (
    workspace_id  TEXT NOT NULL REFERENCES public.workspaces (id),
    actor_id      UUID NOT NULL,
    window_start  TIMESTAMPTZ NOT NULL,
    calls         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace_id, actor_id, window_start)
);

RESET ROLE;
