"""Scorers and their registry."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from eval_api.v1alpha1 import ScorerSpec, ScorerType
from eval_runner.errors import PermanentError
from eval_runner.scorers import Scorer, build_scorer, register
from eval_runner.scorers.normalize import normalize
from eval_runner.scorers.registry import registered


def scorer(type_: str, **fields: Any) -> Scorer:
    return build_scorer(ScorerSpec.model_validate({"type": type_, **fields}))


# --- registry -------------------------------------------------------------------------------


def test_the_registry_implements_exactly_the_api_scorer_types() -> None:
    assert registered() == sorted(get_args(ScorerType))


def test_an_unknown_type_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError) as caught:
        build_scorer(ScorerSpec.model_construct(type="bleu", normalize=[]))
    assert caught.value.reason == "UnknownScorer"


def test_a_type_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="twice"):
        register("exact_match")(lambda spec: lambda output, target: 1.0)


# --- normalisation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([], "  The  Cat, sat!  "),
        (["strip"], "The  Cat, sat!"),
        (["lowercase"], "  the  cat, sat!  "),
        (["strip_punctuation", "strip"], "The  Cat sat"),
        (["collapse_whitespace"], " The Cat, sat! "),
        (["remove_articles", "strip"], "Cat, sat!"),
        # the order of the list does not matter
        (
            ["strip", "collapse_whitespace", "remove_articles", "strip_punctuation", "lowercase"],
            "cat sat",
        ),
        (
            ["lowercase", "strip_punctuation", "remove_articles", "collapse_whitespace", "strip"],
            "cat sat",
        ),
    ],
)
def test_normalize(steps: list[str], expected: str) -> None:
    assert normalize("  The  Cat, sat!  ", steps) == expected


def test_remove_articles_keeps_words_containing_them() -> None:
    assert normalize("a theory and an answer", ["remove_articles"]) == "theory and answer"


def test_strip_punctuation_covers_unicode() -> None:
    assert normalize("«Paris»—¿sí?", ["strip_punctuation"]) == "Parissí"


# --- exact_match ----------------------------------------------------------------------------


def test_exact_match_default_strips_only() -> None:
    score = scorer("exact_match")
    assert score("  Paris\n", "Paris") == 1.0
    assert score("paris", "Paris") == 0.0


def test_exact_match_with_normalisations() -> None:
    score = scorer(
        "exact_match",
        normalize=[
            "lowercase",
            "strip_punctuation",
            "remove_articles",
            "collapse_whitespace",
            "strip",
        ],
    )
    assert score("The  Eiffel Tower.", "eiffel tower") == 1.0
    assert score("Eiffel", "eiffel tower") == 0.0


# --- contains -------------------------------------------------------------------------------


def test_contains() -> None:
    score = scorer("contains", normalize=["lowercase"])
    assert score("I think it is PARIS, France", "paris") == 1.0
    assert score("Lyon", "paris") == 0.0
    assert score("anything", "") == 0.0


# --- regex ----------------------------------------------------------------------------------


def test_regex_compares_group_one_to_the_target() -> None:
    score = scorer("regex", pattern=r"Answer:\s*(\w+)", normalize=["lowercase", "strip"])
    assert score("Reasoning... Answer: Paris", "paris") == 1.0
    assert score("Answer: Lyon", "paris") == 0.0
    assert score("Paris", "paris") == 0.0  # no match


def test_regex_without_groups_compares_the_whole_match() -> None:
    score = scorer("regex", pattern=r"\d+")
    assert score("it is 42 or 43", "42") == 1.0
    assert score("it is 41", "42") == 0.0


def test_regex_with_an_unmatched_optional_group_uses_the_whole_match() -> None:
    score = scorer("regex", pattern=r"yes(!)?")
    assert score("yes", "yes") == 1.0


def test_regex_without_a_target_scores_any_match() -> None:
    score = scorer("regex", pattern=r"^\{.*\}$")
    assert score('{"a": 1}', "") == 1.0
    assert score("no braces", "") == 0.0


# --- numeric --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "target", "tolerance", "expected"),
    [
        ("42", "42", None, 1.0),
        ("The answer is 42.", "42", None, 1.0),
        ("First 7, then finally 42", "42", None, 1.0),  # the last number counts
        ("42, no wait, 41", "42", None, 0.0),
        ("It costs 1,234,567.50 dollars", "1234567.5", None, 1.0),
        ("1,2", "2", None, 1.0),  # not a thousands separator: two numbers
        ("-18", "-18", None, 1.0),
        ("3.14159", "3.14", "0.01", 1.0),
        ("3.16", "3.14", "0.01", 0.0),
        ("0.3", "0.2", "0.1", 1.0),  # exact decimal arithmetic at the boundary
        ("42.0", "42", None, 1.0),
        (".5", "0.5", None, 1.0),
        ("no number here", "42", None, 0.0),
        ("", "42", None, 0.0),
        ("42", "forty-two", None, 0.0),  # an unparsable target scores 0
        ("42", "1,000", None, 0.0),
    ],
)
def test_numeric(output: str, target: str, tolerance: str | None, expected: float) -> None:
    fields = {"tolerance": tolerance} if tolerance else {}
    assert scorer("numeric", **fields)(output, target) == expected


# --- token_f1 -------------------------------------------------------------------------------


def test_token_f1() -> None:
    squad = ["lowercase", "strip_punctuation", "remove_articles", "collapse_whitespace", "strip"]
    score = scorer("token_f1", normalize=squad)
    assert score("The cat sat.", "cat sat") == 1.0
    # 2 common tokens; precision 2/3, recall 2/4 -> F1 = 4/7
    assert score("cat sat down", "the cat sat on mat") == pytest.approx(4 / 7)
    assert score("dog", "cat") == 0.0
    assert score("", "") == 1.0
    assert score("", "cat") == 0.0
    assert score("cat", "") == 0.0
    # repeated tokens count only as often as they appear in both
    assert score("cat cat cat", "cat") == pytest.approx(0.5)


# --- json_valid -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ('{"a": [1, 2]}', 1.0),
        ("[1]", 1.0),
        (" 3 ", 1.0),
        ("null", 1.0),
        ("{a: 1}", 0.0),
        ("", 0.0),
        ('{"a": 1', 0.0),
    ],
)
def test_json_valid(output: str, expected: float) -> None:
    assert scorer("json_valid")(output, "ignored") == expected


# regex needs a pattern; llm_judge asks a model (tests/unit/test_runner_judge.py).
@pytest.mark.parametrize(
    "type_", [t for t in get_args(ScorerType) if t not in ("regex", "llm_judge")]
)
@pytest.mark.parametrize(("output", "target"), [("", ""), ("x", ""), ("", "x"), ("1 2 3", "1 2")])
def test_every_score_is_within_zero_and_one(type_: str, output: str, target: str) -> None:
    assert 0.0 <= scorer(type_)(output, target) <= 1.0
