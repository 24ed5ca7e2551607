"""lm-eval task files: what is run and what is refused, prompts character for character,
few-shot draws, filters and metrics as lm-eval 0.4.13 defines them."""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml

from eval_api.lmeval.config import TaskFileError, load_task, metric_key, result_names
from eval_runner.errors import PermanentError
from eval_runner.lmeval.prompts import Prompts, fewshot_examples
from eval_runner.lmeval.scoring import (
    NO_GOLD,
    apply_filters,
    choice_scores,
    exact_match,
    generated_reference,
    gold_index,
)

GSM8K_LIKE = r"""
task: gsm8k_like
dataset_path: openai/gsm8k
dataset_name: main
output_type: generate_until
training_split: train
fewshot_split: train
test_split: test
doc_to_text: "Question: {{question}}\nAnswer:"
doc_to_target: "{{answer}}"
num_fewshot: 2
generation_kwargs:
  until: ["Question:", "</s>", "<|im_end|>"]
  do_sample: false
  temperature: 0.0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: false
    regexes_to_ignore: [",", "\\$", "(?s).*#### ", "\\.$"]
filter_list:
  - name: strict-match
    filter:
      - function: regex
        regex_pattern: "#### (\\-?[0-9\\.\\,]+)"
      - function: take_first
  - name: flexible-extract
    filter:
      - function: regex
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{2,})|(-?[0-9]+)"
      - function: take_first
metadata:
  version: 3.0
"""

ARC_LIKE = """
task: arc_like
dataset_path: allenai/ai2_arc
dataset_name: ARC-Easy
output_type: multiple_choice
training_split: train
validation_split: validation
test_split: test
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{choices.label.index(answerKey)}}"
doc_to_choice: "{{choices.text}}"
should_decontaminate: true
doc_to_decontamination_query: "Question: {{question}}\\nAnswer:"
metric_list:
  - metric: acc
  - metric: acc_norm
"""

WINOGRANDE_LIKE = """
task: wino_like
output_type: multiple_choice
training_split: train
validation_split: validation
doc_to_text: "{{ {'1': 0, '2': 1}[answer] }}"
doc_to_choice: "{{ [sentence[:sentence.index('_')] + option1,
  sentence[:sentence.index('_')] + option2] }}"
doc_to_target: "{{ sentence[sentence.index('_') + 1:].strip() }}"
metric_list:
  - metric: acc
"""

MMLU_LIKE = """
task: mmlu_like
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
output_type: multiple_choice
doc_to_text: "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nAnswer:"
doc_to_choice: ["A", "B"]
doc_to_target: answer
description: "The following are multiple choice questions (with answers) about {{ topic }}.\\n\\n"
num_fewshot: 2
metric_list:
  - metric: acc
"""


def arc_doc(i: int, key: str = "B") -> dict[str, Any]:
    return {
        "question": f"Which is number {i}?",
        "choices": {"text": [f"one {i}", f"two {i}", "three"], "label": ["A", "B", "C"]},
        "answerKey": key,
    }


# --- what is run and what is refused --------------------------------------------------------------


def test_a_task_file_is_read_with_lm_evals_defaults() -> None:
    task = load_task(GSM8K_LIKE, "gsm8k.yaml")
    assert (task.eval_split, task.fewshot_split, task.excludes_eval_doc) == ("test", "train", False)
    assert task.generation == {
        "until": ["Question:", "</s>", "<|im_end|>"],
        "max_tokens": 256,
        "temperature": 0.0,
    }
    assert [p.name for p in task.filters] == ["strict-match", "flexible-extract"]
    assert task.version == "3.0" and task.target_delimiter == " "
    arc = load_task(ARC_LIKE, "arc.yaml")
    assert [m.name for m in arc.metrics] == ["acc", "acc_norm"]
    assert arc.fewshot_split == "train" and arc.informational["should_decontaminate"] is True
    # Neither fewshot_split nor test_split: lm-eval drops the evaluated doc from its draws.
    assert load_task(WINOGRANDE_LIKE, "w.yaml").excludes_eval_doc is True


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("process_docs", "!function utils.process_docs", "process_docs"),
        ("doc_to_choice", "!function preprocess.doc_to_choice", "doc_to_choice: !function"),
        ("process_results", "!function utils.process_results", "process_results"),
        ("include", "_default_template_yaml", "include"),
        ("repeats", "4", "repeats"),
        ("output_type", "loglikelihood_rolling", "output_type"),
        ("metric_list", "[{metric: bleu}]", "metric_list[0]"),
        ("metric_list", "[{metric: exact_match, aggregation: median}]", "aggregation"),
        ("filter_list", "[{name: x, filter: [{function: decontaminate}]}]", "filter[0]"),
        ("generation_kwargs", "{until: [x], temperature: 0.7, do_sample: true}", "sampling"),
        ("fewshot_config", "{sampler: balanced}", "sampler"),
        ("group", "mmlu", "group"),
        ("surprise", "1", "surprise"),
    ],
)
def test_what_cannot_run_is_refused_with_the_field_named(key: str, value: str, named: str) -> None:
    fields = {k: v for k, v in yaml.safe_load(GSM8K_LIKE).items() if k != key}
    text = yaml.safe_dump(fields) + f"{key}: {value}\n"
    with pytest.raises(TaskFileError) as refused:
        load_task(text, "task.yaml")
    assert refused.value.reason == "LmEvalUnsupported"
    assert named in refused.value.message, refused.value.message


