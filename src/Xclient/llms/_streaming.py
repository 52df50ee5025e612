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
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal


class TextDecoder:
    """Raw text bytes per response -> text deltas to deliver.

    Args:
        stop: stop sequences; the first one found ends the text (it is not delivered).
        cumulative: each response holds all text so far (older vLLM, TensorRT-LLM BLS with
            ``accumulate_tokens``) rather than the new text only.
        echo: the prompt's bytes when the server may echo them before the text (stripped once at the
            start, or at the start of every cumulative response); None when it does not echo. A first
            cumulative response without the prompt means the server sends deltas: the decoder follows.
        loose_echo: the echo may also come back as a tokenizer decodes the prompt: without its special
            tokens (``<|im_start|>``...) and with whitespace changed. A first response that starts so
            has that start stripped (:func:`strip_decoded_echo`).

    A cumulative response may take text back (vLLM <= 0.3 streams the start of a stop string, then
    drops it): the retracted text leaves what is held back; what was delivered stays delivered.

    >>> decoder = TextDecoder(stop=["。"])
    >>> [decoder.feed(part) for part in ("你好".encode()[:4], "你好".encode()[4:] + "。世".encode())]
    ['你', '好']
    >>> decoder.stopped
    True
    """

    def __init__(
        self,
        *,
        stop: Sequence[str] = (),
        cumulative: bool = False,
        echo: bytes | None = None,
        loose_echo: bool = False,
    ) -> None:
        self._stops = tuple(s for s in stop if s)
        self._cumulative = cumulative
        self._echo = echo or None
        self._loose_echo = loose_echo
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
            if data.startswith(self._seen):
                new, self._seen = data[len(self._seen) :], data
                return new
            common = _char_start(self._seen, _common_prefix(self._seen, data))
            self._retract(self._seen[common:])
            new, self._seen = data[common:], data
            return new
        pending = self._pending_echo
        if pending:
            if data.startswith(pending):
                data, self._pending_echo = data[len(pending) :], None
            elif pending.startswith(data):
                data, self._pending_echo = b"", pending[len(data) :]
            else:
                self._pending_echo = None  # the server does not echo exactly
                if self._loose_echo and pending == self._echo:
                    rest = strip_decoded_echo(data, self._echo)
                    data = data if rest is None else rest
        return data

    def _retract(self, retracted: bytes) -> None:
        """Forget ``retracted``, the end of what came so far: out of the UTF-8 decoder's buffer, then
        out of the held-back text (what was delivered already cannot be taken back)."""
        buffered = self._utf8.getstate()[0]
        self._utf8.reset()
        decoded = retracted[: max(len(retracted) - len(buffered), 0)].decode("utf-8", "replace")
        if len(retracted) < len(buffered):  # only part of a character still buffered is taken back
            self._utf8.decode(buffered[: len(buffered) - len(retracted)])
        self._held = self._held[: max(len(self._held) - len(decoded), 0)]

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


def _char_start(data: bytes, index: int) -> int:
    """``index`` moved back to the start of the UTF-8 character it falls in."""
    while 0 < index < len(data) and 0x80 <= data[index] < 0xC0:
        index -= 1
    return index


#: Special tokens a tokenizer drops with ``skip_special_tokens=True``: ``<|...|>`` markers (ChatML,
#: Llama 3, InternLM2) and SentencePiece's ``<s>`` / ``</s>``.
_SPECIAL_TOKEN = re.compile(rb"<\|[^|<>\s]*\|>|</?s>")
_SPACES = b" \t\n\r\x0b\x0c"


