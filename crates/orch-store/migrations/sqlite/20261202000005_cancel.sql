-- Cancelling an operation: the time it was asked for (the workflow's steps watch for it), and
-- whether the deployment is to be deleted once the cancelled operation has ended (a DELETE
-- that found an operation running).
ALTER TABLE operations ADD COLUMN cancel_requested_at TEXT;
ALTER TABLE operations ADD COLUMN delete_requested_at TEXT;
