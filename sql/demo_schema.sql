-- demo_schema.sql -- the schema the demo and the tests start from, modelled on
-- the seeds (spec 093): workspaces, tenants, twelve tenant-owned tables,
-- audit_logs and operation_runs, as they are BEFORE the rollout: the
-- tenant-owned tables have no workspace_id yet. `tenantguard migrate --phase 1`
-- adds it (nullable, indexed) and the (id, workspace_id) unique key on tenants.
-- Idempotent: safe to load twice.

CREATE TABLE IF NOT EXISTS workspaces (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tenants (
    id            bigserial PRIMARY KEY,
    workspace_id  bigint NULL REFERENCES workspaces (id),
    name          text NOT NULL,
    external_id   text NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS policies (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    name        text NOT NULL,
    policy_type text NOT NULL DEFAULT 'settings',
    settings    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS policy_versions (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    policy_id   bigint NOT NULL REFERENCES policies (id),
    version     integer NOT NULL,
    snapshot    jsonb NOT NULL DEFAULT '{}',
    captured_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS backup_sets (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    name        text NOT NULL,
    status      text NOT NULL DEFAULT 'completed',
    item_count  integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS backup_items (
    id            bigserial PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants (id),
    backup_set_id bigint NOT NULL REFERENCES backup_sets (id),
    policy_id     bigint NULL REFERENCES policies (id),
    payload       jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS restore_runs (
    id            bigserial PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants (id),
    backup_set_id bigint NULL REFERENCES backup_sets (id),
    status        text NOT NULL DEFAULT 'queued',
    started_at    timestamptz NULL,
    completed_at  timestamptz NULL
);

CREATE TABLE IF NOT EXISTS backup_schedules (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    name        text NOT NULL,
    cron        text NOT NULL DEFAULT '0 3 * * *',
    enabled     boolean NOT NULL DEFAULT true
);

CREATE TABLE IF NOT EXISTS inventory_items (
    id           bigserial PRIMARY KEY,
    tenant_id    bigint NOT NULL REFERENCES tenants (id),
    external_id  text NOT NULL,
    display_name text NULL,
    item_type    text NOT NULL DEFAULT 'device',
    last_seen_at timestamptz NULL
);

CREATE TABLE IF NOT EXISTS inventory_links (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    source_id   bigint NOT NULL REFERENCES inventory_items (id),
    target_id   bigint NOT NULL REFERENCES inventory_items (id),
    link_type   text NOT NULL DEFAULT 'member'
);

CREATE TABLE IF NOT EXISTS entra_groups (
    id           bigserial PRIMARY KEY,
    tenant_id    bigint NOT NULL REFERENCES tenants (id),
    external_id  text NOT NULL,
    display_name text NOT NULL,
    synced_at    timestamptz NULL
);

CREATE TABLE IF NOT EXISTS findings (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    severity    text NOT NULL DEFAULT 'low',
    title       text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}',
    detected_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS entra_role_definitions (
    id           bigserial PRIMARY KEY,
    tenant_id    bigint NOT NULL REFERENCES tenants (id),
    external_id  text NOT NULL,
    display_name text NOT NULL,
    is_builtin   boolean NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS tenant_permissions (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    permission  text NOT NULL,
    granted     boolean NOT NULL DEFAULT false,
    checked_at  timestamptz NULL
);

-- Audit trail: tenant-scoped, workspace-scoped and platform-scoped rows.
CREATE TABLE IF NOT EXISTS audit_logs (
    id            bigserial PRIMARY KEY,
    tenant_id     bigint NULL REFERENCES tenants (id),
    workspace_id  bigint NULL REFERENCES workspaces (id),
    actor         text NULL,
    action        text NOT NULL,
    status        text NOT NULL DEFAULT 'success',
    resource_type text NULL,
    resource_id   text NULL,
    context       jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Long-running operations (spec 094): one row per run, deduplicated by identity.
CREATE TABLE IF NOT EXISTS operation_runs (
    id                bigserial PRIMARY KEY,
    workspace_id      bigint NOT NULL REFERENCES workspaces (id),
    tenant_id         bigint NULL REFERENCES tenants (id),
    type              text NOT NULL,
    status            text NOT NULL DEFAULT 'queued',
    outcome           text NULL,
    run_identity_hash text NOT NULL,
    context           jsonb NOT NULL DEFAULT '{}',
    summary_counts    jsonb NOT NULL DEFAULT '{}',
    failure_summary   jsonb NOT NULL DEFAULT '[]',
    started_at        timestamptz NULL,
    completed_at      timestamptz NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- An active run with the same identity is reused, never duplicated.
CREATE UNIQUE INDEX IF NOT EXISTS operation_runs_active_identity
    ON operation_runs (workspace_id, run_identity_hash)
    WHERE status IN ('queued', 'running');
