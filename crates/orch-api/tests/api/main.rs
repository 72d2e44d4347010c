//! Integration tests of the HTTP API: each spawns the real server on port 0 with a fresh
//! database and speaks HTTP to it, on SQLite and (with `TEST_DATABASE_URL`) on PostgreSQL.

mod harness;

mod deployments;
mod security;
mod system;
mod templates;
