"""OpenAI's request bodies read and checked, and its response bodies and stream chunks written: no I/O.

Reading follows OpenAI's rules where they matter to a client: unknown fields are ignored, a field with a
wrong type or range is a 400 naming it, and a field Triton's backends cannot honour (tools, logprobs,
``response_format`` other than text, ``echo``...) is refused with ``unsupported_parameter`` rather than
silently dropped. Which sampling settings a given model honours is decided once the backend is known
(:func:`check_backend`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import types
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._text import check_text
from ..exceptions import XclientValueError
from ..llms._backends import Backend
from ..llms._base import DEFAULT_MAX_TOKENS
from ..llms._streaming import Ending
from ..llms._templates import Turn, message_turns
from ._errors import ApiError, invalid, unsupported

#: Choices one request may ask for (``n``): each is one Triton request.
MAX_N = 16
#: OpenAI's sampling fields -> the engine's settings (vLLM ``SamplingParams`` names).
SAMPLING = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
#: The finish reasons OpenAI's clients know; others (or none reported) become "stop".
FINISH_REASONS = frozenset({"stop", "length", "content_filter"})
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

#: Compact UTF-8 JSON (CJK as is), with one encoder made once: ``json.dumps`` with options makes one per call.
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
#: A str as a JSON string, CJK as is (what ``json.dumps(text, ensure_ascii=False)`` gives, in C).
_json_string = json.encoder.encode_basestring


@dataclasses.dataclass(frozen=True)
class Generate:
    """A chat or completions request, checked: what to generate (rendered later for chat), how, how often."""

    model: str
    max_tokens: int
    settings: dict[str, Any]
    stop: tuple[str, ...]
    n: int
    stream: bool
    include_usage: bool
    user: str | None
    fields: tuple[str, ...]
    turns: list[Turn] | None = None  # chat
    prompts: list[str] | None = None  # completions


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise ApiError(400, f"The request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"The request body must be a JSON object, got {type(body).__name__}", code="invalid_json")
    return body


def _present(body: Mapping[str, Any], name: str) -> bool:
    return body.get(name) is not None


def model_name(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", f"'model' must be a non-empty string, got {model!r}", code="missing_model")
    return model


def _bool(body: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(name, f"'{name}' must be a boolean, got {value!r}")
    return value


def _number(body: Mapping[str, Any], name: str, low: float, high: float, *, integer: bool = False) -> Any:
    """``body[name]`` if absent (None) or a number in [low, high] (an int when ``integer``)."""
    value = body.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and not isinstance(value, int))
        or not low <= value <= high
    ):
        kind = "an integer" if integer else "a number"
        raise invalid(name, f"'{name}' must be {kind} from {low:g} to {high:g}, got {value!r}")
    return value


def _refuse_unsupported(body: Mapping[str, Any], endpoint: str) -> None:
    """Fields set to something Triton's text backends cannot do."""
    if body.get("tools") or body.get("functions"):
        name = "tools" if body.get("tools") else "functions"
        raise unsupported(name, f"'{name}': the gateway's models take no tool definitions (no tool calling)")
    if body.get("tool_choice") not in (None, "none", "auto"):
        raise unsupported("tool_choice", "'tool_choice': the gateway's models do not call tools")
    if body.get("logprobs") not in (None, False) or _present(body, "top_logprobs"):
        name = "logprobs" if body.get("logprobs") not in (None, False) else "top_logprobs"
        raise unsupported(name, f"'{name}': log probabilities are not available through the gateway")
    if body.get("logit_bias"):
        raise unsupported("logit_bias", "'logit_bias' is not supported by the gateway")
    response_format = body.get("response_format")
    if response_format is not None and (not isinstance(response_format, dict) or response_format.get("type") != "text"):
        raise unsupported("response_format", "'response_format': only {'type': 'text'} is supported")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise unsupported("modalities", "'modalities': only ['text'] is supported")
    if _present(body, "audio"):
        raise unsupported("audio", "'audio' output is not supported")
    if endpoint == "completions":
        if body.get("echo"):
            raise unsupported("echo", "'echo' is not supported: the prompt is not repeated in the answer")
        if _present(body, "suffix"):
            raise unsupported("suffix", "'suffix' (insertion) is not supported")
        if body.get("best_of") not in (None, 1):
            raise unsupported("best_of", "'best_of' other than 1 is not supported; use 'n'")


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid("stop", f"'stop' must be a string or a list of strings, got {stop!r}")
    try:
        return tuple(check_text(s, "stop") for s in stops if s)
    except XclientValueError as e:
        raise invalid("stop", e.message) from None


