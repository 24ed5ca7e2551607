-- A suite's matrix: which cell (model/task) and which suite run each run belongs to, and
-- whether it succeeded, so that a cell's run is compared with the right baseline run. Written
-- by the cell report (eval-runner cell-report) once the operator has seen the run succeed.

ALTER TABLE runs ADD COLUMN cell text;
ALTER TABLE runs ADD COLUMN suite_run text;
ALTER TABLE runs ADD COLUMN succeeded_at timestamptz;

COMMENT ON COLUMN runs.cell IS 'The matrix cell, <model>/<task>, of a run of an EvalSuite''s child Evaluation.';
COMMENT ON COLUMN runs.suite_run IS 'The suite run (status.history id) this run was part of.';
COMMENT ON COLUMN runs.succeeded_at IS 'When the operator reported the run as succeeded; NULL otherwise.';

-- A cell's runs newest first: how its baseline (previous, or the one of a suite run) is found.
CREATE INDEX runs_by_cell ON runs (namespace, suite, cell, started_at DESC) WHERE cell IS NOT NULL;
