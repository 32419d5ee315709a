-- lifeboat catalog, schema 8: the audit trail is a keyed chain written at intent and at
-- outcome. `keyed` = 1: `hash` is the BLAKE3 keyed MAC of the entry (key derived from the
-- repository's writer key, never stored here) and `prev_hash` the MAC (or, for the first
-- keyed entry, the hash) of the entry before; 0: the unkeyed hash of schema 1 (entries
-- written before this schema, or by a host that had no key). `phase`: `intent` (written
-- before the command runs), `outcome` (after; `intent` is the seq of its intent entry), or
-- NULL for a single entry (scheduled runs, entries before this schema).
ALTER TABLE audit_events ADD COLUMN keyed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit_events ADD COLUMN phase TEXT;
ALTER TABLE audit_events ADD COLUMN intent BIGINT;