def _generate(body: Mapping[str, Any], endpoint: str) -> dict[str, Any]:
    """What chat and completions share: the model, sampling, ``n``, streaming, ``user``."""
    model = model_name(body)
    _refuse_unsupported(body, endpoint)
    limit = "max_completion_tokens" if _present(body, "max_completion_tokens") else "max_tokens"
    max_tokens = _number(body, limit, 1, 2**31 - 1, integer=True)
    settings = {
        "temperature": _number(body, "temperature", 0, 2),
        "top_p": _number(body, "top_p", 0, 1),
        "seed": _number(body, "seed", -(2**63), 2**64 - 1, integer=True),
        "presence_penalty": _number(body, "presence_penalty", -2, 2),
        "frequency_penalty": _number(body, "frequency_penalty", -2, 2),
    }
    if settings["top_p"] == 0:
        raise invalid("top_p", "'top_p' must be above 0, got 0")
    n = _number(body, "n", 1, MAX_N, integer=True) or 1
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("stream_options", f"'stream_options' must be an object, got {options!r}")
    include_usage = stream and _bool(options or {}, "include_usage")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("user", f"'user' must be a string, got {user!r}")
    fields = tuple(name for name in (*SAMPLING, limit, "stop") if _present(body, name))
    return {
        "model": model,
        "max_tokens": max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS,
        "settings": {name: value for name, value in settings.items() if value is not None},
        "stop": _stop(body),
        "n": n,
        "stream": stream,
        "include_usage": include_usage,
        "user": user,
        "fields": fields,
    }


def parse_chat(body: Mapping[str, Any]) -> Generate:
    """``POST /v1/chat/completions``: messages as chat turns (text content only; no tool messages)."""
    common = _generate(body, "chat")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "'messages' must be a non-empty list of messages")
    shaped = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(f"messages[{index}]", f"messages[{index}] must be an object, got {message!r}")
        role = message.get("role")
        if role not in _ROLES:
            raise invalid(
                f"messages[{index}].role",
                f"messages[{index}].role: expected one of {', '.join(_ROLES)} (no tool messages), got {role!r}",
                code="unsupported_value",
            )
        if message.get("tool_calls") or message.get("function_call"):
            raise unsupported(f"messages[{index}].tool_calls", f"messages[{index}]: tool calls are not supported")
        content = message.get("content")
        if content is None and role == "assistant":
            content = ""
        shaped.append(types.SimpleNamespace(type="chat", role=_ROLES[role], content=content))
    try:
        turns = message_turns(shaped)
    except XclientValueError as e:
        raise invalid(e.message.partition(":")[0], e.message) from None
    return Generate(**common, turns=turns)


def parse_completion(body: Mapping[str, Any]) -> Generate:
    """``POST /v1/completions``: a prompt or a list of them, sent as they are."""
    common = _generate(body, "completions")
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise invalid(
            "prompt", "'prompt' must be a string or a non-empty list of strings (token ids are not supported)"
        )
    try:
        prompts = [check_text(p, f"prompt[{i}]") for i, p in enumerate(prompts)]
    except XclientValueError as e:
        raise invalid("prompt", e.message) from None
    return Generate(**common, prompts=prompts)


def check_backend(request: Generate, backend: Backend) -> None:
    """Refuse what this model's backend cannot honour: a generic text model takes no sampling settings
    and no token limit (stop strings are enforced by the gateway, so they are fine). TensorRT-LLM models
    lacking an input for a setting are refused when the request is built (Xclient names the setting)."""
    if backend.name != "text":
        return
    for name in request.fields:
        if name != "stop":
            raise unsupported(name, f"'{name}': model {request.model!r} is a generic text model: it takes no {name}")


@dataclasses.dataclass(frozen=True)
class Embed:
    model: str
    texts: list[str]
    base64: bool
    dimensions: int | None


def parse_embeddings(body: Mapping[str, Any]) -> Embed:
    """``POST /v1/embeddings``: ``input`` a string or a list of strings; ``encoding_format`` float or base64."""
    model = model_name(body)
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise invalid("input", "'input' must be a string or a non-empty list of strings (token ids are not supported)")
    try:
        texts = [check_text(t, f"input[{i}]") for i, t in enumerate(texts)]
    except XclientValueError as e:
        raise invalid("input", e.message) from None
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise invalid("encoding_format", f"'encoding_format' must be 'float' or 'base64', got {encoding!r}")
    dimensions = _number(body, "dimensions", 1, 2**31 - 1, integer=True)
    return Embed(model, texts, encoding == "base64", dimensions)


@dataclasses.dataclass(frozen=True)
class Rerank:
    model: str
    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool


