"""Tool calling for chat templates: the tool-call text formats, one parser per format family, and the
schema helpers of structured output. Pure logic (no I/O, no LangChain import): ChatMetaLM's sync and
async paths, streaming or not, feed the same :class:`ToolCallParser`.

Formats (:data:`FORMATS`), as each model family was trained to write a call:

- ``hermes`` (Qwen2/Qwen2.5, ChatML): ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``,
  one block per call;
- ``internlm2``: ``<|action_start|><|plugin|>\\n{"name": ..., "parameters": {...}}<|action_end|>``
  (``arguments`` is accepted too; ``<|action_end|>`` is a stop word, so a call may end the text unclosed);
- ``llama3`` (Llama 3.1 JSON tool calling): the whole answer is ``{"name": ..., "parameters": {...}}``
  (optionally after ``<|python_tag|>``; several calls separated by ``;``).

The parser turns text into plain text and :class:`CallPiece` events. Text outside calls comes out as
soon as it cannot be the start of a call (a partial opening tag is held back, as stop words are); the
text inside a call never comes out as text. A call that does not parse becomes a piece with an
``error`` and its raw text, so nothing is dropped. A call still open after ``max_call_bytes`` is given
up: its text so far goes out as an invalid piece, and the rest of it follows as more pieces of the
same call (same ``index``), so buffering stays bounded.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ..exceptions import XclientValueError

#: Bytes of one tool call held in memory at most while it is still open (see the module docstring).
DEFAULT_MAX_CALL_BYTES = 64 * 1024

ToolChoice = Literal["auto", "none", "required"] | str  # a str other than those three: a tool name


@dataclasses.dataclass(frozen=True)
class CallPiece:
    """One tool call (or a part of one given up for its size): ``index`` orders the calls of an answer;
    ``args`` is JSON text when ``error`` is None, else the raw text of the call."""

    index: int
    id: str | None
    name: str | None
    args: str
    error: str | None = None


Event = str | CallPiece


def new_call_id() -> str:
    """A tool call id, unique per call (``call_`` + 24 hex digits)."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclasses.dataclass(frozen=True)
class ToolFormat:
    """How one model family writes a tool call.

    ``open``/``close``: the tags around a call (``open`` empty: the whole answer is the call, llama3);
    ``args_key``: the key the family writes the arguments under (``arguments`` is always accepted too).
    """

    name: str
    open: str
    close: str
    args_key: str
    prefixes: tuple[str, ...] = ()  # untagged formats: what a call may start with
    stop: tuple[str, ...] = ()  # extra stop strings while tools are offered

    def call_text(self, name: str, args: Mapping[str, Any]) -> str:
        """A call written as this family writes it (the inside, without the tags)."""
        return f'{{"name": "{name}", "{self.args_key}": {json.dumps(args, ensure_ascii=False)}}}'

    def prefill(self, choice: ToolChoice) -> str:
        """The start of the assistant's answer that forces a call (``"required"``) or a given tool (a
        name): appended to the prompt, the model can only continue it. ``"auto"``/``"none"``: ``""``."""
        if choice in ("auto", "none"):
            return ""
        opening = self.open + "\n" if self.open else ""
        if choice == "required":
            return opening + ('{"name": "' if not self.open else "")
        return opening + f'{{"name": "{choice}", "{self.args_key}": '

    def parse(self, body: str) -> list[tuple[str, str]]:
        """The calls in one call's text: ``[(name, arguments as JSON text)]``; ValueError saying why not."""
        text = body.strip()
        if self.prefixes:
            for prefix in self.prefixes:
                if prefix and text.startswith(prefix):
                    text = text[len(prefix) :].lstrip()
            return [_one_call(value, self.args_key) for value in _json_values(text)]
        return [_one_call(_json_values(text, single=True)[0], self.args_key)]


