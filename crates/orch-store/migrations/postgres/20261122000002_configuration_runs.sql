-- One row per ansible-playbook run of a configure operation, with its output.
CREATE TABLE configuration_runs (
    id            TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    operation_id  TEXT NOT NULL REFERENCES operations (id),
    playbook      TEXT NOT NULL,
    status        TEXT NOT NULL,
    failed_task   TEXT,
    output        TEXT NOT NULL DEFAULT '',
    started_at    TEXT NOT NULL,
    finished_at   TEXT
);
CREATE UNIQUE INDEX configuration_runs_operation ON configuration_runs (operation_id);
CREATE INDEX configuration_runs_deployment ON configuration_runs (deployment_id, started_at);
