-- Leases on a role that one process at a time should play (the relay): the holder renews
-- its lease before it expires; another process takes the role once it has.
CREATE TABLE leadership (
    role       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
