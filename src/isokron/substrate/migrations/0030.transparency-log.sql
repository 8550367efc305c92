-- IsoKron transparency log (docs/chain.md, "Transparency log"): an RFC 9162 Merkle tree over
-- each workspace's chain, its signed checkpoints and the log's public key.
-- Citus rules: every key starts with workspace_id, RLS policies compare workspace_id with the
-- workspace setting (no subqueries), no triggers. The tree is written only by the owner (the
-- operator's CLI catches it up from the chain); the reader may SELECT everything here.
SET LOCAL ROLE isokron_owner;

-- Every perfect subtree node: (level, idx) covers leaves [idx * 2^level, (idx + 1) * 2^level).
-- Level 0 holds the leaf hashes SHA-256(0x00 || this_event_hash), leaf index = seq - 1.
CREATE TABLE IF NOT EXISTS hivex_foundation.merkle_node (
    workspace_id  TEXT NOT NULL,
    level         SMALLINT NOT NULL CHECK (level BETWEEN 0 AND 62),
    idx           BIGINT NOT NULL CHECK (idx >= 0),
    hash          BYTEA NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (workspace_id, level, idx)
);

-- How far the tree is caught up with the chain; its row lock serializes catch-ups.
CREATE TABLE IF NOT EXISTS hivex_foundation.merkle_tree (
    workspace_id  TEXT PRIMARY KEY,
    tree_size     BIGINT NOT NULL DEFAULT 0 CHECK (tree_size >= 0),
    root_hash     BYTEA NOT NULL CHECK (octet_length(root_hash) = 32),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The log's public key (a C2SP signed-note verifier key); the private key never enters the
-- database, it stays in a file only the operator can read.
CREATE TABLE IF NOT EXISTS hivex_foundation.log_keys (
    workspace_id  TEXT PRIMARY KEY,
    origin        TEXT NOT NULL,
    verifier_key  TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Checkpoints the log has signed (C2SP tlog-checkpoint signed notes), one per tree size.
CREATE TABLE IF NOT EXISTS hivex_foundation.log_checkpoints (
    workspace_id  TEXT NOT NULL,
    tree_size     BIGINT NOT NULL CHECK (tree_size >= 0),
    root_hash     BYTEA NOT NULL CHECK (octet_length(root_hash) = 32),
    note          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, tree_size)
);

DO $rls$
DECLARE
    t RECORD;
BEGIN
    FOR t IN
        SELECT * FROM (VALUES
            ('hivex_foundation', 'merkle_node'),
            ('hivex_foundation', 'merkle_tree'),
            ('hivex_foundation', 'log_keys'),
            ('hivex_foundation', 'log_checkpoints')
        ) AS v(schema_name, table_name)
    LOOP
        EXECUTE 'ALTER TABLE ' || quote_ident(t.schema_name) || '.' || quote_ident(t.table_name)
            || ' ENABLE ROW LEVEL SECURITY';
        EXECUTE 'ALTER TABLE ' || quote_ident(t.schema_name) || '.' || quote_ident(t.table_name)
            || ' FORCE ROW LEVEL SECURITY';
        EXECUTE 'DROP POLICY IF EXISTS workspace_isolation ON '
            || quote_ident(t.schema_name) || '.' || quote_ident(t.table_name);
        EXECUTE 'CREATE POLICY workspace_isolation ON '
            || quote_ident(t.schema_name) || '.' || quote_ident(t.table_name)
            || ' USING (workspace_id = current_setting(''app.current_workspace_id'', true))'
            || ' WITH CHECK (workspace_id = current_setting(''app.current_workspace_id'', true))';
        EXECUTE 'DROP POLICY IF EXISTS owner_all_workspaces ON '
            || quote_ident(t.schema_name) || '.' || quote_ident(t.table_name);
        EXECUTE 'CREATE POLICY owner_all_workspaces ON '
            || quote_ident(t.schema_name) || '.' || quote_ident(t.table_name)
            || ' TO isokron_owner'
            || ' USING (current_setting(''isokron.all_workspaces'', true) = ''on'')'
            || ' WITH CHECK (current_setting(''isokron.all_workspaces'', true) = ''on'')';
        EXECUTE 'REVOKE ALL ON ' || quote_ident(t.schema_name) || '.' || quote_ident(t.table_name)
            || ' FROM PUBLIC';
        EXECUTE 'GRANT SELECT ON ' || quote_ident(t.schema_name) || '.' || quote_ident(t.table_name)
            || ' TO isokron_reader';
    END LOOP;
END
$rls$;

RESET ROLE;
