"""Tasks in lm-evaluation-harness's YAML format: the part both the operator and the runner read.

The operator reads a task file before a run starts (its result names, for thresholds and
status; what cannot run is refused then, naming the field) and the runner runs it
(eval_runner.lmeval). Built-in tasks (presets.py) are task files of the same format, checked
field by field against lm-eval's own at LM_EVAL_VERSION.
"""

LM_EVAL_VERSION = "0.4.13"
