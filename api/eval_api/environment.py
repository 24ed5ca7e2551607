"""The environment of a runner pod: what the operator's Job sets and the runner reads."""

API_KEY = "EVAL_API_KEY"
DATASET_DIR = "EVAL_DATASET_DIR"
PROGRESS_PORT = "EVAL_PROGRESS_PORT"
CA_BUNDLE = "EVAL_CA_BUNDLE"
# Budgeted runs: where the run's ledger is mounted, and the Job controller's counts of the
# shard's earlier attempts (from the pod's annotations, through the downward API).
LEDGER_FILE = "EVAL_LEDGER_FILE"
INDEX_FAILURES = "EVAL_INDEX_FAILURES"
INDEX_IGNORED_FAILURES = "EVAL_INDEX_IGNORED_FAILURES"


def judge_key_env(index: int) -> str:
    """The variable holding the key of the index-th llm_judge scorer's judge."""
    return "EVAL_JUDGE_API_KEY" if index == 0 else f"EVAL_JUDGE_API_KEY_{index}"
