"""Every example manifest is one the API server admits and the runner accepts as is."""

from pathlib import Path

import pytest
import yaml

from eval_api.v1alpha1 import EvalSuite, Evaluation
from tests.support.kubeapi.schema import apply_defaults, prune, validate

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "evaluations.evals.io.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
SUITE_CRD = yaml.safe_load((ROOT / "crds" / "evalsuites.evals.io.yaml").read_text())
SUITE_SCHEMA = SUITE_CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
MODELS = {"Evaluation": (Evaluation, SCHEMA), "EvalSuite": (EvalSuite, SUITE_SCHEMA)}
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {"quickstart.yaml", "evalsuite.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_admitted_and_parses(path):
    for document in yaml.safe_load_all(path.read_text()):
        if document.get("kind") not in MODELS:
            continue
        model, schema = MODELS[document["kind"]]
        admitted = apply_defaults(prune(document, schema, root=True), schema)
        assert validate(admitted, schema, root=True) == []
        # Nothing in the example is silently pruned: every field is known to the schema.
        assert prune(document, schema, root=True) == document
        model.model_validate(document)


def test_the_runner_egress_policy_selects_the_runner_pods_the_operator_builds():
    from eval_operator.settings import OperatorSettings
    from tests.support.factories import evaluation, make_job
    from tests.support.kubeapi.admission import selector_matches

    (policy,) = yaml.safe_load_all(
        (ROOT / "examples" / "runner-egress-networkpolicy.yaml").read_text()
    )
    job = make_job(evaluation(namespace="team-a"), "quick-abc123", OperatorSettings())
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(policy["spec"]["podSelector"], labels)
    assert policy["spec"]["policyTypes"] == ["Egress"]
