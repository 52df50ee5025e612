"""What commands read: texts (arguments, a file or stdin), JSON given inline or as a file, and
``name=VALUE`` model inputs. Bad input is a usage error (exit code 2) that names what was wrong."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np

from ..exceptions import XclientValueError
from ._output import is_tty


def read_text_file(path: str, stdin: TextIO | None = None) -> str:
    """The UTF-8 content of ``path`` (``-``: ``stdin``, when given); a byte-order mark is dropped."""
    try:
        if path == "-" and stdin is not None:
            return stdin.read()
        return pathlib.Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise XclientValueError(f"{'stdin' if path == '-' else path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise XclientValueError(f"cannot read {path}: {e.strerror or e}") from None


def read_texts(arguments: Sequence[str], file: str | None, stdin: TextIO) -> list[str]:
    """Texts from the arguments, else from ``file`` (``-``: stdin), else from stdin when it is not a
    terminal: one text per line, blank lines skipped."""
    if arguments:
        if file is not None:
            raise XclientValueError("give texts as arguments or with --file, not both")
        return list(arguments)
    if file is None and is_tty(stdin):
        raise XclientValueError("no texts: give them as arguments, with --file FILE, or on stdin")
    content = read_text_file("-" if file is None else file, stdin)
    texts = [line.rstrip("\r") for line in content.split("\n") if line.strip()]
    if not texts:
        raise XclientValueError(f"no texts in {file or 'stdin'} (one text per line)")
    return texts


def json_or_file(value: str, option: str) -> Any:
    """``value`` as JSON, or the JSON in the file it names."""
    source = value
    if not value.lstrip().startswith(("{", "[")) and pathlib.Path(value).is_file():
        source = read_text_file(value)
    try:
        return json.loads(source)
    except ValueError as e:
        raise XclientValueError(f"{option}: neither valid JSON nor a JSON file: {e}") from None


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``name=VALUE`` model inputs: VALUE is a path to a ``.npy`` file, JSON (``[1, 2]``, ``3.5``,
    ``"text"``, ``true``), or else the text itself (``text=你好``; a JSON object too, as BYTES inputs
    such as vLLM's ``sampling_parameters`` take it).

    >>> parse_assignments(["a=[1, 2]", "text=你好", 'p={"max_tokens": 8}'])
    {'a': [1, 2], 'text': '你好', 'p': '{"max_tokens": 8}'}
    """
    values: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise XclientValueError(f"input {item!r}: expected NAME=VALUE (VALUE: JSON or a .npy file)")
        if name in values:
            raise XclientValueError(f"input {name!r} is given twice")
        values[name] = _value(name, raw)
    return values


def _value(name: str, raw: str) -> Any:
    if raw.endswith(".npy"):
        try:
            return np.load(raw, allow_pickle=False)
        except OSError as e:
            raise XclientValueError(f"input {name!r}: cannot read {raw}: {e.strerror or e}") from None
        except ValueError as e:  # an object array (pickled): refused, it could run code
            raise XclientValueError(f"input {name!r}: {raw}: {e}") from None
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return raw if isinstance(value, dict) else value
