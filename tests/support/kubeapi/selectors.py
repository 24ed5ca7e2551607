"""Label and field selectors, with the apiserver's syntax and matching rules."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import bad_request

# A requirement is (key, operator, values); operators: = != in notin exists !exists gt lt.
Requirement = tuple[str, str, tuple[str, ...]]

_SET_TERM = re.compile(r"^\s*([^\s!=<>(),]+)\s+(in|notin)\s*\(([^()]*)\)\s*$")
_CMP_TERM = re.compile(r"^\s*([^\s!=<>(),]+)\s*(==|=|!=|>|<)\s*([^\s!=<>(),]*)\s*$")
_KEY_TERM = re.compile(r"^\s*(!?)\s*([^\s!=<>(),]+)\s*$")


def _split_terms(text: str) -> list[str]:
    """Split on commas outside of parentheses: ``a in (x,y),b`` has two terms."""
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [term for term in terms if term.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    requirements: list[Requirement] = []
    for term in _split_terms(text or ""):
        if m := _SET_TERM.match(term):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            requirements.append((m.group(1), m.group(2), values))
        elif m := _CMP_TERM.match(term):
            op = "=" if m.group(2) == "==" else m.group(2)
            if op in (">", "<") and not re.fullmatch(r"-?\d+", m.group(3)):
                raise bad_request(
                    f"unable to parse requirement: {term!r}: "
                    f"for > and < operators, the value must be an integer"
                )
            requirements.append((m.group(1), {">": "gt", "<": "lt"}.get(op, op), (m.group(3),)))
        elif m := _KEY_TERM.match(term):
            requirements.append((m.group(2), "!exists" if m.group(1) else "exists", ()))
        else:
            raise bad_request(f"unable to parse requirement: {term!r}")
    return requirements


def labels_match(labels: Mapping[str, str] | None, requirements: Iterable[Requirement]) -> bool:
    labels = labels or {}
    for key, op, values in requirements:
        present, value = key in labels, labels.get(key)
        if op == "=" and value != values[0]:
            return False
        if op == "!=" and present and value == values[0]:  # absent keys match "!="
            return False
        if op == "in" and value not in values:
            return False
        if op == "notin" and present and value in values:  # absent keys match "notin"
            return False
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
        if op in ("gt", "lt"):
            if value is None or not re.fullmatch(r"-?\d+", value):
                return False
            if op == "gt" and not int(value) > int(values[0]):
                return False
            if op == "lt" and not int(value) < int(values[0]):
                return False
    return True


# A field requirement: (dotted path, operator "=" or "!=", value).
FieldRequirement = tuple[str, str, str]


def parse_field_selector(text: str | None, supported: Iterable[str]) -> list[FieldRequirement]:
    requirements: list[FieldRequirement] = []
    supported = set(supported)
    for term in _split_terms(text or ""):
        m = re.fullmatch(r"\s*([^\s!=]+)\s*(==|=|!=)\s*(.*?)\s*", term)
        if not m:
            raise bad_request(f"invalid selector: {text!r}; can't understand {term!r}")
        if m.group(1) not in supported:
            raise bad_request(f"field label not supported: {m.group(1)}")
        requirements.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return requirements


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if node is None:
        return ""  # the apiserver compares absent fields as empty strings
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def fields_match(obj: Mapping[str, Any], requirements: Iterable[FieldRequirement]) -> bool:
    for path, op, value in requirements:
        if (_field_value(obj, path) == value) != (op == "="):
            return False
    return True


def make_matcher(
    labels: list[Requirement], fields: list[FieldRequirement]
) -> Callable[[Mapping[str, Any]], bool]:
    def matches(obj: Mapping[str, Any]) -> bool:
        metadata = obj.get("metadata") or {}
        return labels_match(metadata.get("labels"), labels) and fields_match(obj, fields)

    return matches
