"""`make parity`: lm-eval's own per-sample output for the parity tasks, kept as a golden file.

lm-evaluation-harness (LM_EVAL_VERSION, in its own venv, .parity/venv: `make parity` makes it)
runs tests/parity/tasks/*.yaml with `local-completions`, and the generate_until ones again with
`local-chat-completions` and a chat template, against the deterministic completions server
(tests/support/completions_server.py) on the rows in tests/parity/data, and writes
--log_samples. This keeps, per API, task, filter and doc: the requests' arguments (the prompt, the
continuation), the raw responses, the filtered answer and the metric values, in
tests/parity/golden.jsonl. tests/integration/test_lmeval_runs.py holds eval_runner.lmeval to it.

    python hack/parity.py [--lm-eval .parity/venv/bin/lm_eval]
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "api"), str(ROOT / "runner"), str(ROOT)]

from tests.support.completions_server import CompletionsServer  # noqa: E402

from eval_runner.lmeval import LM_EVAL_VERSION  # noqa: E402

PARITY = ROOT / "tests" / "parity"
GOLDEN = PARITY / "golden.jsonl"
# The data file of each split a parity task reads: tests/parity/data/<task stem>_<split>.jsonl.
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


def lm_eval_variant(task: dict, data: Path) -> dict:
    """The task as lm-eval reads it here: the same fields, its splits from local files."""
    stem = task["task"].removeprefix("parity_")
    splits = {task[k] for k in SPLIT_KEYS if task.get(k)}
    files = {split: str(data / f"{stem}_{split}.jsonl") for split in sorted(splits)}
    return {**task, "dataset_path": "json", "dataset_kwargs": {"data_files": files}}


# How lm-eval asks each model API: its model and the arguments that go with it. The chat pass
# runs the generate_until tasks through a chat template (few-shot examples as turns, lm-eval's
# default with one); a chat API has no log-likelihoods for the multiple_choice ones.
PASSES = {
    "Completions": ("local-completions", "completions", ",tokenizer_backend=remote", []),
    "ChatCompletions": (
        "local-chat-completions", "chat/completions", "", ["--apply_chat_template"]
    ),
}  # fmt: skip


def run_lm_eval(
    lm_eval: str, api: str, tasks: list[dict], include: Path, out: Path, base_url: str
) -> list[dict]:
    """lm-eval's per-sample rows for `tasks` asked through `api`."""
    model, path, model_args, flags = PASSES[api]
    done = subprocess.run(
        [lm_eval, "--model", model, "--model_args",
         f"model=parity,base_url={base_url}/{path},num_concurrent=1,max_retries=1{model_args}",
         "--tasks", ",".join(t["task"] for t in tasks), *flags,
         "--include_path", str(include), "--log_samples", "--output_path", str(out),
         "--seed", "0,1234,1234,1234"],
        capture_output=True, text=True, cwd=include.parent,
    )  # fmt: skip
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-6000:])
        raise SystemExit(done.returncode)
    print(done.stdout[-2500:])
    rows = []
    for task in tasks:
        (path,) = glob.glob(str(out / "parity" / f"samples_{task['task']}_*.jsonl"))
        for line in Path(path).read_text().splitlines():
            sample = json.loads(line)
            arguments = []
            for key in sorted(sample["arguments"], key=lambda k: int(k.split("_")[-1])):
                context = sample["arguments"][key]["arg_0"]
                if api == "ChatCompletions":  # the messages, as JSON text in a list of one
                    context = json.loads(context[0])
                arguments.append([context, sample["arguments"][key]["arg_1"]])
            rows.append(
                {
                    "api": api,
                    "task": task["task"],
                    "doc_id": sample["doc_id"],
                    "filter": sample["filter"],
                    "arguments": arguments,
                    "resps": sample["resps"],
                    "filtered_resps": sample["filtered_resps"],
                    "metrics": {m: sample[m] for m in sample["metrics"]},
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/parity.py", description=__doc__)
    parser.add_argument("--lm-eval", default=str(ROOT / ".parity" / "venv" / "bin" / "lm_eval"))
    args = parser.parse_args(argv)
    args.lm_eval = str(Path(args.lm_eval).absolute())
    python = Path(args.lm_eval).with_name("python")
    found = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('lm_eval'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if found != LM_EVAL_VERSION:
        print(f"{args.lm_eval} is lm_eval {found}; the parity file is for {LM_EVAL_VERSION}")
        return 2
    tasks = {
        p.stem: yaml.safe_load(p.read_text()) for p in sorted((PARITY / "tasks").glob("*.yaml"))
    }
    generative = [t for t in tasks.values() if t["output_type"] == "generate_until"]
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="parity-") as tmp,
        CompletionsServer().in_thread() as server,
    ):
        include = Path(tmp) / "tasks"
        include.mkdir()
        for name, task in tasks.items():
            variant = lm_eval_variant(task, PARITY / "data")
            (include / f"{name}.yaml").write_text(yaml.safe_dump(variant, sort_keys=False))
        for api, asked in (("Completions", list(tasks.values())), ("ChatCompletions", generative)):
            out = Path(tmp) / f"out-{api}"
            rows += run_lm_eval(args.lm_eval, api, asked, include, out, server.base_url)
    rows.sort(key=lambda r: (r["api"], r["task"], r["filter"], r["doc_id"]))
    header = {
        "lm_eval": LM_EVAL_VERSION,
        "model": "local-completions and local-chat-completions (--apply_chat_template) against "
        "tests/support/completions_server.py",
        "command": "make parity",
    }
    with GOLDEN.open("w") as golden:
        for row in [header, *rows]:
            golden.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"wrote {len(rows)} samples of {len(tasks)} tasks to {GOLDEN.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