def strip_decoded_echo(data: bytes, prompt: bytes) -> bytes | None:
    """``data`` without a start that is ``prompt`` as a tokenizer decodes it (special tokens skipped,
    whitespace ignored), or None when it does not start so.

    What cannot be told apart: an answer that itself begins with the prompt's words from an echo, and
    whitespace at the start of the answer from whitespace at the end of the prompt (dropped).

    >>> prompt = "<|im_start|>user\\n你好<|im_end|>\\n<|im_start|>assistant\\n".encode()
    >>> strip_decoded_echo("user\\n你好\\nassistant\\n你好！".encode(), prompt).decode()
    '你好！'
    >>> strip_decoded_echo("你好！".encode(), prompt) is None
    True
    """
    target = bytes(b for b in _SPECIAL_TOKEN.sub(b"", prompt) if b not in _SPACES)
    if not target:
        return None
    index = matched = 0
    while matched < len(target):
        if index == len(data):
            return None
        if data[index] in _SPACES:
            index += 1
        elif data[index] == target[matched]:
            index, matched = index + 1, matched + 1
        else:
            return None
    if _SPECIAL_TOKEN.sub(b"", prompt).rstrip(_SPACES) != _SPECIAL_TOKEN.sub(b"", prompt):
        while index < len(data) and data[index] in _SPACES:
            index += 1
    return data[index:]


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
class Counter:
    """The configured tokenizer (``count``: a text's tokens) and the prompt as sent, for usage when the
    backend returns no token counts."""

    count: Callable[[str], int]
    prompt: str


#: ``response_metadata["usage_source"]``: where the usage came from. None: nowhere (usage is None: the
#: backend returned no counts and no tokenizer is configured; nothing is guessed).
UsageSource = Literal["backend", "tokenizer", "backend+tokenizer"] | None


@dataclasses.dataclass(frozen=True)
class Ending:
    """The end of a generation: the last text, the token usage (None: the model does not report it
    and no tokenizer is configured) and LangChain's ``response_metadata`` (``model_name``,
    ``finish_reason``, ``usage_source``: ``"backend"``, ``"tokenizer"``, ``"backend+tokenizer"`` or None)."""

    text: str
    usage: dict[str, int] | None
    metadata: dict[str, Any]


class Generation:
    """One request's responses -> text deltas, then an :class:`Ending`; no I/O of its own.

    ``read`` turns a response's outputs into a :class:`Piece` (see ``Backend.read``). After
    :meth:`feed`, :attr:`stopped` is True when a stop sequence ended the text: the caller cancels the
    request and calls :meth:`finish`.
    """

    def __init__(
        self,
        decoder: TextDecoder,
        read: Callable[[Mapping[str, Any]], Piece],
        model_name: str,
        counted_max_tokens: int | None = None,
        counter: Counter | None = None,
    ) -> None:
        self._decoder = decoder
        self._counter = counter
        self._texts: list[str] = []  # what was delivered, for the tokenizer's count
        self._read = read
        self._model_name = model_name
        self._counted_max_tokens = counted_max_tokens  # one token per response: "length" at this count
        self._text_responses = 0
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
        if piece.text is None:
            return ""
        self._text_responses += 1
        text = self._decoder.feed(piece.text)
        if self._counter is not None and text:
            self._texts.append(text)
        return text

    def finish(self) -> Ending:
        text = self._decoder.finish()
        usage, source = self._usage(text)
        reason = "stop" if self._decoder.stopped else self._finish_reason
        counted = self._counted_max_tokens
        if reason is None and counted is not None and self._text_responses >= counted:
            reason = "length"  # the server says nothing (TensorRT-LLM < v0.20): reached by count
        metadata = {"model_name": self._model_name, "finish_reason": reason, "usage_source": source}
        return Ending(text, usage, metadata)

    def _usage(self, last_text: str) -> tuple[dict[str, int] | None, UsageSource]:
        """The usage and where it came from: the backend's counts win; the tokenizer counts what they
        lack (the prompt as sent, the text as delivered); without both, None."""
        inputs, outputs = self._input_tokens, self._output_tokens
        source: UsageSource = "backend"
        if (inputs is None or outputs is None) and self._counter is not None:
            source = "tokenizer" if inputs is None and outputs is None else "backend+tokenizer"
            if inputs is None:
                inputs = self._counter.count(self._counter.prompt)
            if outputs is None:
                outputs = self._counter.count("".join(self._texts) + last_text)
        if inputs is None or outputs is None:
            return None, None
        return {"input_tokens": inputs, "output_tokens": outputs, "total_tokens": inputs + outputs}, source
