-- SSH host keys, trusted on first contact per deployment and enforced after: one row per
-- host Ansible reached. `server_id` is the server that had the address when its key was
-- recorded (NULL for an address given in an inventory); a key whose server has been
-- replaced is forgotten before the next run.
CREATE TABLE ssh_host_keys (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    host          TEXT NOT NULL,
    server_id     TEXT,
    known_hosts   TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    PRIMARY KEY (deployment_id, host)
);
