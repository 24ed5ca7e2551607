"""`make bench-datasets`: Hub-sized datasets through the runner's reading and prompting.

    python bench/datasets.py [--rows 1000000] [--shards 8]

1. MMLU-shaped: 14,042 rows (cais/mmlu's test split) in a parquet file, read as a shard reads
   a Hub split (eval_runner.dataset._hub_samples), and every prompt rendered as lm-eval renders
   MMLU 5-shot (eval_runner.lmeval: the description, five first_n examples from dev, the
   question): seconds for each (goal: load and render under 2 s).
2. A large split: --rows rows of ~1 KB (a 1 GB-class split) in parquet, one shard of --shards
   read in a process of its own: its peak RSS (VmHWM) against the file's size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "api"), str(ROOT / "runner"), str(ROOT)]

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from eval_api.lmeval.config import load_task  # noqa: E402
from eval_api.v1alpha1 import DatasetSpec  # noqa: E402
from eval_runner.dataset import _hub_samples  # noqa: E402
from eval_runner.lmeval.prompts import Prompts, fewshot_examples  # noqa: E402

MMLU_TEST_ROWS = 14_042
MMLU_TASK = """
task: mmlu_bench
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
output_type: multiple_choice
doc_to_text: "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}\\n\\
  D. {{choices[3]}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
description: "The following are multiple choice questions (with answers) about \\
  {{ subject | replace('_', ' ') }}.\\n\\n"
num_fewshot: 5
metric_list:
  - metric: acc
"""
HUB = {"repo": "bench/mmlu", "revision": "v1"}


def mmlu_rows(count: int, subject: str) -> list[dict]:
    return [
        {
            "question": f" Which of these statements about item {i} of {subject} holds? ",
            "subject": subject,
            "choices": [f"Statement {i}-{c} about {subject}" for c in "abcd"],
            "answer": i % 4,
        }
        for i in range(count)
    ]


def mmlu(tmp: Path) -> None:
    test = tmp / "test.parquet"
    pq.write_table(pa.Table.from_pylist(mmlu_rows(MMLU_TEST_ROWS, "college_physics")), test)
    dev = mmlu_rows(5, "college_physics")
    spec = DatasetSpec.model_validate(
        {"huggingface": HUB, "inputField": "question", "targetField": "answer"}
    )
    task = load_task(MMLU_TASK, "mmlu_bench")
    started = time.perf_counter()
    samples = _hub_samples((test,), spec, None, 0, 1)
    loaded = time.perf_counter() - started
    docs = [s.record for s in samples]
    prompts = Prompts(task, list(docs[0]))
    draws = fewshot_examples(task, docs, dev)
    contexts = [
        prompts.context(doc, [dev[i] for i in picked], False)
        for doc, picked in zip(docs, draws, strict=True)
    ]
    rendered = time.perf_counter() - started - loaded
    total = loaded + rendered
    print(
        f"MMLU-shaped: {len(samples):,} rows loaded in {loaded:.2f} s, {len(contexts):,} 5-shot "
        f"prompts rendered in {rendered:.2f} s: {total:.2f} s in all (goal < 2 s)"
    )


CHILD = """
import json, resource, sys
sys.path[:0] = {paths!r}
from eval_api.v1alpha1 import DatasetSpec
from eval_runner.dataset import _hub_samples
from pathlib import Path
spec = DatasetSpec.model_validate({spec!r})
samples = _hub_samples((Path({path!r}),), spec, None, {shard}, {shards})
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"samples": len(samples), "peak_kib": int(peak)}}))
"""


def large(tmp: Path, rows: int, shards: int) -> None:
    path = tmp / "large.parquet"
    writer = None
    filler = "x" * 900
    for start in range(0, rows, 100_000):
        chunk = [
            {"question": f"q{i} {filler}", "answer": str(i % 10), "id": i}
            for i in range(start, min(rows, start + 100_000))
        ]
        table = pa.Table.from_pylist(chunk)
        writer = writer or pq.ParquetWriter(path, table.schema, compression="none")
        writer.write_table(table, row_group_size=50_000)
    assert writer is not None
    writer.close()
    spec = {"huggingface": HUB, "inputField": "question", "targetField": "answer"}
    paths = [str(ROOT / "api"), str(ROOT / "runner")]
    code = CHILD.format(paths=paths, spec=spec, path=str(path), shard=0, shards=shards)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    took = time.perf_counter() - started
    result = json.loads(done.stdout)
    size = os.path.getsize(path) / 2**20
    print(
        f"large split: {rows:,} rows, {size:,.0f} MiB of parquet; shard 0 of {shards} kept "
        f"{result['samples']:,} samples in {took:.1f} s, "
        f"peak RSS {result['peak_kib'] / 1024:,.0f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/datasets.py", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-datasets-") as tmp:
        mmlu(Path(tmp))
        large(Path(tmp), args.rows, args.shards)
    return 0


if __name__ == "__main__":
    sys.exit(main())
