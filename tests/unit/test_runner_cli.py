"""CLI helpers: manifest loading and error messages, thresholds, API key lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval_runner.cli.manifest import InvalidInput, load_manifest
from eval_runner.cli.run import _local_api_key

MANIFEST = """\
apiVersion: evals.io/v1alpha1
kind: Evaluation
metadata: {name: demo}
spec:
  model: {name: m}
  dataset: {builtin: arithmetic}
  task:
    scorers: [{type: exact_match}, {type: numeric}]
"""


def test_loads_the_evaluation_out_of_several_documents(tmp_path: Path) -> None:
    path = tmp_path / "ev.yaml"
    path.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: key}\n---\n" + MANIFEST)
    assert load_manifest(path).metadata.name == "demo"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MANIFEST.replace("{type: numeric}", "{type: numeric, pattern: x}").replace(
                "{name: m}", "{name: m, temperature: '0'}"
            ),
            [
                "spec.model.temperature: Extra inputs are not permitted",
                "spec.task.scorers[1]: ",
            ],
        ),
        (MANIFEST.replace("exact_match", "exact"), ["spec.task.scorers[0].type: Input should be"]),
        (
            "kind: Evaluation\nspec: {}\n",
            ["spec.model: Field required", "spec.task: Field required"],
        ),
        ("key: [unclosed\n", ["is not valid YAML"]),
        ("", ["holds no Evaluation"]),
        (MANIFEST + "---\n" + MANIFEST, ["holds 2 Evaluations"]),
        # Kubernetes rejects duplicate keys; PyYAML would keep the last one silently.
        (
            MANIFEST.replace("  model: {name: m}\n", "  model: {name: m}\n  model: {name: n}\n"),
            ["is not valid YAML", "duplicate key 'model'", "line 6"],
        ),
        (MANIFEST.replace("{name: m}", "{name: m, name: n}"), ["duplicate key 'name'"]),
    ],
)
def test_invalid_manifests_name_the_field_paths(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = tmp_path / "ev.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput) as caught:
        load_manifest(path)
    for line in expected:
        assert line in str(caught.value)


def test_a_missing_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read"):
        load_manifest(tmp_path / "absent.yaml")


def test_api_key_lookup(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("EVAL_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MY_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert _local_api_key(None, "openai") is None
    monkeypatch.setenv("ANTHROPIC_API_KEY", "a-key")
    assert _local_api_key(None, "anthropic") == "a-key"
    assert _local_api_key(None, "openai") is None
    monkeypatch.setenv("EVAL_API_KEY", "e-key")
    assert _local_api_key(None, "anthropic") == "e-key"
    assert _local_api_key("MY_KEY", "openai") is None
    assert "MY_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("MY_KEY", "m-key")
    assert _local_api_key("MY_KEY", "openai") == "m-key"
