"""Text normalisations shared by the comparing scorers."""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable

_ARTICLES = re.compile(r"\b(a|an|the)\b\s*", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def _is_punctuation(char: str) -> bool:
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def normalize(text: str, steps: Iterable[str]) -> str:
    """Applies the requested steps in one fixed order (the SQuAD order), so the result does not
    depend on how the list in the manifest is ordered."""
    wanted = set(steps)
    if "lowercase" in wanted:
        text = text.lower()
    if "strip_punctuation" in wanted:
        text = "".join(char for char in text if not _is_punctuation(char))
    if "remove_articles" in wanted:
        text = _ARTICLES.sub("", text)
    if "collapse_whitespace" in wanted:
        text = _WHITESPACE.sub(" ", text)
    if "strip" in wanted:
        text = text.strip()
    return text
