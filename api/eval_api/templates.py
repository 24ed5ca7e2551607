"""The one Jinja2 environment prompt templates and judge rubrics are compiled and rendered in.

Templates come from whoever may create an Evaluation and run in a pod that holds an API key, so
they run sandboxed. The operator compiles them with this same environment before any Job
exists, so a template the runner would reject never reaches a pod.
"""

from __future__ import annotations

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

# The variables a judge's rubric is rendered with.
RUBRIC_VARIABLES = ("input", "output", "target")


def sandbox() -> ImmutableSandboxedEnvironment:
    # StrictUndefined: a misspelt variable is an error, not a silently empty prompt.
    # No autoescape: prompts are plain text, not HTML.
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
