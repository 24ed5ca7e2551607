-- Runs and their per-sample results: a runner shard writes one row per sample as it finishes,
-- so a retried shard resumes where it stopped and the dashboard reads every answer.

CREATE TABLE runs (
    evaluation_uid  text        NOT NULL,
    run             text        NOT NULL,
    namespace       text        NOT NULL,
    evaluation_name text        NOT NULL,
    suite           text,
    provider        text        NOT NULL,
    model           text        NOT NULL,
    dataset_source  text        NOT NULL,
    spec_hash       text        NOT NULL,
    shards          integer     NOT NULL,
    scorers         text[]      NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (evaluation_uid, run)
);

COMMENT ON TABLE runs IS 'One row per run of an Evaluation (its Job), written by its first shard.';
COMMENT ON COLUMN runs.run IS 'The run''s name: the Job''s in a cluster, local-<spec hash>-<random> for eval-runner run.';
COMMENT ON COLUMN runs.spec_hash IS 'sha256 of the run''s spec as canonical JSON: a run id reused with another spec is refused.';
COMMENT ON COLUMN runs.scorers IS 'The scorer names in spec order; the first is the main score.';

CREATE TABLE samples (
    evaluation_uid  text             NOT NULL,
    run             text             NOT NULL,
    sample_id       integer          NOT NULL,
    shard           integer          NOT NULL,
    attempt         integer          NOT NULL,
    input_hash      text             NOT NULL,
    prompt_hash     text             NOT NULL,
    response        text,
    scores          jsonb            NOT NULL DEFAULT '{}',
    requests        integer          NOT NULL DEFAULT 0,
    input_tokens    integer          NOT NULL DEFAULT 0,
    output_tokens   integer          NOT NULL DEFAULT 0,
    truncated       boolean          NOT NULL DEFAULT false,
    timed_out       integer          NOT NULL DEFAULT 0,
    cost_usd        numeric          NOT NULL DEFAULT 0,
    cache_hit       boolean          NOT NULL DEFAULT false,
    cache_saved_usd numeric          NOT NULL DEFAULT 0,
    latency_ms      double precision,
    error_class     text,
    error_message   text,
    created_at      timestamptz      NOT NULL DEFAULT now(),
    -- No foreign key to runs: its check on every row cost a third of the write rate (make
    -- bench), and a shard registers its run before it writes a single sample.
    PRIMARY KEY (evaluation_uid, run, sample_id)
);

COMMENT ON TABLE samples IS 'One row per finished sample (scored or errored); never updated: a resumed shard skips the samples it finds here.';
COMMENT ON COLUMN samples.sample_id IS 'The sample''s position in the run''s shuffled and limited dataset (the same in every shard).';
COMMENT ON COLUMN samples.attempt IS 'The shard attempt that finished the sample (1 for the first; see shard_attempts).';
COMMENT ON COLUMN samples.input_hash IS 'sha256 of the sample''s record as canonical JSON.';
COMMENT ON COLUMN samples.prompt_hash IS 'sha256 of the rendered chat messages as canonical JSON.';
COMMENT ON COLUMN samples.scores IS 'Score per scorer name, each in [0, 1]; empty for an errored sample.';
COMMENT ON COLUMN samples.requests IS 'Requests sent to the model for this sample, retries included (0 for a cache hit).';
COMMENT ON COLUMN samples.cost_usd IS 'What the sample''s model requests cost (timed-out ones at their worst case); 0 for a cache hit.';
COMMENT ON COLUMN samples.cache_saved_usd IS 'For a cache hit: what the answer would have cost at the run''s pricing.';
COMMENT ON COLUMN samples.error_class IS 'Why the sample errored (http_429, timeout, judge_unparsable, ...); NULL when scored.';
COMMENT ON COLUMN samples.error_message IS 'The error''s detail, with every key redacted.';