# --- prompts --------------------------------------------------------------------------------------


def test_a_generative_prompt_joins_its_examples_as_lm_eval_does() -> None:
    task = load_task(GSM8K_LIKE, "gsm8k.yaml")
    train = [{"question": f"q{i}", "answer": f"step\n#### {i}"} for i in range(5)]
    test = [{"question": "What now?", "answer": "#### 7"}]
    prompts = Prompts(task, ["question", "answer"])
    (picked,) = fewshot_examples(task, test, train)
    # One Random(1234) for the task; the train split is not the test split: n draws.
    assert picked == random.Random(1234).sample(range(5), 2)
    context = prompts.context(test[0], [train[i] for i in picked], multiple_input=False)
    a, b = picked
    assert context == (
        f"Question: q{a}\nAnswer: step\n#### {a}\n\n"
        f"Question: q{b}\nAnswer: step\n#### {b}\n\n"
        "Question: What now?\nAnswer:"
    )


def test_draws_depend_on_every_earlier_doc_and_drop_the_evaluated_one() -> None:
    task = load_task(WINOGRANDE_LIKE.replace("metric_list", "num_fewshot: 3\nmetric_list"), "w")
    pool = [
        {"sentence": f"s{i} _ x", "option1": "a", "option2": "b", "answer": "1"} for i in range(6)
    ]
    docs = pool[:4]  # the evaluated docs are in the pool: same split
    drawn = fewshot_examples(task, docs, pool)
    rnd = random.Random(1234)
    for doc, picked in zip(docs, drawn, strict=True):
        expected = [i for i in rnd.sample(range(6), 4) if pool[i] != doc][:3]
        assert picked == expected and pool.index(doc) not in picked
    # A shard that starts at doc 2 replays the draws before it: the same examples.
    assert fewshot_examples(task, docs, pool, count=3)[2] == drawn[2]


def test_first_n_examples_and_a_templated_description() -> None:
    task = load_task(MMLU_LIKE, "mmlu.yaml")
    dev = [
        {"question": f" d{i} ", "choices": ["x", "y"], "answer": i % 2, "topic": "t"}
        for i in range(4)
    ]
    doc = {"question": "Real?", "choices": ["yes", "no"], "answer": 0, "topic": "abstract algebra"}
    (picked,) = fewshot_examples(task, [doc], dev)
    assert picked == [0, 1]
    context = Prompts(task, list(doc)).context(doc, [dev[i] for i in picked], False)
    assert context == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "d0\nA. x\nB. y\nAnswer: A\n\n"
        "d1\nA. x\nB. y\nAnswer: B\n\n"
        "Real?\nA. yes\nB. no\nAnswer:"
    )


def test_choices_and_targets_from_templates() -> None:
    prompts = Prompts(load_task(ARC_LIKE, "arc.yaml"), list(arc_doc(0)))
    doc = arc_doc(3, key="C")
    assert prompts.choices(doc) == ["one 3", "two 3", "three"]
    assert prompts.target(doc) == 2  # digits with choices: an int
    assert gold_index(prompts.target(doc), prompts.choices(doc)) == 2
    assert gold_index("two 3", prompts.choices(doc)) == 1
    assert gold_index("four", prompts.choices(doc)) == NO_GOLD
    assert gold_index(7, prompts.choices(doc)) == NO_GOLD


