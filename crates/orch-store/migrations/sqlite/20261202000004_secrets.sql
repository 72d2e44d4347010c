-- A deployment's secrets, encrypted at rest (XChaCha20-Poly1305, the deployment and name as
-- associated data). key_id names the key that sealed the row, so that rotation knows which
-- rows to seal again. revealed_at: a generated secret is shown to a caller at most once.
CREATE TABLE deployment_secrets (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    name          TEXT NOT NULL,
    source        TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    ciphertext    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    revealed_at   TEXT,
    PRIMARY KEY (deployment_id, name)
);
