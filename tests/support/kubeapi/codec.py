"""
Request bodies as the apiserver reads them: JSON, and YAML for server-side apply.

The apiserver reads YAML with sigs.k8s.io/yaml (go-yaml v2, YAML 1.1): ``y``/``n``, ``yes``/
``no`` and ``on``/``off`` are booleans, timestamps stay strings, and keys that are not
strings (``on:`` is a boolean key) become their JSON text ("true"). PyYAML does the parsing;
this module only teaches its loader those rules.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

_GO_BOOLS = {
    **dict.fromkeys(
        ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True
    ),
    **dict.fromkeys(
        ("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False
    ),
}


class GoYAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader with go-yaml v2's implicit types."""


GoYAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
GoYAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(
        r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE"
        r"|on|On|ON|off|Off|OFF)$"
    ),
    list("yYnNtTfFoO"),
)


def _construct_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return _GO_BOOLS[loader.construct_scalar(node)]


GoYAMLLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def _jsonable(value: Any) -> Any:
    """sigs.k8s.io/yaml's YAMLToJSON: every map key becomes a string."""
    if isinstance(value, dict):
        return {_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return json.dumps(key)
    return str(key)


def load_yaml(raw: bytes) -> Any:
    """One YAML (or JSON) document, with the apiserver's YAML rules; raises ValueError."""
    text = raw.decode("utf-8")
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            pass  # YAML flow style that is not JSON: let the YAML parser read it
    try:
        return _jsonable(yaml.load(text, Loader=GoYAMLLoader))  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        raise ValueError(f"error converting YAML to JSON: {e}") from None