def test_a_multiple_input_task_has_one_context_per_choice() -> None:
    task = load_task(WINOGRANDE_LIKE, "w.yaml")
    doc = {"sentence": "The cup beat the jug because _ was strong.", "option1": "the cup",
           "option2": "the jug", "answer": "2"}  # fmt: skip
    prompts = Prompts(task, list(doc))
    assert prompts.is_multiple_input(doc)
    assert prompts.context(doc, [], multiple_input=True) == [
        "The cup beat the jug because the cup",
        "The cup beat the jug because the jug",
    ]
    assert prompts.target(doc) == "was strong."
    assert prompts.text(doc) == 1  # the gold: the second context


def test_templates_run_sandboxed_with_lm_evals_regex_replace() -> None:
    task = load_task(ARC_LIKE.replace('"Question: {{question}}\\nAnswer:"',
                                      '"{{ question | regex_replace(\'[0-9]+\', \'N\') }}"'),
                     "arc.yaml")  # fmt: skip
    assert Prompts(task, []).text(arc_doc(42)) == "Which is number N?"
    evil_text = ARC_LIKE.replace('"Question: {{question}}\\nAnswer:"', '"{{ ().__class__ }}"')
    evil = load_task(evil_text, "arc.yaml")
    with pytest.raises(PermanentError, match="unsafe|access"):
        Prompts(evil, []).text(arc_doc(1))


# --- filters and metrics --------------------------------------------------------------------------


def test_gsm8k_filters_and_exact_match() -> None:
    task = load_task(GSM8K_LIKE, "gsm8k.yaml")
    strict, flexible = task.filters
    answer = "She has 3 + 4 = 7 apples.\n#### 1,007.\n\nQuestion:"
    assert apply_filters(strict, answer) == "1,007."
    assert apply_filters(flexible, answer) == "1,007."
    assert apply_filters(strict, "no number here") == "[invalid]"
    assert apply_filters(flexible, "The answer is $12.") == "$12."
    (metric,) = task.metrics
    reference = generated_reference("Step one.\n#### 1007", None)
    assert exact_match("1,007.", reference, metric.options) == 1.0  # , and the final . ignored
    assert exact_match("$12.", "#### 12", metric.options) == 1.0
    assert exact_match("[invalid]", reference, metric.options) == 0.0
    assert metric_key("exact_match", "strict-match") == "exact_match_strict_match"
    assert metric_key("acc", "none") == "acc"
    assert result_names(task) == ["exact_match_strict_match", "exact_match_flexible_extract"]


def test_exact_match_options_apply_in_lm_evals_order() -> None:
    options = {"regexes_to_ignore": ["The answer is "], "ignore_case": True,
               "ignore_punctuation": True, "ignore_numbers": True}  # fmt: skip
    assert exact_match("The answer is PARIS!", "paris", options) == 1.0
    # The regex runs before lowercasing: a differently cased prefix is not removed.
    assert exact_match("the answer is paris", "paris", options) == 0.0
    assert exact_match("a1b2", "ab", {"ignore_numbers": True}) == 1.0
    assert exact_match("Paris", "paris", {}) == 0.0


def test_acc_and_acc_norm_take_the_first_highest() -> None:
    acc, acc_norm = load_task(ARC_LIKE, "arc.yaml").metrics
    choices = ["a", "bbbb", "cc"]
    # Summed log-likelihoods: "a" is likeliest overall, "bbbb" per character.
    scores = choice_scores((acc, acc_norm), [-3.0, -4.0, -10.0], choices, gold=1)
    assert scores == {"acc": 0.0, "acc_norm": 1.0}
    tie = choice_scores((acc,), [-1.0, -1.0, -2.0], choices, gold=0)
    assert tie == {"acc": 1.0}  # a tie goes to the first
    assert choice_scores((acc,), [-1.0, -3.0, -2.0], choices, gold=[1, 0]) == {"acc": 1.0}
    assert choice_scores((acc,), [-1.0, -3.0, -2.0], choices, gold=NO_GOLD) == {"acc": 0.0}


def test_a_pipeline_that_does_not_end_in_take_first_is_refused() -> None:
    text = GSM8K_LIKE.replace(
        "      - function: take_first\n  - name: flexible", "  - name: flexible"
    )
    with pytest.raises(TaskFileError, match=r"filter_list\[0\]: must end in take_first"):
        load_task(text, "gsm8k.yaml")
