-- Migration 10: a module's code moves out of its `modules` row. SQLite stores a row's
-- columns in order, and `bytes` came before `manifest`: every read of a module's record
-- (each start, each `pinion modules`) walked the overflow pages of the whole module
-- (62 pages for a 253 KB module) to reach the manifest.
CREATE TABLE IF NOT EXISTS module_code (
    hash  TEXT PRIMARY KEY REFERENCES modules(hash) ON DELETE CASCADE,
    bytes BLOB NOT NULL
);
INSERT INTO module_code(hash, bytes) SELECT hash, bytes FROM modules;
ALTER TABLE modules DROP COLUMN bytes;
