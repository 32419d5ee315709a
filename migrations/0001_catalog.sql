-- lifeboat catalog, schema 1. One file serves SQLite and PostgreSQL (through sqlx's Any
-- driver): flags are BIGINT 0/1, times are seconds since the Unix epoch (UTC) in BIGINT,
-- durations are milliseconds, ids are made by the application (hex text), JSON is TEXT.
-- The catalog is a cache and a history: `lifeboat catalog sync` rebuilds `snapshots` from
-- any region; the other tables are history that the object store does not hold.

-- Every operation lifeboat ran: backup, restore, replicate, verify, prune, drill.
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    plan TEXT,
    -- running, succeeded, degraded, failed, cancelled
    phase TEXT NOT NULL,
    -- The schedule occurrence a scheduled run is for; NULL for a manual run.
    scheduled_for BIGINT,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    duration_ms BIGINT,
    bytes BIGINT NOT NULL DEFAULT 0,
    snapshot TEXT,
    -- JSON object: region name -> "ok" or the error that region gave.
    regions TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    host TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX runs_plan_kind_started ON runs (plan, kind, started_at);

-- One row per snapshot and region: whether the region holds the manifest.
CREATE TABLE snapshots (
    id TEXT NOT NULL,
    region TEXT NOT NULL,
    plan TEXT NOT NULL,
    time BIGINT NOT NULL,
    end_time BIGINT NOT NULL,
    host TEXT NOT NULL,
    source TEXT NOT NULL,
    files BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    stored_bytes BIGINT NOT NULL,
    present BIGINT NOT NULL,
    verified BIGINT NOT NULL DEFAULT 0,
    verified_at BIGINT,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (id, region)
);
CREATE INDEX snapshots_plan_time ON snapshots (plan, time);

-- Restores into scratch space, compared and timed (filled by `verify --restore`).
CREATE TABLE restore_tests (
    id TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    region TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    passed BIGINT NOT NULL,
    detail TEXT
);
CREATE INDEX restore_tests_plan ON restore_tests (plan, started_at);

-- DR drills run from runbooks. `plan` is NULL for a drill that covers every plan.
CREATE TABLE drills (
    id TEXT PRIMARY KEY,
    runbook TEXT NOT NULL,
    plan TEXT,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    passed BIGINT NOT NULL,
    rto_achieved_ms BIGINT,
    rpo_achieved_s BIGINT,
    report TEXT
);

-- Append-only, hash-chained: hash = BLAKE3(prev_hash, the entry's fields).
CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    os_user TEXT NOT NULL,
    principal TEXT,
    host TEXT NOT NULL,
    command TEXT NOT NULL,
    target TEXT,
    outcome TEXT NOT NULL,
    detail TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

-- One run per plan at a time, across processes: a lease with an expiry, renewed while the
-- run is alive; an expired lease (a crashed holder) may be taken over.
CREATE TABLE plan_leases (
    plan TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Each schedule occurrence is claimed once: the primary key makes a second claim fail.
CREATE TABLE occurrences (
    plan TEXT NOT NULL,
    scheduled_for BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    PRIMARY KEY (plan, scheduled_for)
);

-- Open alert incidents: one notification when opened, one when cleared.
CREATE TABLE incidents (
    key TEXT PRIMARY KEY,
    plan TEXT,
    kind TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    message TEXT NOT NULL
);
