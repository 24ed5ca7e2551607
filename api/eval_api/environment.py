"""The environment of a runner pod: what the operator's Job sets and the runner reads."""

API_KEY = "EVAL_API_KEY"
DATASET_DIR = "EVAL_DATASET_DIR"
PROGRESS_PORT = "EVAL_PROGRESS_PORT"
CA_BUNDLE = "EVAL_CA_BUNDLE"


def judge_key_env(index: int) -> str:
    """The variable holding the key of the index-th llm_judge scorer's judge."""
    return "EVAL_JUDGE_API_KEY" if index == 0 else f"EVAL_JUDGE_API_KEY_{index}"
