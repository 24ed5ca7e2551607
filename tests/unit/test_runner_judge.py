"""llm_judge: the verdict rule, the rubric, and what an unparsable verdict becomes."""

from __future__ import annotations

import pytest

from eval_api.v1alpha1 import ScorerSpec
from eval_runner.client import Completion
from eval_runner.errors import PermanentError
from eval_runner.prompt import Message
from eval_runner.scorers import ScoreUnavailable, build_judge_scorer, needs_judge
from eval_runner.scorers.llm_judge import parse_verdict

JUDGE = {"name": "grader", "baseURL": "http://judge/v1"}
RUBRIC = "Question: {{ input }}\nExpected: {{ target }}\nAnswer: {{ output }}\nScore 0 to 1."


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Score: 1", 1.0),
        ("score = 0.25", 0.25),
        ("The answer is right.\n**Score:** 0.8", 0.8),  # markdown bold around the label
        ("Reasoning... SCORE: 3/4", 0.75),
        ("score: 7/10. PASS", 0.7),  # rule 1 comes first
        ("PASS", 1.0),
        ("Verdict: fail, the capital is wrong", 0.0),
        ("0.5", 0.5),
        (" 1/2 ", 0.5),
        ("1.", 1.0),
        ("score: 7", None),  # outside [0, 1]
        ("score: 1/0", None),
        ("passable", None),
        ("I think it's 0.5 or so", None),
        ("", None),
    ],
)
def test_parse_verdict(reply: str, score: float | None) -> None:
    assert parse_verdict(reply) == score


class Judge:
    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.asked: list[list[Message]] = []

    async def complete(self, messages: list[Message]) -> Completion:
        self.asked.append(messages)
        return Completion(self.reply, 10, 2)


def judge_spec(**fields: object) -> ScorerSpec:
    return ScorerSpec.model_validate(
        {"type": "llm_judge", "name": "helpful", "judge": JUDGE, "rubric": RUBRIC, **fields}
    )


async def test_the_rubric_becomes_the_judges_prompt() -> None:
    judge = Judge("score: 0.5")
    scorer = build_judge_scorer(judge_spec(), judge)
    assert needs_judge(judge_spec())
    assert await scorer.score("2 + 2?", "4", "4") == 0.5
    assert judge.asked == [
        [{"role": "user", "content": "Question: 2 + 2?\nExpected: 4\nAnswer: 4\nScore 0 to 1."}]
    ]


async def test_an_unparsable_verdict_is_no_score() -> None:
    scorer = build_judge_scorer(judge_spec(), Judge("I cannot decide."))
    with pytest.raises(ScoreUnavailable) as caught:
        await scorer.score("q", "a", "t")
    assert caught.value.error_class == "judge_unparsable"


def test_a_rubric_with_an_unknown_variable_fails_before_any_request() -> None:
    with pytest.raises(PermanentError, match="rubric of scorer helpful"):
        build_judge_scorer(judge_spec(rubric="{{ answer }}"), Judge("PASS"))


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "llm_judge", "rubric": RUBRIC},
        {"type": "llm_judge", "judge": JUDGE},
        {"type": "exact_match", "rubric": RUBRIC},
        {"type": "exact_match", "judge": JUDGE},
    ],
)
def test_judge_and_rubric_go_together_with_llm_judge(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="judge and rubric"):
        ScorerSpec.model_validate(fields)
