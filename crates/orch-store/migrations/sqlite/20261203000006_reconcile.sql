-- Reconcile: passes and orphan cleanups run as workflows, the orphans they find, and the
-- drift of each live deployment.
CREATE TABLE reconcile_runs (
    id          TEXT PRIMARY KEY,
    -- 'reconcile' (find orphans and drift) or 'cleanup' (remove orphans).
    kind        TEXT NOT NULL,
    state       TEXT NOT NULL,
    actor       TEXT,
    request_id  TEXT,
    result      TEXT NOT NULL DEFAULT '{}',
    error       TEXT,
    created_at  TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT
);
CREATE INDEX reconcile_runs_state ON reconcile_runs (state, created_at);

-- A resource carrying orch's deployment mark that no deployment holds, per location
-- ('cloud:<region>' or 'containers:<host>'), from the first pass that saw it. A removed one
-- stays, with the run that removed it.
CREATE TABLE orphans (
    location       TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    kind           TEXT NOT NULL,
    name           TEXT NOT NULL,
    deployment_tag TEXT NOT NULL,
    logical_key    TEXT,
    reason         TEXT NOT NULL,
    first_seen_at  TEXT NOT NULL,
    last_seen_at   TEXT NOT NULL,
    removed_at     TEXT,
    removed_by     TEXT,
    PRIMARY KEY (location, resource_id)
);

-- How a live deployment's resources differ from the provider's, as the last pass saw it.
CREATE TABLE drift (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    logical_key   TEXT NOT NULL,
    kind          TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    problem       TEXT NOT NULL,
    detail        TEXT NOT NULL DEFAULT '{}',
    first_seen_at TEXT NOT NULL,
    PRIMARY KEY (deployment_id, logical_key)
);

ALTER TABLE deployments ADD COLUMN auto_heal INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN drift_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN drift_checked_at TEXT;
