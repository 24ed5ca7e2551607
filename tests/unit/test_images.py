"""Dockerfile.operator and Dockerfile.runner, read with Docker's own parser (no engine here).

Images cannot be built on the test machines, so what matters about them is checked statically:
multi-stage from one pinned base, a numeric non-root USER that matches what the chart and the
Job builder run as, nothing that installs or builds in the final stage, OCI labels, an exec-form
entrypoint that exists, a .dockerignore that lets in what the build copies. And the packages
each image installs (an extra of pyproject) provide every module its code imports.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from importlib.metadata import packages_distributions
from pathlib import Path

import dockerfile
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from eval_operator.builders.job import RUNNER_UID

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {
    "Dockerfile.operator": {"extra": "operator", "entrypoint": "kopf", "title": "eval-operator"},
    "Dockerfile.runner": {"extra": "runner", "entrypoint": "eval-runner", "title": "eval-runner"},
}
OCI_LABELS = ("title", "description", "version", "revision", "created", "licenses", "base.name")
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|apk|gcc|g\+\+|make|build-essential|curl|wget)\b")


def commands(name: str) -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(ROOT / name)))


def stages(name: str) -> list[list[dockerfile.Command]]:
    result: list[list[dockerfile.Command]] = []
    for command in commands(name):
        if command.cmd == "FROM":
            result.append([])
        if result:
            result[-1].append(command)
    return result


def arg_defaults(name: str) -> dict[str, str]:
    defaults = {}
    for command in commands(name):
        if command.cmd == "ARG" and "=" in command.value[0]:
            key, value = command.value[0].split("=", 1)
            defaults[key] = value
    return defaults


@pytest.mark.parametrize("name", IMAGES)
def test_multi_stage_from_one_pinned_base(name: str) -> None:
    froms = [c.value for c in commands(name) if c.cmd == "FROM"]
    assert len(froms) >= 2, "build and final stages"
    assert all(value[0] == "${PYTHON_IMAGE}" for value in froms)
    base = arg_defaults(name)["PYTHON_IMAGE"]
    image, _, digest = base.partition("@")
    repository, _, tag = image.rpartition(":")
    assert repository == "python" and re.fullmatch(r"3\.11\.\d+-slim-bookworm", tag), base
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), base
    assert "latest" not in (ROOT / name).read_text()


def test_both_images_share_the_same_base() -> None:
    bases = {arg_defaults(name)["PYTHON_IMAGE"] for name in IMAGES}
    assert len(bases) == 1


@pytest.mark.parametrize("name", IMAGES)
def test_final_stage_runs_as_the_numeric_uid_the_cluster_expects(name: str) -> None:
    final = stages(name)[-1]
    (user,) = [c.value[0] for c in final if c.cmd == "USER"]
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user} must be numeric uid:gid"
    uid, gid = (int(part) for part in user.split(":"))
    assert uid == gid == RUNNER_UID != 0
    values = yaml.safe_load((ROOT / "charts" / "eval-operator" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == uid
    assert [c.cmd for c in final].index("USER") > max(
        i for i, c in enumerate(final) if c.cmd in ("RUN", "COPY")
    ), "USER comes after every RUN and COPY of the final stage"


@pytest.mark.parametrize("name", IMAGES)
def test_final_stage_installs_and_builds_nothing(name: str) -> None:
    final = stages(name)[-1]
    runs = [" ".join(c.value) for c in final if c.cmd == "RUN"]
    # The one RUN allowed removes the base image's installer.
    for run in runs:
        assert re.fullmatch(r"python -m pip uninstall --yes .*", run), run
    assert not [c for c in final if c.cmd == "ADD"]
    copies = [c for c in final if c.cmd == "COPY"]
    assert copies and all(c.flags == ("--from=build",) for c in copies)
    assert [c.value for c in copies] == [("/opt/venv", "/opt/venv")]
    build_runs = " ".join(" ".join(c.value) for c in stages(name)[0] if c.cmd == "RUN")
    assert "pip uninstall --yes pip setuptools" in build_runs, "the venv carries no installer"
    assert not BUILD_TOOLS.search(build_runs), (
        "the build needs no system packages or compilers: every dependency ships a wheel"
    )


@pytest.mark.parametrize("name", IMAGES)
def test_labels_environment_and_entrypoint(name: str) -> None:
    final = stages(name)[-1]
    labels: dict[str, str] = {}
    for command in final:
        if command.cmd == "LABEL":
            pairs = command.value
            labels.update({pairs[i]: pairs[i + 1].strip('"') for i in range(0, len(pairs), 2)})
    for key in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{key}"), f"{name} lacks label {key}"
    assert labels["org.opencontainers.image.title"] == IMAGES[name]["title"]
    env = {}
    for command in final:
        if command.cmd == "ENV":
            pairs = command.value
            env.update({pairs[i]: pairs[i + 1] for i in range(0, len(pairs), 2)})
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # read-only root filesystem
    assert env["HOME"] == "/tmp"  # the only writable path in the pod (an emptyDir)
    (entrypoint,) = [c for c in final if c.cmd == "ENTRYPOINT"]
    assert entrypoint.json, "exec form: signals reach the process"
    assert list(entrypoint.value) == [IMAGES[name]["entrypoint"]]


def test_entrypoints_exist() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "eval-runner" in scripts  # the runner's entrypoint; kopf's comes with kopf
    (cmd,) = [c for c in stages("Dockerfile.operator")[-1] if c.cmd == "CMD"]
    assert list(cmd.value[-2:]) == ["-m", "eval_operator.main"]
    assert "--standalone" in cmd.value


def test_dockerignore_lets_in_exactly_what_the_builds_copy() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "deny by default"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for name in IMAGES:
        for command in stages(name)[0]:
            if command.cmd == "COPY" and not command.flags:
                for source in command.value[:-1]:
                    assert source.rstrip("/") in allowed, f"{name} copies {source}, ignored"
                    assert (ROOT / source).exists()


# --- what each image installs provides what its code imports ----------------------------------


def _imports(paths: list[Path]) -> set[str]:
    found = set()
    for directory in paths:
        for path in directory.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"__future__"}


def _installed_by(extra: str) -> set[str]:
    """The distributions `pip install '.[extra]'` installs: the requirements and theirs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pending = [Requirement(r) for r in project["dependencies"]]
    pending += [Requirement(r) for r in project["optional-dependencies"][extra]]
    installed: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in installed:
            continue
        installed.add(name)
        try:
            below = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not in this venv: its own requirements are unknown here
        for text in below:
            sub = Requirement(text)
            wanted = ["", *sorted(requirement.extras)]
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in wanted):
                pending.append(sub)
    return installed


