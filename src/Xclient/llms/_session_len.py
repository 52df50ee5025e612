"""Counting tokens with the model's tokenizer, and ``session_len``: a prompt longer than the model's
context is refused before it is sent.

A tokenizer (``tokenizer=``) is a ``tokenizer.json`` file or a directory holding one (read with the
``tokenizers`` package, imported lazily), a loaded ``tokenizers.Tokenizer`` (or any object whose
``encode(text)`` returns ids or an encoding with ``.ids``), or a callable ``str -> list[int]``
(:func:`token_counter`). It counts usage when the backend reports none, and ``session_len`` tokens.

Without one, ``session_len`` tokens are estimated from the characters: **one token per CJK character
(Han, kana, hangul) and one per four other characters, rounded up**. The estimate is close for Chinese
and for English prose with the common BPE vocabularies (Qwen2, InternLM2, Llama 3) and can be off
either way for code or rare scripts: configure the tokenizer for an exact count.

>>> estimate_tokens("你好, world")
4
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
import re
from collections.abc import Callable
from typing import Any

from ..exceptions import XclientValueError

_WIDE = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def estimate_tokens(text: str) -> int:
    """The documented estimate: CJK characters count one token each, other characters four to a token."""
    wide = len(_WIDE.findall(text))
    return wide + math.ceil((len(text) - wide) / 4)


@functools.lru_cache(maxsize=8)
def _tokenizer(path: str) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ImportError("tokenizer=... needs the tokenizers package: pip install tokenizers") from None
    file = pathlib.Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
    if not file.is_file():
        raise XclientValueError(f"tokenizer: no tokenizer.json at {path!r}")
    return Tokenizer.from_file(str(file))


def check_tokenizer(value: Any) -> Any:
    """``value`` if it can be a tokenizer (None, a path, an object with ``encode``, a callable), else an
    error naming what is accepted (nothing is loaded here: a path is read on first use)."""
    if value is None or isinstance(value, (str, os.PathLike)) or callable(getattr(value, "encode", None)):
        return value
    if callable(value):
        return value
    raise XclientValueError(
        "tokenizer: expected a path to tokenizer.json (or its directory), a tokenizers.Tokenizer, or a "
        f"callable str -> list[int]; got {type(value).__name__}"
    )


def token_counter(tokenizer: Any) -> Callable[[str], int] | None:
    """A function counting the tokens of a text with ``tokenizer`` (see the module docstring); None
    without one. Special tokens written in the text (``<|im_start|>``) count as the tokenizer parses
    them; none are added."""
    if tokenizer is None:
        return None
    if isinstance(tokenizer, (str, os.PathLike)):
        path = os.fspath(tokenizer)
        return lambda text: len(_tokenizer(path).encode(text, add_special_tokens=False).ids)
    encode = getattr(tokenizer, "encode", None)
    if callable(encode):

        def count(text: str) -> int:
            try:
                encoded = encode(text, add_special_tokens=False)
            except TypeError:  # an encode() without that keyword
                encoded = encode(text)
            return len(getattr(encoded, "ids", encoded))

        return count
    return lambda text: len(tokenizer(text))


def count_tokens(text: str, tokenizer: Any) -> int:
    """The prompt's tokens: exact with ``tokenizer``, else :func:`estimate_tokens`."""
    counter = token_counter(tokenizer)
    return estimate_tokens(text) if counter is None else counter(text)


def check_session_len(prompt: str, session_len: int | None, tokenizer: Any, model: str) -> None:
    """Refuse a prompt of more than ``session_len`` tokens (None: no limit), naming the counts."""
    if session_len is None:
        return
    tokens = count_tokens(prompt, tokenizer)
    if tokens > session_len:
        how = "counted with the tokenizer" if tokenizer else "estimated: 1 per CJK character, 1 per 4 others"
        raise XclientValueError(
            f"Model {model!r}: the prompt has {tokens} tokens ({how}), more than session_len {session_len}; "
            "shorten the conversation or raise session_len",
            model=model,
            input="prompt",
        )
