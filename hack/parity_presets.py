"""`make parity` (second half): lm-eval's own task files of the presets, as lm-eval resolves them
(includes merged), into tests/parity/presets.json, so that `make test` checks our presets
(api/eval_api/lmeval/presets/*.yaml) field by field against them without lm-eval installed.

Where lm-eval's task runs Python (hellaswag's process_docs, winogrande's three functions), what
those functions give on probe docs is recorded instead: our templates must give the same.
Runs under lm-eval's own venv (it imports lm_eval):

    .parity/venv/bin/python hack/parity_presets.py
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path
from typing import Any

import lm_eval
from lm_eval.tasks._yaml_loader import load_yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "parity" / "presets.json"
TASKS = Path(lm_eval.__file__).parent / "tasks"
# Our preset (or its variant) -> lm-eval's task file it follows.
FILES = {
    "gsm8k": "gsm8k/gsm8k.yaml",
    "mmlu": "mmlu/default/mmlu_abstract_algebra.yaml",
    "mmlu_generative": "mmlu/generative/mmlu_abstract_algebra.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "truthfulqa_mc1": "truthfulqa/truthfulqa_mc1.yaml",
    "winogrande": "winogrande/default.yaml",
}
HELLASWAG_PROBES = [
    {"activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.",
     "ctx_b": "then", "endings": [" a [title] Step one [header] done ", "b  c", "[x] d", "e"],
     "label": "2"},
    {"activity_label": "Cooking", "ctx_a": "  A man [step] cuts  ", "ctx_b": "HE THEN Eats",
     "endings": ["ends [title]", " [a][b] two  spaces  here", "x", "y"], "label": "0"},
]  # fmt: skip
WINOGRANDE_PROBES = [
    {"sentence": "The cup did not fit in the bag because _ was too big.", "option1": "cup",
     "option2": "bag", "answer": "1"},
    {"sentence": "Sam helped Max because _ was kind_ and generous. ", "option1": "Sam",
     "option2": "Max", "answer": "2"},
]  # fmt: skip


def plain(value: Any) -> Any:
    if callable(value):
        return f"!function {value.__module__}.{value.__name__}"
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def main() -> int:
    found: dict[str, Any] = {"lm_eval": importlib.metadata.version("lm_eval"), "tasks": {}}
    for name, path in FILES.items():
        found["tasks"][name] = plain(load_yaml(TASKS / path))
    hellaswag = load_yaml(TASKS / "hellaswag" / "hellaswag.yaml")
    import datasets

    processed = hellaswag["process_docs"](datasets.Dataset.from_list(HELLASWAG_PROBES))
    found["probes"] = {
        "hellaswag": [
            {"doc": d, "processed": dict(p)}
            for d, p in zip(HELLASWAG_PROBES, processed, strict=True)
        ],
        "winogrande": [],
    }
    winogrande = load_yaml(TASKS / "winogrande" / "default.yaml")
    for doc in WINOGRANDE_PROBES:
        found["probes"]["winogrande"].append(
            {
                "doc": doc,
                "text": winogrande["doc_to_text"](doc),
                "choice": winogrande["doc_to_choice"](doc),
                "target": winogrande["doc_to_target"](doc),
            }
        )
    OUT.write_text(json.dumps(found, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote lm-eval {found['lm_eval']}'s preset task files to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
