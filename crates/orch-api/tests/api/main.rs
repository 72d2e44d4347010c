//! Integration tests of the HTTP API: each spawns the real server on port 0 with a fresh
//! database and speaks HTTP to it, on SQLite and on PostgreSQL (`TEST_DATABASE_URL`, else the one on 127.0.0.1:5432).

mod harness;

mod deployments;
mod reconcile;
mod secrets;
mod security;
mod services;
mod system;
mod templates;