def parse_rerank(body: Mapping[str, Any]) -> Rerank:
    """``POST /v1/rerank`` (Cohere and Jina style): ``query``, ``documents`` (strings or ``{"text": ...}``),
    ``top_n``, ``return_documents`` (default true)."""
    model = model_name(body)
    query = body.get("query")
    if not isinstance(query, str):
        raise invalid("query", f"'query' must be a string, got {query!r}")
    documents = body.get("documents")
    if not isinstance(documents, list):
        raise invalid("documents", "'documents' must be a list of strings or of {'text': ...} objects")
    texts = []
    for index, document in enumerate(documents):
        text = document.get("text") if isinstance(document, dict) else document
        if not isinstance(text, str):
            raise invalid(f"documents[{index}]", f"documents[{index}] must be a string or {{'text': str}}")
        texts.append(text)
    try:
        check_text(query, "query")
        texts = [check_text(t, f"documents[{i}]") for i, t in enumerate(texts)]
    except XclientValueError as e:
        raise invalid(e.message.partition(":")[0], e.message) from None
    top_n = _number(body, "top_n", 1, 2**31 - 1, integer=True)
    return Rerank(model, query, texts, top_n, _bool(body, "return_documents", True))


# -- answers ---------------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def finish_reason(ending: Ending) -> str:
    reason = ending.metadata.get("finish_reason")
    return reason if reason in FINISH_REASONS else "stop"


def usage(endings: Sequence[Ending]) -> dict[str, int] | None:
    """OpenAI's usage over the choices of one prompt (its tokens counted once); None when the model does
    not report token counts."""
    usages = [e.usage for e in endings if e.usage is not None]
    if not endings or len(usages) < len(endings):
        return None
    prompt = usages[0]["input_tokens"]
    completion = sum(u["output_tokens"] for u in usages)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def add_usage(parts: Sequence[dict[str, int] | None]) -> dict[str, int] | None:
    present = [part for part in parts if part is not None]
    if not parts or len(present) < len(parts):
        return None
    return {key: sum(part[key] for part in present) for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


class Answer:
    """The frame of one chat or completions answer: its id, time, model and object names."""

    def __init__(self, request: Generate, chat: bool) -> None:
        self.chat = chat
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())
        self.model = request.model
        self.object = "chat.completion" if chat else "text_completion"
        self._chunk_object = f"{self.object}.chunk" if chat else self.object
        self._text_frames: dict[int, tuple[bytes, bytes]] = {}

    def _frame(self, object_: str) -> dict[str, Any]:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model}

    def whole(self, texts: Sequence[str], endings: Sequence[Ending], usage_: dict[str, int] | None) -> dict[str, Any]:
        """The answer of a call that does not stream."""
        choices = []
        for index, (text, ending) in enumerate(zip(texts, endings, strict=True)):
            choice: dict[str, Any] = {"index": index, "finish_reason": finish_reason(ending), "logprobs": None}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            choices.append(choice)
        return {**self._frame(self.object), "choices": choices, "usage": usage_, "system_fingerprint": None}

    def chunk(self, index: int, text: str | None, reason: str | None = None, *, role: bool = False) -> bytes:
        """One stream event: a text delta (or the role, first), and the finish reason on a choice's last."""
        if text and reason is None and not role:
            return self.text_chunk(index, text)
        choice: dict[str, Any] = {"index": index, "finish_reason": reason, "logprobs": None}
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            choice["delta"] = delta
        else:
            choice["text"] = text or ""
        return event({**self._frame(self._chunk_object), "choices": [choice]})

    def text_chunk(self, index: int, text: str) -> bytes:
        """A text delta: the hot path of a stream, written from a precomputed frame."""
        frame = self._text_frames.get(index)
        if frame is None:
            head = _json(self._frame(self._chunk_object))[:-1]
            field = b'"delta":{"content":' if self.chat else b'"text":'
            closing = b"}" if self.chat else b""
            frame = self._text_frames[index] = (
                b"data: " + head.encode() + b',"choices":[{"index":' + str(index).encode() + b"," + field,
                closing + b',"finish_reason":null,"logprobs":null}]}\n\n',
            )
        return frame[0] + _json_string(text).encode() + frame[1]

    def usage_chunk(self, usage_: dict[str, int] | None) -> bytes:
        """``stream_options.include_usage``: the last event, with no choices."""
        return event({**self._frame(self._chunk_object), "choices": [], "usage": usage_})


def event(payload: Mapping[str, Any]) -> bytes:
    """One server-sent event (UTF-8 JSON, CJK as is)."""
    return b"data: " + _json(payload).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def embeddings_answer(model: str, vectors: list[list[float]], as_base64: bool) -> dict[str, Any]:
    """OpenAI's embeddings list; base64 is the little-endian float32 bytes, as OpenAI sends them."""
    data = []
    for index, vector in enumerate(vectors):
        value: Any = vector
        if as_base64:
            value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": value})
    # The embedding models report no token counts.
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 0, "total_tokens": 0}}
