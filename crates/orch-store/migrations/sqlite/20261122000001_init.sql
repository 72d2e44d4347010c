-- orch's state. Timestamps are RFC 3339 UTC text with fixed microsecond precision, so that
-- text order is time order; JSON documents are text. Both choices keep one set of queries
-- valid on SQLite and PostgreSQL.

CREATE TABLE deployment_templates (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    description     TEXT,
    vm_config       TEXT NOT NULL,
    network_config  TEXT NOT NULL,
    security_groups TEXT NOT NULL DEFAULT '{}',
    key_pair        TEXT,
    version         BIGINT NOT NULL DEFAULT 1,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    deleted_at      TEXT
);
CREATE UNIQUE INDEX deployment_templates_live_name ON deployment_templates (name) WHERE deleted_at IS NULL;
CREATE INDEX deployment_templates_created ON deployment_templates (created_at);

CREATE TABLE deployments (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL,
    status_reason TEXT,
    template_id   TEXT REFERENCES deployment_templates (id),
    template      TEXT NOT NULL,
    parameters    TEXT NOT NULL,
    cloud_region  TEXT NOT NULL,
    rollback      BIGINT NOT NULL,  -- 0 or 1: sqlx's Any driver cannot read SQLite booleans
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    deleted_at    TEXT
);
CREATE UNIQUE INDEX deployments_live_name ON deployments (name) WHERE deleted_at IS NULL;
CREATE INDEX deployments_live_created ON deployments (deleted_at, created_at);
CREATE INDEX deployments_status_created ON deployments (status, created_at);
CREATE INDEX deployments_template ON deployments (template_id) WHERE deleted_at IS NULL;

CREATE TABLE resources (
    id            TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    logical_key   TEXT NOT NULL,
    kind          TEXT NOT NULL,
    cloud_id      TEXT,
    status        TEXT NOT NULL,
    attributes    TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    deleted_at    TEXT
);
CREATE UNIQUE INDEX resources_logical_key ON resources (deployment_id, logical_key);
CREATE INDEX resources_cloud_id ON resources (cloud_id);

CREATE TABLE deployment_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    action        TEXT NOT NULL,
    actor         TEXT,
    request_id    TEXT,
    detail        TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL
);
CREATE INDEX deployment_events_deployment ON deployment_events (deployment_id, id);

CREATE TABLE operations (
    id            TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    kind          TEXT NOT NULL,
    state         TEXT NOT NULL,
    payload       TEXT NOT NULL DEFAULT '{}',
    actor         TEXT,
    request_id    TEXT,
    error         TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
-- Invariant 3: at most one operation in flight per deployment, enforced by the database so
-- that concurrent API replicas cannot both start one.
CREATE UNIQUE INDEX operations_one_in_flight ON operations (deployment_id) WHERE state IN ('PENDING', 'RUNNING');
CREATE INDEX operations_state_created ON operations (state, created_at);
CREATE INDEX operations_deployment ON operations (deployment_id, created_at);
