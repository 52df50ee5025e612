"""The benchmark still runs: ``python -m benchmarks --quick`` completes and writes well-formed tables.

No timing is asserted here (the figures of a quick run on a shared machine mean little); only that
every group ran and produced its table, in Markdown and in JSON.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
GROUP_TITLES = (
    "1. Sync latency",
    "1b. Sync latency, one 4 MB FP32 tensor",
    "2. Throughput",
    "3. Streaming",
    "5. Cold start",
    "6. Client-side cost",
    "9. Fleets",
)


@pytest.mark.timeout(300)
def test_quick_benchmark_runs_and_writes_its_tables(tmp_path: pathlib.Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    markdown = (tmp_path / "quick.md").read_text()
    for title in ("## Machine", "### Targets", *GROUP_TITLES):
        assert title in markdown
    for table in markdown.split("\n### ")[1:]:
        rows = [line for line in table.splitlines() if line.startswith("|")]
        assert len(rows) >= 3, table  # header, separator, at least one row
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
        assert len(widths) == 1, table  # every row has the header's columns

    document = json.loads((tmp_path / "quick.json").read_text())
    assert document["machine"]["cores"] >= 1 and document["machine"]["packages"]["tritonclient"]
    groups = {group["group"].split(" ")[0] for group in document["groups"]}
    assert {"Targets", "1.", "1b.", "2.", "3.", "5.", "6.", "9."} <= groups
    for group in document["groups"]:
        assert group["rows"] and all(set(row) == set(group["columns"]) for row in group["rows"])
