"""Streaming text, written once as pure state machines that sync and async code feed alike.

- :class:`TextDecoder` turns the raw ``text_output`` bytes of each response into text that is safe to
  show: the echoed prompt stripped, cumulative responses (prompt + all text so far) turned into
  deltas, multi-byte UTF-8 characters split across responses held back until complete (incremental
  decoding, never a replacement character for a split character; bytes that are not UTF-8 become
  U+FFFD, as in every response of a non-streaming call), and stop sequences enforced,
  also across response boundaries: the text before a stop is kept, the stop is dropped, and
  :attr:`TextDecoder.stopped` tells the caller to cancel the request.
- :class:`Generation` follows one request: it reads each response (text, token counts, finish
  reason) with the backend's reader and says what to deliver, then the usage and metadata at the end.
"""

from __future__ import annotations

import codecs
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any


class TextDecoder:
    """Raw text bytes per response -> text deltas to deliver.

    Args:
        stop: stop sequences; the first one found ends the text (it is not delivered).
        cumulative: each response holds all text so far (older vLLM, TensorRT-LLM BLS with
            ``accumulate_tokens``) rather than the new text only.
        echo: the prompt's bytes when the server may echo them before the text (stripped once at the
            start, or at the start of every cumulative response); None when it does not echo. A first
            cumulative response without the prompt means the server sends deltas: the decoder follows.

    >>> decoder = TextDecoder(stop=["。"])
    >>> [decoder.feed(part) for part in ("你好".encode()[:4], "你好".encode()[4:] + "。世".encode())]
    ['你', '好']
    >>> decoder.stopped
    True
    """

    def __init__(self, *, stop: Sequence[str] = (), cumulative: bool = False, echo: bytes | None = None) -> None:
        self._stops = tuple(s for s in stop if s)
        self._cumulative = cumulative
        self._echo = echo or None
        self._pending_echo = self._echo  # delta mode: what is left of the echo to strip
        self._seen = b""  # cumulative mode: the text bytes received so far
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""  # decoded text that may be the start of a stop sequence
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """The text to deliver after one more response's bytes ("" while held back or once stopped)."""
        if self.stopped:
            return ""
        new = self._new_bytes(data)
        return self._release(self._utf8.decode(new))

    def finish(self) -> str:
        """The text still held back when the stream ends (a dangling partial character becomes U+FFFD)."""
        if self.stopped:
            return ""
        tail = self._release(self._utf8.decode(b"", final=True))
        if self.stopped:
            return tail
        held, self._held = self._held, ""
        return tail + held

    def _new_bytes(self, data: bytes) -> bytes:
        if self._cumulative and self._echo and not self._seen and not data.startswith(self._echo):
            # A response that should repeat the prompt does not: the server sends deltas after all
            # (a current vLLM whose config omits exclude_input_in_output).
            self._cumulative, self._pending_echo = False, None
        if self._cumulative:
            if self._echo and data.startswith(self._echo):
                data = data[len(self._echo) :]
            # Each response repeats what came before; a server that re-detokenized earlier text can
            # change it, and what was delivered cannot be taken back: continue after the common prefix.
            common = len(self._seen) if data.startswith(self._seen) else _common_prefix(self._seen, data)
            new, self._seen = data[common:], data
            return new
        pending = self._pending_echo
        if pending:
            if data.startswith(pending):
                data, self._pending_echo = data[len(pending) :], None
            elif pending.startswith(data):
                data, self._pending_echo = b"", pending[len(data) :]
            else:
                self._pending_echo = None  # the server does not echo after all
        return data

    def _release(self, text: str) -> str:
        buffer = self._held + text
        hits = [(buffer.find(stop), -len(stop)) for stop in self._stops if stop in buffer]
        if hits:
            self.stopped = True
            self._held = ""
            return buffer[: min(hits)[0]]
        keep = _stop_prefix_length(buffer, self._stops)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def _stop_prefix_length(text: str, stops: Sequence[str]) -> int:
    """The length of the longest end of ``text`` that begins some stop sequence (to hold back).

    >>> _stop_prefix_length("你好<|im", ["<|im_end|>"])
    4
    """
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[len(text) - size :]):
                longest = size
                break
    return longest


@dataclasses.dataclass(frozen=True)
class Piece:
    """What one response says: its text bytes (None: no text output), this response's output token
    count, the prompt's token count, and the finish reason (None until the end)."""

    text: bytes | None = None
    num_input_tokens: int | None = None
    num_output_tokens: int | None = None
    finish_reason: str | None = None


@dataclasses.dataclass(frozen=True)
class Ending:
    """The end of a generation: the last text, the token usage (None: the model does not report it)
    and LangChain's ``response_metadata`` (``model_name``, ``finish_reason``)."""

    text: str
    usage: dict[str, int] | None
    metadata: dict[str, Any]


class Generation:
    """One request's responses -> text deltas, then an :class:`Ending`; no I/O of its own.

    ``read`` turns a response's outputs into a :class:`Piece` (see ``Backend.read``). After
    :meth:`feed`, :attr:`stopped` is True when a stop sequence ended the text: the caller cancels the
    request and calls :meth:`finish`.
    """

    def __init__(self, decoder: TextDecoder, read: Callable[[Mapping[str, Any]], Piece], model_name: str) -> None:
        self._decoder = decoder
        self._read = read
        self._model_name = model_name
        self.received = False  # any response came: retrying is no longer safe
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._finish_reason: str | None = None

    @property
    def stopped(self) -> bool:
        return self._decoder.stopped

    def feed(self, outputs: Mapping[str, Any]) -> str:
        """The text to deliver for one response ("" if nothing yet)."""
        self.received = True
        piece = self._read(outputs)
        if piece.num_input_tokens is not None and self._input_tokens is None:
            self._input_tokens = piece.num_input_tokens  # vLLM repeats it on every response
        if piece.num_output_tokens is not None:
            self._output_tokens = (self._output_tokens or 0) + piece.num_output_tokens  # per response
        if piece.finish_reason not in (None, "", "None"):  # vLLM says "None" until the last response
            self._finish_reason = piece.finish_reason
        return self._decoder.feed(piece.text) if piece.text is not None else ""

    def finish(self) -> Ending:
        text = self._decoder.finish()
        usage = None
        if self._input_tokens is not None and self._output_tokens is not None:
            usage = {
                "input_tokens": self._input_tokens,
                "output_tokens": self._output_tokens,
                "total_tokens": self._input_tokens + self._output_tokens,
            }
        reason = "stop" if self._decoder.stopped else self._finish_reason
        return Ending(text, usage, {"model_name": self._model_name, "finish_reason": reason})
