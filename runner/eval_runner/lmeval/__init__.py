"""Tasks in lm-evaluation-harness's YAML format, run as lm-eval runs them.

A team brings the task files it already has (task.lmEval) or names a standard benchmark
(task.preset), and the number reported is the one lm-eval reports for the same endpoint: the
same prompt text character for character, the same few-shot examples in the same order, the
same requests, filters and metrics. The semantics follow lm-eval's own code at the version in
LM_EVAL_VERSION (read, not copied):

- eval_api.lmeval.config: the YAML, the fields we run and the ones we refuse, by name;
- prompts.py: doc_to_text/doc_to_target/doc_to_choice, the few-shot context and its sampler;
- scoring.py: filters (regex, take_first, lowercase, ...) and metrics (exact_match, acc,
  acc_norm).
"""

from eval_api.lmeval import LM_EVAL_VERSION

__all__ = ["LM_EVAL_VERSION"]