def _json_values(text: str, *, single: bool = False) -> list[Any]:
    """The JSON values in ``text`` (separated by ``;`` or whitespace); ValueError on anything else."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    while True:
        while position < len(text) and (text[position].isspace() or (text[position] == ";" and values)):
            position += 1
        if position == len(text):
            break
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON: {e.msg} at character {e.pos}") from None
        values.append(value)
        if single and position < len(text) and text[position:].strip():
            raise ValueError(f"unexpected text after the call's JSON: {text[position:][:40]!r}")
    if not values:
        raise ValueError("empty tool call")
    return values


def _one_call(value: Any, args_key: str) -> tuple[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"a tool call is a JSON object, got {type(value).__name__}")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("the tool call has no 'name' string")
    args: Any = next((value[key] for key in (args_key, "arguments", "parameters") if key in value), {})
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"the arguments of {name!r} are not JSON: {e.msg}") from None
    if not isinstance(args, dict):
        raise ValueError(f"the arguments of {name!r} are a JSON object, got {type(args).__name__}")
    return name, json.dumps(args, ensure_ascii=False)


HERMES = ToolFormat("hermes", "<tool_call>", "</tool_call>", "arguments")
INTERNLM2 = ToolFormat("internlm2", "<|action_start|><|plugin|>", "<|action_end|>", "arguments")
LLAMA3 = ToolFormat("llama3", "", "", "parameters", prefixes=("<|python_tag|>",), stop=("<|eom_id|>",))
FORMATS: dict[str, ToolFormat] = {f.name: f for f in (HERMES, INTERNLM2, LLAMA3)}


def format_for_source(source: str) -> ToolFormat:
    """The tool format a Jinja chat template writes calls in (from its markers; ``hermes`` by default)."""
    if "<|plugin|>" in source:
        return INTERNLM2
    if "<|python_tag|>" in source or ('"parameters"' in source and "<|eot_id|>" in source):
        return LLAMA3
    return HERMES


class ToolCallParser:
    """Answer text (deltas) -> text and :class:`CallPiece` events, for one :class:`ToolFormat`.

    ``prefill`` is the start of the answer that was put in the prompt (:meth:`ToolFormat.prefill`): the
    parser reads the answer as if it began with it. :meth:`feed` per delta, :meth:`finish` at the end.

    >>> parser = ToolCallParser(HERMES, new_id=lambda: "call_1")
    >>> parser.feed('好的<tool')
    ['好的']
    >>> parser.feed('_call>\\n{"name": "f", "arguments": {"城市": "北京"}}\\n</tool_call>')
    [CallPiece(index=0, id='call_1', name='f', args='{"城市": "北京"}', error=None)]
    """

    def __init__(
        self,
        tool_format: ToolFormat,
        *,
        prefill: str = "",
        max_call_bytes: int = DEFAULT_MAX_CALL_BYTES,
        new_id: Any = new_call_id,
    ) -> None:
        self.format = tool_format
        self._max = max_call_bytes
        self._new_id = new_id
        self._index = 0
        self._held = ""  # text that may begin a call (an opening tag's start, llama3's leading part)
        self._call: str | None = None  # the open call's text; None: outside a call
        self._overflow: CallPiece | None = None  # the call given up for its size, continuing
        self._decided = bool(tool_format.open)  # llama3: whether the answer is a call is still open
        if prefill:
            if tool_format.open and prefill.startswith(tool_format.open):
                self._call = prefill[len(tool_format.open) :]
            elif not tool_format.open:
                self._call, self._decided = prefill, True

    def feed(self, text: str) -> list[Event]:
        """The events after one more piece of the answer."""
        events: list[Event] = []
        buffer = self._held + text
        self._held = ""
        if not self.format.open:
            self._feed_untagged(buffer, events)
            return events
        while buffer:
            if self._overflow is not None:
                buffer = self._feed_overflow(buffer, events)
            elif self._call is not None:
                buffer = self._feed_call(buffer, events)
            else:
                buffer = self._feed_text(buffer, events)
        return events

    def finish(self) -> list[Event]:
        """The events at the end of the answer: held-back text, and a call left open (parsed if it can be:
        a stop word may have cut its closing tag off; else invalid, with its raw text)."""
        events: list[Event] = []
        if self._overflow is not None:
            if self._held:
                events.append(dataclasses.replace(self._overflow, id=None, name=None, args=self._held))
        elif self._call is not None:
            self._close(self._call, events, unterminated=bool(self.format.open))
        elif self._held:
            if not self.format.open and self._held.strip():
                self._close(self._held, events, unterminated=False)
            else:
                events.append(self._held)
        self._held, self._call, self._overflow = "", None, None
        return events

    # -- states -----------------------------------------------------------------------------------

    def _feed_text(self, buffer: str, events: list[Event]) -> str:
        opening = self.format.open
        found = buffer.find(opening)
        if found >= 0:
            if found:
                events.append(buffer[:found])
            self._call = ""
            return buffer[found + len(opening) :]
        keep = _prefix_overlap(buffer, opening)
        if len(buffer) > keep:
            events.append(buffer[: len(buffer) - keep])
        self._held = buffer[len(buffer) - keep :]
        return ""

    def _feed_call(self, buffer: str, events: list[Event]) -> str:
        assert self._call is not None
        text = self._call + buffer
        found = text.find(self.format.close)
        if found >= 0:
            self._call = None
            self._close(text[:found], events, unterminated=False)
            return text[found + len(self.format.close) :]
        self._call = text
        self._check_size(events)
        return ""

    def _feed_overflow(self, buffer: str, events: list[Event]) -> str:
        assert self._overflow is not None
        found = buffer.find(self.format.close)
        end = found if found >= 0 else len(buffer) - _prefix_overlap(buffer, self.format.close)
        if end:
            events.append(dataclasses.replace(self._overflow, id=None, name=None, args=buffer[:end]))
        if found < 0:
            self._held = buffer[end:]
            return ""
        self._overflow = None
        return buffer[found + len(self.format.close) :]

    def _feed_untagged(self, buffer: str, events: list[Event]) -> None:
        if self._call is not None:  # the answer is a call: keep it whole until the end
            if self._overflow is not None:
                events.append(dataclasses.replace(self._overflow, id=None, name=None, args=buffer))
                return
            self._call += buffer
            self._check_size(events)
            return
        if self._decided:
            if buffer:
                events.append(buffer)
            return
        start = buffer.lstrip()
        if not start or any(p.startswith(start) for p in self.format.prefixes):
            self._held = buffer  # cannot tell yet
            return
        self._decided = True
        if start.startswith("{") or any(start.startswith(p) for p in self.format.prefixes):
            self._call = buffer
            self._check_size(events)
        else:
            events.append(buffer)

    # -- helpers ----------------------------------------------------------------------------------

    def _check_size(self, events: list[Event]) -> None:
        assert self._call is not None
        if len(self._call.encode("utf-8")) <= self._max:
            return
        piece = CallPiece(
            self._index,
            self._new_id(),
            None,
            self._call,
            f"the tool call is longer than {self._max} bytes and was not parsed (max_tool_call_bytes)",
        )
        self._index += 1
        events.append(piece)
        self._overflow = piece
        if not self.format.open:
            self._call = ""
        else:
            self._call = None

    def _close(self, body: str, events: list[Event], *, unterminated: bool) -> None:
        """One call's text -> call pieces (one per call in it), or one invalid piece."""
        try:
            calls = self.format.parse(body)
        except ValueError as e:
            where = f"an unterminated {self.format.open or self.format.name} tool call" if unterminated else "tool call"
            events.append(CallPiece(self._index, self._new_id(), _guess_name(body), body, f"{where}: {e}"))
            self._index += 1
            return
        for name, args in calls:
            events.append(CallPiece(self._index, self._new_id(), name, args))
            self._index += 1


