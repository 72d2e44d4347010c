-- Containerised services: the host a deployment's containers run on, the services part of
-- stored templates, and host ports leased to instances (one owner per host, address,
-- protocol and port, so two instances can never be given the same port).
ALTER TABLE deployments ADD COLUMN container_host TEXT NOT NULL DEFAULT '';
ALTER TABLE deployment_templates ADD COLUMN services TEXT NOT NULL DEFAULT '{}';
ALTER TABLE deployment_templates ADD COLUMN networks TEXT NOT NULL DEFAULT '{}';

CREATE TABLE port_leases (
    host          TEXT NOT NULL,
    address       TEXT NOT NULL,
    protocol      TEXT NOT NULL,
    port          INTEGER NOT NULL,
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    logical_key   TEXT NOT NULL,
    port_name     TEXT NOT NULL,
    leased_at     TEXT NOT NULL,
    PRIMARY KEY (host, address, protocol, port)
);
CREATE UNIQUE INDEX port_leases_owner ON port_leases (deployment_id, logical_key, port_name);
