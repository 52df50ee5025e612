"""How ``xclient`` writes: UTF-8 whatever the locale, colour only on a terminal (never with ``NO_COLOR``),
JSON that keeps Chinese readable, aligned tables, and errors on stderr with every secret redacted."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import numpy as np

from ..client._auth import redact

_STYLES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


def use_utf8(stdin: TextIO, stdout: TextIO, stderr: TextIO) -> None:
    """Read and write UTF-8 whatever the locale (a ``C`` locale would mangle or refuse Chinese).

    Streams that cannot be reconfigured (test doubles, pipes already read from) are left as they are.
    """
    for stream, errors in ((stdin, "strict"), (stdout, "replace"), (stderr, "backslashreplace")):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError, io.UnsupportedOperation):
                reconfigure(encoding="utf-8", errors=errors)


def is_tty(stream: object) -> bool:
    """True when ``stream`` is a terminal (a stream that cannot tell is not)."""
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False


def wants_color(stream: object) -> bool:
    """Colour on a terminal only, and never when ``NO_COLOR`` is set (https://no-color.org) or TERM is dumb."""
    return is_tty(stream) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def jsonable(value: Any) -> Any:
    """``value`` with numpy arrays and scalars as Python values and bytes as text (UTF-8)."""
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value


def to_json(value: Any) -> str:
    """One line of JSON; Chinese stays Chinese (``ensure_ascii=False``)."""
    return json.dumps(jsonable(value), ensure_ascii=False)


#: ANSI escape sequences (colours and styles): they take no column.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal: CJK characters take two, colour codes none.

    >>> width("ab"), width("你好"), width("\x1b[32mREADY\x1b[0m")
    (2, 4, 5)
    """
    return sum(2 if unicodedata.east_asian_width(char) in ("W", "F") else 1 for char in _ANSI.sub("", text))


def first_line(text: str) -> tuple[str, bool]:
    """The first non-empty line of ``text``, and whether anything followed it."""
    lines = [line for line in text.strip().splitlines() if line.strip()] or [""]
    return lines[0].strip(), len(lines) > 1


class Console:
    """The command's stdout and stderr. Structured output goes to stdout; notes and errors to stderr,
    with ``secrets`` (the API key) redacted."""

    def __init__(self, stdout: TextIO, stderr: TextIO, secrets: Sequence[str] = ()) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.secrets = tuple(secrets)
        self.color = wants_color(stdout)
        self._err_color = wants_color(stderr)

    # -- stdout ------------------------------------------------------------------------------------

    def print(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def write(self, text: str) -> None:
        """Text without a newline, shown at once (streamed tokens)."""
        self.stdout.write(text)
        self.stdout.flush()

    def json(self, value: Any) -> None:
        """One JSON document (or JSON Lines record) on one line."""
        self.print(to_json(value))

    def style(self, text: str, *styles: str) -> str:
        """``text`` in the given styles (``bold``, ``dim``, ``red``, ``green``...) when stdout shows colour."""
        if not self.color or not styles:
            return text
        return "\033[" + ";".join(_STYLES[s] for s in styles) + "m" + text + "\033[0m"

    def table(self, headers: Sequence[str] | None, rows: Iterable[Sequence[object]]) -> None:
        """Rows in aligned columns under bold headers, if any (the last column is not padded)."""
        cells = [[str(cell) for cell in row] for row in rows]
        columns = len(headers) if headers else max((len(row) for row in cells), default=0)
        sizes = [max([width(headers[i]) if headers else 0] + [width(row[i]) for row in cells]) for i in range(columns)]

        def line(row: Sequence[str], style: str | None = None) -> str:
            padded = [cell + " " * (sizes[i] - width(cell)) for i, cell in enumerate(row[:-1])]
            text = "  ".join([*padded, row[-1]]).rstrip()
            return self.style(text, style) if style else text

        if headers:
            self.print(line(list(headers), "bold"))
        for row in cells:
            self.print(line(row))

    # -- stderr ------------------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """A message for the person at the terminal, not for a script reading stdout."""
        self.stderr.write(redact(text, self.secrets) + "\n")
        self.stderr.flush()

    def error(self, message: str) -> None:
        prefix = "\033[1;31merror:\033[0m" if self._err_color else "error:"
        self.note(f"{prefix} {message}")
