"""Text arguments: what every text layer (ChatMetaLM, MetaLM, MetaLMEmbeddings, MetaLMRerank) accepts.

A text is a ``str`` that UTF-8 can encode, of any length (``""`` included); a list of texts is a
sequence of them (a list or a tuple, not a str). Anything else is refused before anything is sent, with
an :class:`~Xclient.exceptions.XclientValueError` that names the argument (``texts[2]``), what was
expected and what was given: ``texts[2]: expected a str, got int 3``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .exceptions import XclientValueError


def short(value: object) -> str:
    """``repr(value)``, cut to 40 characters, for error messages."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def refuse(name: str, expected: str, value: object) -> XclientValueError:
    """The error for argument ``name``: what was expected, what was given (its type and a short repr)."""
    return XclientValueError(f"{name}: expected {expected}, got {type(value).__name__} {short(value)}")


def check_text(value: object, name: str) -> str:
    """``value`` if it is a str that UTF-8 can encode, else an error naming the argument. A lone
    surrogate (``"\\udcff"``, what ``surrogateescape`` makes of undecodable bytes) has no UTF-8 form."""
    if not isinstance(value, str):
        raise refuse(name, "a str", value)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise refuse(name, "a str that UTF-8 can encode (no lone surrogates)", value) from None
    return value


def check_list(values: object, name: str, expected: str) -> Sequence[Any]:
    """``values`` if it is a sequence (a list, a tuple; not a str or bytes), else an error naming the argument."""
    if isinstance(values, (str, bytes, bytearray)) or not isinstance(values, Sequence):
        raise refuse(name, expected, values)
    return values


def check_texts(values: object, name: str = "texts") -> list[str]:
    """A list of str, or an error naming the argument (and the index of the first bad item)."""
    items = check_list(values, name, "a list of str")
    return [check_text(value, f"{name}[{index}]") for index, value in enumerate(items)]