def _prefix_overlap(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that begins ``tag`` (to hold back)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[len(text) - size :]):
            return size
    return 0


_NAME = re.compile(r'"name"\s*:\s*"([^"\\]{1,200})"')


def _guess_name(body: str) -> str | None:
    """The tool name of a call that does not parse, when its text still shows it."""
    match = _NAME.search(body)
    return match.group(1) if match else None


def tool_choice_name(tool_choice: Any, names: Sequence[str]) -> ToolChoice:
    """A LangChain/OpenAI ``tool_choice`` as ``"auto"``, ``"none"``, ``"required"`` or a tool name.

    Accepted: None/``"auto"``; ``"none"``; ``"any"``/``"required"``/True (True with one tool: that
    tool); a tool's name; ``{"type": "function", "function": {"name": ...}}``. Anything else, or a
    name that is not among ``names``, is an XclientValueError.

    >>> tool_choice_name("any", ["f"]), tool_choice_name({"type": "function", "function": {"name": "f"}}, ["f"])
    ('required', 'f')
    """
    if tool_choice is None or tool_choice == "auto":
        return "auto"
    if tool_choice == "none":
        return "none"
    if tool_choice is True:
        return names[0] if len(names) == 1 else "required"
    if tool_choice in ("any", "required"):
        return "required"
    name = tool_choice
    if isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else tool_choice.get("name")
    if isinstance(name, str) and name in names:
        return name
    raise XclientValueError(
        f"tool_choice: expected 'auto', 'none', 'any'/'required', True or one of the tools' names "
        f"({', '.join(map(repr, names)) or 'no tools bound'}), got {tool_choice!r}"
    )


