"""``session_len``: a prompt longer than the model's context is refused before it is sent.

Tokens are counted with the model's tokenizer when one is configured (``tokenizer=``: a
``tokenizer.json`` file, or a directory holding one, read with the ``tokenizers`` package), and
otherwise estimated from the characters: **one token per CJK character (Han, kana, hangul) and one per
four other characters, rounded up**. The estimate is close for Chinese and for English prose with
the common BPE vocabularies (Qwen2, InternLM2, Llama 3) and can be off either way for code or rare
scripts: configure the tokenizer for an exact count.

>>> estimate_tokens("你好, world")
4
"""

from __future__ import annotations

import functools
import math
import pathlib
import re
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


def count_tokens(text: str, tokenizer: str | None) -> int:
    """The prompt's tokens: exact with ``tokenizer`` (a path), else :func:`estimate_tokens`."""
    if tokenizer is None:
        return estimate_tokens(text)
    return len(_tokenizer(tokenizer).encode(text, add_special_tokens=False).ids)


def check_session_len(prompt: str, session_len: int | None, tokenizer: str | None, model: str) -> None:
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
