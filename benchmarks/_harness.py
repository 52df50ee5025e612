"""What every benchmark group shares: contenders, the interleaved runner, statistics, result tables.

Interleaving: each round runs every contender once, in an order rotated by one place per round, so
a burst of load from elsewhere on the machine falls on all contenders alike rather than on whichever
happened to run at that moment. Warm-up rounds run the same way and are thrown away.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import statistics
from collections.abc import Callable, Sequence
from typing import Any

RAW, PYTRITON, XCLIENT = "raw", "pytriton", "xclient"
LIBRARY_NAMES = {RAW: "raw tritonclient", PYTRITON: "PyTriton", XCLIENT: "Xclient"}


@dataclasses.dataclass
class Contender:
    """One client in a comparison. ``run()`` makes one round's measurement (a number, or a list of
    samples) with objects made beforehand; ``kind`` pairs a client with its PyTriton counterpart."""

    library: str
    label: str
    protocol: str
    run: Callable[[], Any]
    kind: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. concurrency, model


@dataclasses.dataclass
class Outcome:
    """A contender's measurements, one entry per kept round, or the error that stopped it."""

    contender: Contender
    rounds: list[Any] = dataclasses.field(default_factory=list)
    error: str | None = None

    def samples(self) -> list[float]:
        """Every sample of every kept round (rounds that measured a list of samples)."""
        return [sample for values in self.rounds for sample in values]


def interleave(contenders: Sequence[Contender], rounds: int, warmup: int = 1) -> list[Outcome]:
    """Run ``warmup + rounds`` rounds, rotating the order each round; a contender that raises is
    dropped from later rounds and keeps its error (PyTriton's known failures show up that way)."""
    outcomes = [Outcome(c) for c in contenders]
    for index in range(warmup + rounds):
        shift = index % len(outcomes) if outcomes else 0
        for outcome in outcomes[shift:] + outcomes[:shift]:
            if outcome.error is not None:
                continue
            try:
                value = outcome.contender.run()
            except Exception as e:  # a failing contender is a result, not a crash
                outcome.error = describe_error(e)
                continue
            if index >= warmup:
                outcome.rounds.append(value)
    return outcomes


def describe_error(error: BaseException) -> str:
    """``Type: first line of the message``, short enough for a table cell."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 120 else text[:117] + "..."


# -- statistics -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linearly interpolated; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ratio(value: float | None, floor: float | None) -> float | None:
    """``value / floor``, or None when either is missing."""
    if value is None or floor is None or math.isnan(value) or math.isnan(floor) or floor == 0:
        return None
    return value / floor


def round_ratios(outcome: Outcome, floor: Outcome, per_round: Callable[[Any], float]) -> list[float]:
    """The ratio to the floor of each round both contenders kept (the spread shows the noise)."""
    pairs = zip(outcome.rounds, floor.rounds, strict=False)
    return [r for a, b in pairs if (r := ratio(per_round(a), per_round(b))) is not None]


def find(outcomes: Sequence[Outcome], **match: Any) -> Outcome | None:
    """The outcome whose contender has every attribute (or ``extra`` entry) given."""
    for outcome in outcomes:
        contender = outcome.contender
        if all(getattr(contender, k, contender.extra.get(k)) == v for k, v in match.items()):
            return outcome
    return None


# -- formatting ---------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}{unit}"


def fmt_ratio(value: float | None) -> str:
    """``1.03x``; two significant digits below 0.1 (``0.0013x``)."""
    if value is None:
        return "-"
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"


def fmt_spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if values else "-"


@dataclasses.dataclass
class Target:
    """A number our users compare: the goal, what was measured, and pass or miss."""

    name: str
    goal: str
    measured: str
    passed: bool | None  # None: not measured (a failure, or the group did not run)

    @property
    def status(self) -> str:
        return {True: "pass", False: "MISS", None: "n/a"}[self.passed]


@dataclasses.dataclass
class Table:
    """One group's results: rows of column -> text, notes, and the targets it checks."""

    group: str
    columns: list[str]
    rows: list[dict[str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    targets: list[Target] = dataclasses.field(default_factory=list)
    data: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # the raw numbers, for the JSON

    @classmethod
    def from_templates(cls, title: str, columns: Sequence[str], notes: Sequence[str], **values: Any) -> Table:
        """A table whose title, columns and notes are ``str.format`` templates, filled with ``values``."""
        filled = [c.format(**values) for c in columns]
        return cls(title.format(**values), filled, notes=[n.format(**values) for n in notes])

    def add(self, row: dict[str, str], **data: Any) -> None:
        self.rows.append(row)
        self.data.append(data)

    def add_result(self, outcome: Outcome, cells: dict[str, str], passed: bool | None = None, **numbers: Any) -> None:
        """A row for ``outcome``: its protocol, client, error and verdict filled in; ``cells`` the rest
        (a cell of a column this table lacks is left out). ``numbers`` go to the JSON."""
        contender = outcome.contender
        row = {"protocol": contender.protocol, "client": client_name(contender), "target": status_cell(passed)}
        row.update(cells)
        self.add(
            {column: row.get(column, "") for column in self.columns},
            protocol=contender.protocol,
            library=contender.library,
            client=contender.label,
            **contender.extra,
            **numbers,
            passed=passed,
            error=outcome.error,
        )

    def markdown(self) -> str:
        lines = [f"### {self.group}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            cells = (row.get(column, "").replace("|", "\\|") for column in self.columns)
            lines.append("| " + " | ".join(cells) + " |")
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def verdict(checked: bool, outcome: Outcome, value: float | None, ok: Callable[[float], bool]) -> bool | None:
    """A target's verdict on one row: None when it does not apply or cannot be judged (the floor
    failed), False when the client itself failed, else ``ok(value)``."""
    if not checked:
        return None
    if outcome.error:
        return False
    return None if value is None or math.isnan(value) else ok(value)


def status_cell(passed: bool | None) -> str:
    return {True: "pass", False: "MISS", None: ""}[passed]


def ratio_cell(contender: Contender, value: float | None) -> str:
    """A ratio to the floor, or ``floor`` on the floor's own row."""
    return "floor" if contender.library == RAW else fmt_ratio(value)


def client_name(contender: Contender) -> str:
    """``Xclient ModelClient``: the library and the client, as the tables name a contender."""
    return f"{LIBRARY_NAMES[contender.library]} {contender.label}"


def scaled(seconds: float | None, factor: float = 1e6) -> float | None:
    """Seconds in another unit (1e6: microseconds, 1e3: milliseconds); None stays None."""
    return None if seconds is None else seconds * factor


def made_in_loop(loop: asyncio.AbstractEventLoop, factory: Callable[[], Any]) -> Any:
    """``factory()`` called inside ``loop``: asyncio clients must be made in the loop that uses them."""

    async def make() -> Any:
        return factory()

    return loop.run_until_complete(make())


# -- the process --------------------------------------------------------------------------------------


def rss_mb() -> float:
    """This process's resident memory (VmRSS), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