# -- structured output: JSON schemas ----------------------------------------------------------------


def schema_errors(
    value: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None, at: str = "$"
) -> list[str]:
    """Where ``value`` breaks ``schema`` (the JSON Schema subset tool and structured-output schemas use:
    ``type``, ``properties``, ``required``, ``items``, ``enum``, ``const``, ``anyOf``/``oneOf``,
    ``allOf``, local ``$ref``); ``[]`` when it conforms.

    >>> schema_errors({"城市": 1}, {"type": "object", "properties": {"城市": {"type": "string"}}, "required": ["城市"]})
    ['$.城市: expected string, got int']
    """
    root = schema if root is None else root
    if "$ref" in schema:
        schema = {**_resolve(schema["$ref"], root), **{k: v for k, v in schema.items() if k != "$ref"}}
    errors: list[str] = []
    for key in ("anyOf", "oneOf"):
        if key in schema and all(schema_errors(value, option, root, at) for option in schema[key]):
            errors.append(f"{at}: matches none of the {key} options")
    for option in schema.get("allOf", ()):
        errors += schema_errors(value, option, root, at)
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: expected one of {schema['enum']!r}, got {value!r}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{at}: expected {schema['const']!r}, got {value!r}")
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and not any(_is_type(value, k) for k in kinds):
        return [*errors, f"{at}: expected {' or '.join(kinds)}, got {type(value).__name__}"]
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                errors.append(f"{at}: missing required property {name!r}")
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                errors += schema_errors(value[name], sub, root, f"{at}.{name}")
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for number, item in enumerate(value):
            errors += schema_errors(item, schema["items"], root, f"{at}[{number}]")
    return errors


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    expected = {"string": str, "boolean": bool, "object": dict, "array": list, "null": type(None)}.get(kind)
    return expected is None or isinstance(value, expected)


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        raise XclientValueError(f"schema: only local $ref ('#/...') are supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def guide_for(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """vLLM's structured-output parameters for a JSON schema (``{"json": schema}``), or for any JSON
    object (``{"json_object": True}``) when there is no schema."""
    return {"json": dict(schema)} if schema is not None else {"json_object": True}
