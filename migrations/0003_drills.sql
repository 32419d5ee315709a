-- DR drills: the outcome in words (passed, failed, interrupted), the runbook file, and the
-- plans each drill covered with what it achieved for them. A drill row whose `plan` is
-- NULL and that has no drill_plans rows (written before this migration) covers every plan.
ALTER TABLE drills ADD COLUMN result TEXT NOT NULL DEFAULT '';
ALTER TABLE drills ADD COLUMN runbook_path TEXT NOT NULL DEFAULT '';
CREATE TABLE drill_plans (
    drill_id TEXT NOT NULL,
    plan TEXT NOT NULL,
    rto_achieved_ms BIGINT,
    rpo_achieved_s BIGINT,
    PRIMARY KEY (drill_id, plan)
);
CREATE INDEX drills_runbook ON drills (runbook, started_at);
