"""crds/ is generated from the typed models, structural, documented, and its rules work."""

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from eval_api import crdgen
from eval_api.v1alpha1 import BUILTIN_DATASETS, Evaluation, EvaluationSpec
from tests.support.factories import BASE_SPEC
from tests.support.kubeapi.schema import apply_defaults, check_schema, prune, validate

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "evaluations.evals.io.yaml"


@pytest.fixture(scope="module")
def crd():
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="module")
def schema(crd):
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crds_and_reference_match_the_models():
    for name, text in crdgen.render_all().items():
        assert (ROOT / "crds" / name).read_text() == text, f"crds/{name} drifted: run `make crds`"
    reference = (ROOT / crdgen.REFERENCE_PATH).read_text()
    assert reference == crdgen.render_reference(), "docs/api-reference.md drifted: run `make crds`"


@pytest.mark.parametrize("version", ["1.30", "1.33"])
def test_crd_is_a_valid_object(crd, version):
    kubernetes_validate.validate(crd, version, strict=True)


def test_crd_names_columns_and_subresources(crd):
    names = crd["spec"]["names"]
    # `ev` is the core Events' short name: kubectl would resolve it to them (issue 7 item 13).
    assert names["shortNames"] == ["evl"] and names["categories"] == ["evals"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    assert [c["name"] for c in columns if not c.get("priority")] == [
        "Phase", "Ready", "Model", "Progress", "Score", "Passed", "Age",
    ]  # fmt: skip
    assert [c["name"] for c in columns if c.get("priority")] == [
        "Reason",
        "Dataset",
        "Task",
        "Stopped",
        "Job",
        "Cost",
    ]


def _walk(node, path):
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural(schema):
    forbidden = {"$ref", "anyOf", "oneOf", "allOf", "title", "$defs", "const"}
    for path, node in _walk(schema, ""):
        assert not forbidden & set(node), f"{path} uses {forbidden & set(node)}"
        typed = "type" in node or node.get("x-kubernetes-int-or-string")
        assert typed or path == ".metadata", f"{path} has no type"
    assert check_schema(schema, "openAPIV3Schema") == []  # every CEL rule compiles


def test_every_field_is_described(schema):
    for part in ("spec", "status"):
        for path, node in _walk(schema["properties"][part], part):
            if path.endswith("[]") or path.endswith("{}"):
                continue  # list items and map values are described by their field
            assert node.get("description"), f"{path} has no description (kubectl explain)"


def admit(schema, spec, name="ev"):
    """What the apiserver does with a created object: prune, default, validate."""
    obj = {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": name, "namespace": "default"},
        "spec": copy.deepcopy(spec),
    }
    obj = apply_defaults(prune(obj, schema, root=True), schema)
    return obj, [f"{e.field}: {e.body}" for e in validate(obj, schema, root=True)]


def test_valid_spec_is_admitted_and_defaulted(schema):
    obj, errors = admit(schema, BASE_SPEC)
    assert errors == []
    assert obj["spec"]["model"]["maxConcurrency"] == 8
    assert obj["spec"]["execution"] if "execution" in obj["spec"] else True
    assert obj["spec"]["suspend"] is False
    # What admission accepts, the models accept too.
    Evaluation.model_validate(obj)


def with_changes(**paths):
    spec = copy.deepcopy(BASE_SPEC)
    for dotted, value in paths.items():
        *parents, leaf = dotted.split("__")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return spec


REJECTED = {
    "two dataset sources": (
        with_changes(dataset__inline=[{"input": "1+1", "target": "2"}]),
        "exactly one of builtin, configMapRef, inline, url or huggingface must be set",
    ),
    "no dataset source": (
        with_changes(dataset__builtin=None),
        "exactly one of builtin, configMapRef, inline, url or huggingface must be set",
    ),
    "url without sha256": (
        with_changes(dataset__builtin=None, dataset__url="https://example.com/d.jsonl"),
        "url requires sha256",
    ),
    "unknown builtin": (with_changes(dataset__builtin="nope"), "Unsupported value"),
    "zero shards": (with_changes(execution__shards=0), "should be greater than or equal to 1"),
    "too many shards": (
        with_changes(execution__shards=1001),
        "should be less than or equal to 1000",
    ),
    "parallelism above shards": (
        with_changes(execution__shards=2, execution__parallelism=3),
        "parallelism cannot exceed shards",
    ),
    "zero concurrency": (with_changes(model__maxConcurrency=0), "greater than or equal to 1"),
    "float temperature": (with_changes(model__parameters={"temperature": 0.5}), "string"),
    "bad threshold": (with_changes(thresholds=["exact_match => 0.8"]), "should match"),
    "duplicate scorers": (
        with_changes(task__scorers=[{"type": "exact_match"}, {"type": "exact_match"}]),
        "scorer names (name, or type when unnamed) must be unique",
    ),
    "regex without pattern": (
        with_changes(task__scorers=[{"type": "regex"}]),
        "a regex scorer requires pattern",
    ),
    "budget cost without pricing": (
        with_changes(budget={"maxCostUSD": "5"}),
        "requires model.pricing",
    ),
    "maxBytes on a builtin dataset": (
        with_changes(dataset__maxBytes=1000),
        "maxBytes applies to url, configMapRef and huggingface datasets only",
    ),
    "errored fraction above 1": (
        with_changes(execution__maxErroredFraction="1.5"),
        "should match",
    ),
    "errored fraction as a number": (
        with_changes(execution__maxErroredFraction=0.1),
        "string",
    ),
    "zero unreachable bound": (
        with_changes(model__unreachableAfterSeconds=0),
        "greater than or equal to 1",
    ),
    "earlyStop Verdict without thresholds": (
        with_changes(execution__earlyStop={"when": "Verdict"}, thresholds=[]),
        "execution.earlyStop when Verdict requires thresholds",
    ),
    "earlyStop Precision without ciWidth": (
        with_changes(execution__earlyStop={"when": "Precision"}),
        "when Precision requires ciWidth",
    ),
    "earlyStop ciWidth with Verdict": (
        with_changes(
            execution__earlyStop={"when": "Verdict", "ciWidth": "0.05"},
            thresholds=["exact_match >= 0.8"],
        ),
        "ciWidth is used only with when Precision",
    ),
    "earlyStop confidence below a half": (
        with_changes(
            execution__earlyStop={"when": "Precision", "ciWidth": "0.1", "confidence": "0.4"}
        ),
        "should match",
    ),
    "earlyStop confidence of 1": (
        with_changes(
            execution__earlyStop={"when": "Precision", "ciWidth": "0.1", "confidence": "1"}
        ),
        "should match",
    ),
    "earlyStop confidence that rounds to 1": (
        with_changes(
            execution__earlyStop={
                "when": "Precision",
                "ciWidth": "0.1",
                "confidence": "0.99999999999999999",
            }
        ),
        "should match",
    ),
    "earlyStop zero width": (
        with_changes(execution__earlyStop={"when": "Precision", "ciWidth": "0.0"}),
        "should match",
    ),
    "sha256 not hex": (
        with_changes(
            dataset__builtin=None, dataset__url="https://e.com/d.jsonl", dataset__sha256="xyz"
        ),
        "should match",
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_bad_specs_are_rejected_at_admission_and_locally_with_the_same_message(schema, case):
    """Issue 7 item 14: each rule is written once and enforced in both places."""
    spec, expected = REJECTED[case]
    _, errors = admit(schema, spec)
    assert any(expected in e for e in errors), errors
    # The models (used by `eval-runner run` locally) reject the same input; a CEL rule (one
    # text, evaluated by both) says the same. Schema constraints (types, enums, bounds) come
    # from the same Field declarations, but each engine words its own message.
    cel_messages = {
        rule["message"]
        for _, node in _walk(schema, "")
        for rule in node.get("x-kubernetes-validations", [])
    }
    is_cel_rule = any(expected in message for message in cel_messages)
    with pytest.raises(ValidationError, match=re.escape(expected) if is_cel_rule else None):
        EvaluationSpec.model_validate(spec)


def test_long_names_are_rejected(schema):
    _, errors = admit(schema, BASE_SPEC, name="x" * 64)
    assert any("at most 63 characters" in e for e in errors)


def test_unknown_fields_are_pruned_by_the_server_but_rejected_locally(schema):
    spec = with_changes(model__temprature="0.2")
    obj, errors = admit(schema, spec)
    assert errors == [] and "temprature" not in obj["spec"]["model"]
    with pytest.raises(ValidationError, match="temprature"):
        EvaluationSpec.model_validate(spec)


def test_every_builtin_dataset_is_in_the_schema(schema):
    enum = schema["properties"]["spec"]["properties"]["dataset"]["properties"]["builtin"]["enum"]
    assert enum == list(BUILTIN_DATASETS)


ITERATION = re.compile(r"self((?:\.[A-Za-z]+)*)\.(?:all|exists|exists_one|filter|map)\((\w+),")


def _node_at(node, dotted):
    for name in [n for n in dotted.split(".") if n]:
        node = node["properties"][name]
    return node


def test_rules_that_iterate_only_see_bounded_values(schema):
    """The apiserver rejects a CRD whose CEL rules' *estimated* cost is too high, and it
    estimates from maxItems/maxLength (unbounded means ~3 MiB). So every list an iterating rule
    walks must be bounded, and so must every string it reads from the list's items."""
    checked = 0
    for path, node in _walk(schema, ""):
        for rule in [r["rule"] for r in node.get("x-kubernetes-validations", [])]:
            for walked, variable in ITERATION.findall(rule):
                target = _node_at(node, walked)
                assert "maxItems" in target, f"{path}{walked} is iterated by {rule!r} unbounded"
                for field_path in re.findall(rf"\b{variable}((?:\.\w+)+)", rule):
                    try:
                        read = _node_at(target["items"], field_path)
                    except KeyError:
                        continue  # a CEL function's name, not a field
                    if read.get("type") == "string":
                        assert "maxLength" in read, f"{rule!r} reads unbounded {field_path}"
                checked += 1
    assert checked >= 3  # unique scorer names, and the judges' pricing and maxTokens
