"""The results file: the machine, the targets, every group's table; as Markdown and as JSON."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import pathlib
import platform
from collections.abc import Sequence
from typing import Any

from ._harness import Table

PACKAGES = ("xclient", "tritonclient", "nvidia-pytriton", "grpcio", "numpy", "langchain-core")

NOISE = (
    "This machine is shared: other engineers' test suites (each with its own Triton server) ran during "
    "this run, on the same 2 cores. Interleaving (round-robin, order rotated every round, warm-up rounds "
    "discarded) spreads that noise over every contender alike, so the ratios are fairer than the absolute "
    "numbers, but both move between runs, by several percent for the latency ratios and more for throughput. "
    "The per-round ratio columns show the spread. Rerun on a quiet machine for final figures."
)


def machine(server_version: str | None) -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(_meminfo_kb("MemTotal") / 1024**2, 1),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "triton_server": server_version,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "packages": {name: _version(name) for name in PACKAGES},
    }


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _meminfo_kb(key: str) -> float:
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return math.nan


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def targets_table(tables: Sequence[Table]) -> Table:
    """Every target of every group, pass or miss."""
    summary = Table("Targets", ["target", "goal", "measured", "status"])
    for table in tables:
        for target in table.targets:
            summary.add(
                {"target": target.name, "goal": target.goal, "measured": target.measured, "status": target.status},
                **dataclasses.asdict(target),
            )
    return summary


def markdown(title: str, command: str, info: dict[str, Any], tables: Sequence[Table], duration_s: float) -> str:
    packages = ", ".join(f"{name} {version or '-'}" for name, version in info["packages"].items())
    lines = [
        f"# {title}",
        "",
        f"`{command}`, {info['date']}, {duration_s:.0f} s.",
        "",
        "## Machine",
        "",
        f"- {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; {info['os']}",
        f"- {info['python']}; Triton server {info['triton_server'] or '-'} (the nvidia-pytriton wheel's binary)",
        f"- {packages}",
        f"- load average at the start {info['load_average']}, at the end {info.get('load_average_end', '-')}",
        "",
        "## Noise",
        "",
        NOISE,
        "",
        "## Results",
        "",
    ]
    lines += [table.markdown() for table in tables]
    return "\n".join(lines)


def write(
    directory: pathlib.Path,
    stem: str,
    title: str,
    command: str,
    info: dict[str, Any],
    tables: Sequence[Table],
    duration_s: float,
) -> tuple[pathlib.Path, str]:
    """Write ``<stem>.md`` and ``<stem>.json``; the Markdown path and text."""
    directory.mkdir(parents=True, exist_ok=True)
    text = markdown(title, command, info, tables, duration_s)
    document = {
        "title": title,
        "command": command,
        "duration_s": round(duration_s, 1),
        "machine": info,
        "noise": NOISE,
        "groups": [
            {"group": t.group, "columns": t.columns, "rows": t.rows, "notes": t.notes, "data": t.data} for t in tables
        ],
    }
    md_path = directory / f"{stem}.md"
    md_path.write_text(text)
    (directory / f"{stem}.json").write_text(json.dumps(_plain(document), indent=1) + "\n")
    return md_path, text


def _plain(value: Any) -> Any:
    """Plain JSON values: numpy scalars as Python numbers, NaN as null, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
