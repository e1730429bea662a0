-- Migration 8: listing stays flat as the instances table grows.
-- `pinion list` (and GET /v1/instances) orders by created_at_ms DESC, id, optionally filtered
-- by status, workflow type or module: one index per filter, each in that order, so a page
-- reads its rows from the index instead of scanning and sorting the whole table.
CREATE INDEX IF NOT EXISTS instances_created ON instances(created_at_ms DESC, id);
CREATE INDEX IF NOT EXISTS instances_status_created ON instances(status, created_at_ms DESC, id);
CREATE INDEX IF NOT EXISTS instances_type_created ON instances(workflow_type, created_at_ms DESC, id);
CREATE INDEX IF NOT EXISTS instances_module_created ON instances(module_hash, created_at_ms DESC, id);
-- Retention (`pinion purge`, `server --retention`) reads ended instances oldest change first.
CREATE INDEX IF NOT EXISTS instances_ended ON instances(updated_at_ms, id)
    WHERE status IN ('completed', 'failed', 'cancelled', 'terminated');