# The source roots each image copies, and the packages they hold.
CODE_OF_IMAGE = {
    "runner": {"api": "eval_api", "runner": "eval_runner"},
    "operator": {"api": "eval_api", "operator": "eval_operator"},
}
DOCKERFILE_OF = {"runner": "Dockerfile.runner", "operator": "Dockerfile.operator"}


@pytest.mark.parametrize("extra", CODE_OF_IMAGE)
def test_each_image_copies_only_its_own_packages(extra: str) -> None:
    """The runner image carries no operator code and the operator image no runner code."""
    copied = [
        command.value[0].rstrip("/")
        for command in stages(DOCKERFILE_OF[extra])[0]
        if command.cmd == "COPY" and command.value[0].rstrip("/") not in ("pyproject.toml",)
    ]
    assert sorted(copied) == sorted(CODE_OF_IMAGE[extra]), copied
    ours = {"eval_api", "eval_operator", "eval_runner"}
    imported = _imports([ROOT / root / package for root, package in CODE_OF_IMAGE[extra].items()])
    foreign = imported & ours - set(CODE_OF_IMAGE[extra].values())
    assert not foreign, f"the {extra} image's code imports {foreign}, which it does not carry"


@pytest.mark.parametrize("extra", CODE_OF_IMAGE)
def test_each_image_installs_every_package_its_code_imports(extra: str) -> None:
    distributions = packages_distributions()
    provided = _installed_by(extra)
    missing = {}
    paths = [ROOT / root / package for root, package in CODE_OF_IMAGE[extra].items()]
    for module in _imports(paths) - {"eval_api", "eval_operator", "eval_runner"}:
        names = {canonicalize_name(d) for d in distributions.get(module, [module])}
        if not names & provided:
            missing[module] = sorted(names)
    assert not missing, (
        f"the {extra} image (pip install '.[{extra}]') lacks what the code imports: {missing}; "
        f"add it to [project.optional-dependencies] {extra}"
    )
