"""Chat templates: chat messages -> the prompt text an LLM on Triton expects (docs/protocols.md section 6).

The vLLM and TensorRT-LLM backends apply no chat template, so the client renders it. A template is
chosen by :func:`resolve_template`:

- ``None``: from the model name: ``qwen`` -> ``"qwen"``, ``internlm`` -> ``"internlm2"``, ``llama-3`` /
  ``llama3`` -> ``"llama3"``; any other name gets ``"chatml"`` (most of our models are Qwen-style);
- a built-in name: ``"qwen"`` (ChatML with Qwen2's default system message), ``"chatml"``,
  ``"internlm2"``, ``"llama3"`` or ``"raw"`` (the contents only, joined by newlines: for models
  that take plain text);
- a Jinja2 template string (it contains ``{{`` or ``{%``), rendered as Hugging Face renders
  ``chat_template`` (``messages``, ``add_generation_prompt=True``) but in a sandbox
  (``jinja2.sandbox.ImmutableSandboxedEnvironment``): a template cannot reach Python internals;
- a path to a ``tokenizer_config.json`` (its ``chat_template``, ``bos_token`` and ``eos_token``) or
  to a template file.

Each template carries its stop strings (``<|im_end|>``...), which the chat model adds to the stop list.

**Tools** (:meth:`ChatTemplate.render_chat`): the built-ins render offered tools, assistant tool calls
and tool results in the format their family was trained on, byte for byte as the family's reference
template does (``tests/fixtures/templates``): ``qwen``/``qwen2.5``/``chatml`` in Qwen2.5's Hermes
style (``<tools>`` in the system message, ``<tool_call>`` blocks, ``<tool_response>`` in a user turn),
``internlm2`` in its plugin format (``<|plugin|>``, ``<|action_start|>``, ``environment`` turns), and
``llama3`` as Llama 3.1 does (JSON calls, tools in the first user message, ``ipython`` turns). A Jinja
template receives ``tools`` and the messages' ``tool_calls`` as Hugging Face's ``apply_chat_template``
passes them. Each template also names the :class:`~Xclient.llms._tools.ToolFormat` its calls are
parsed with.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._text import check_text, refuse
from ..exceptions import XclientValueError
from ._tools import HERMES, INTERNLM2, LLAMA3, ToolFormat, format_for_source

Turn = tuple[str, str]  # (role, content)
Tools = Sequence[Mapping[str, Any]]  # OpenAI tool dicts: {"type": "function", "function": {...}}


@dataclasses.dataclass(frozen=True)
class ToolCallTurn:
    """A tool call the assistant made, as it is rendered back into the prompt."""

    id: str | None
    name: str
    arguments: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class ChatTurn:
    """One message for :meth:`ChatTemplate.render_chat`: role, text, and the tool parts (an assistant's
    ``tool_calls``; a tool result's ``tool_call_id`` and tool ``name``)."""

    role: str
    content: str
    tool_calls: tuple[ToolCallTurn, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


#: End-of-turn markers: a user template that contains one stops on it.
KNOWN_STOP_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|action_end|>", "<|endoftext|>")
QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """A way to render chat turns into a prompt, and the strings that end the assistant's turn."""

    name: str
    stop: tuple[str, ...]

    def render(self, turns: Sequence[Turn]) -> str:
        """The prompt for ``turns``, ending with the assistant's generation prompt."""
        raise NotImplementedError

    @property
    def tool_format(self) -> ToolFormat | None:
        """How this template's model writes tool calls; None: it has no tool format."""
        return None

    def render_chat(self, turns: Sequence[ChatTurn], tools: Tools | None = None) -> str:
        """The prompt for ``turns`` with ``tools`` offered (None or empty: none), tool calls and tool
        results included; a template without a tool format refuses tools."""
        return render_without_tools(f"chat_template {self.name!r}", self.render, turns, tools)


def render_without_tools(
    what: str, render: Callable[[Sequence[Turn]], str], turns: Sequence[ChatTurn], tools: Tools | None
) -> str:
    """``render`` of ``turns`` by a template with no tool format (``what``, for the error): it refuses
    ``tools``, tool calls and tool results."""
    if tools or any(turn.tool_calls or turn.role == "tool" for turn in turns):
        raise XclientValueError(
            f"{what} has no tool-call format: choose qwen, qwen2.5, chatml, internlm2, "
            "llama3 or a Jinja template that renders tools"
        )
    return render([(turn.role, turn.content) for turn in turns])


@dataclasses.dataclass(frozen=True)
class _Builtin(ChatTemplate):
    """A template of the form ``begin + turn(role, content)... + generation prompt``."""

    begin: str = ""
    turn: str = "{content}"
    generation_prompt: str = ""
    separator: str = ""
    default_system: str | None = None
    strip: bool = False
    tool_style: str | None = None  # "hermes", "internlm2", "llama3"

    @property
    def tool_format(self) -> ToolFormat | None:
        return _STYLE_FORMATS.get(self.tool_style or "")

    def render_chat(self, turns: Sequence[ChatTurn], tools: Tools | None = None) -> str:
        if self.tool_style is None or not (tools or any(t.tool_calls or t.role == "tool" for t in turns)):
            return super().render_chat(turns, tools)
        return _STYLE_RENDERERS[self.tool_style](self, turns, list(tools or ()))

    def render(self, turns: Sequence[Turn]) -> str:
        if self.default_system is not None and (not turns or turns[0][0] != "system"):
            turns = [("system", self.default_system), *turns]
        parts = [
            self.turn.format(role=role, content=content.strip() if self.strip else content) for role, content in turns
        ]
        return self.begin + self.separator.join(parts) + self.generation_prompt


_CHATML_TURN = "<|im_start|>{role}\n{content}<|im_end|>\n"
_CHATML_PROMPT = "<|im_start|>assistant\n"
QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def _chatml(name: str, stop_last: str = "<|endoftext|>", tool_style: str = "hermes", **fields: Any) -> _Builtin:
    """A ChatML-family template: ``<|im_start|>role\ncontent<|im_end|>\n`` turns."""
    return _Builtin(
        name,
        ("<|im_end|>", stop_last),
        turn=_CHATML_TURN,
        generation_prompt=_CHATML_PROMPT,
        tool_style=tool_style,
        **fields,
    )


BUILTIN_TEMPLATES: dict[str, ChatTemplate] = {
    "qwen": _chatml("qwen", default_system=QWEN_DEFAULT_SYSTEM),
    "qwen2.5": _chatml("qwen2.5", default_system=QWEN25_DEFAULT_SYSTEM),
    "chatml": _chatml("chatml"),
    "internlm2": _chatml("internlm2", "<|action_end|>", "internlm2", begin="<s>"),
    "llama3": _Builtin(
        "llama3",
        ("<|eot_id|>", "<|end_of_text|>"),
        begin="<|begin_of_text|>",
        turn="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
        generation_prompt="<|start_header_id|>assistant<|end_header_id|>\n\n",
        strip=True,
        tool_style="llama3",
    ),
    "raw": _Builtin("raw", (), separator="\n"),
}

_FAMILIES = (
    (re.compile(r"qwen[-_ ]?2[._]5", re.IGNORECASE), "qwen2.5"),
    (re.compile(r"qwen", re.IGNORECASE), "qwen"),
    (re.compile(r"internlm", re.IGNORECASE), "internlm2"),
    (re.compile(r"llama[-_ .]?3", re.IGNORECASE), "llama3"),
)
DEFAULT_TEMPLATE = "chatml"


def template_name_for_model(model_name: str) -> str:
    """The built-in template for a model name (``"chatml"`` when the name says nothing).

    >>> template_name_for_model("Qwen2-0.5B-Instruct"), template_name_for_model("Meta-Llama-3-8B-Instruct")
    ('qwen', 'llama3')
    >>> template_name_for_model("internlm2-chat-7b"), template_name_for_model("ensemble")
    ('internlm2', 'chatml')
    """
    return next((name for pattern, name in _FAMILIES if pattern.search(model_name)), DEFAULT_TEMPLATE)


@dataclasses.dataclass(frozen=True)
class _Jinja(ChatTemplate):
    """A user-supplied Jinja2 template, compiled once and rendered in a sandbox."""

    source: str = ""
    bos_token: str = ""
    eos_token: str = ""
    compiled: Any = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def tool_format(self) -> ToolFormat | None:
        return format_for_source(self.source)

    def render(self, turns: Sequence[Turn]) -> str:
        return self._render([{"role": role, "content": content} for role, content in turns], None)

    def render_chat(self, turns: Sequence[ChatTurn], tools: Tools | None = None) -> str:
        return self._render([_hf_message(turn) for turn in turns], [dict(tool) for tool in tools] if tools else None)

    def _render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        from jinja2.exceptions import SecurityError, TemplateError

        try:
            return str(
                self.compiled.render(
                    messages=messages,
                    tools=tools,
                    add_generation_prompt=True,
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                )
            )
        except SecurityError as e:
            raise XclientValueError(f"chat_template ({self.name}): the sandbox refused an unsafe operation: {e}") from e
        except TemplateError as e:
            raise XclientValueError(f"chat_template ({self.name}): rendering the messages failed: {e}") from e


def _raise_exception(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def compile_jinja(source: str, name: str = "jinja", *, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """A sandboxed Jinja2 chat template; its stop strings are the known end-of-turn markers it
    contains, plus ``eos_token``."""
    try:
        from jinja2 import ext
        from jinja2.exceptions import TemplateSyntaxError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise ImportError("Jinja2 chat templates need jinja2: pip install 'llmops-xclient[langchain]'") from None
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols])
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    env.filters["tojson"] = _tojson
    try:
        compiled = env.from_string(source)
    except TemplateSyntaxError as e:
        raise XclientValueError(f"chat_template ({name}): not a valid Jinja2 template: {e} (line {e.lineno})") from e
    stop = [marker for marker in KNOWN_STOP_MARKERS if marker in source]
    if eos_token and eos_token not in stop:
        stop.append(eos_token)
    return _Jinja(name, tuple(stop), source=source, bos_token=bos_token, eos_token=eos_token, compiled=compiled)


def _token(value: Any) -> str:
    """A special token from ``tokenizer_config.json``: a str or ``{"content": str, ...}``."""
    if isinstance(value, Mapping):
        value = value.get("content", "")
    return value if isinstance(value, str) else ""


def load_tokenizer_config(path: pathlib.Path) -> ChatTemplate:
    """The ``chat_template`` of a Hugging Face ``tokenizer_config.json`` (the ``default`` one when it
    lists several), with its ``bos_token`` and ``eos_token``."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise XclientValueError(f"chat_template: cannot read {str(path)!r} as JSON: {e}") from e
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):  # [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]
        named = {item.get("name"): item.get("template") for item in template if isinstance(item, dict)}
        template = named.get("default", next(iter(named.values()), None))
    if not isinstance(template, str) or not template:
        raise XclientValueError(
            f"chat_template: {str(path)!r} has no 'chat_template' (a Jinja2 string); "
            f"pass a built-in name ({', '.join(BUILTIN_TEMPLATES)}) or a template string instead"
        )
    return compile_jinja(
        template, path.name, bos_token=_token(config.get("bos_token")), eos_token=_token(config.get("eos_token"))
    )


def resolve_template(spec: str | None, model_name: str) -> ChatTemplate:
    """The template named, written or pointed to by ``spec``; ``None``: chosen from ``model_name``."""
    if spec is None:
        return BUILTIN_TEMPLATES[template_name_for_model(model_name)]
    if not isinstance(spec, str) or not spec.strip():
        raise XclientValueError(f"chat_template: expected a name, a Jinja2 string or a path, got {spec!r}")
    if spec.lower() in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[spec.lower()]
    if "{{" in spec or "{%" in spec:
        return compile_jinja(spec)
    path = pathlib.Path(spec).expanduser()
    if path.is_file():
        if path.suffix == ".json":
            return load_tokenizer_config(path)
        return compile_jinja(path.read_text(encoding="utf-8"), path.name)
    raise XclientValueError(
        f"chat_template: expected a built-in name ({', '.join(BUILTIN_TEMPLATES)}), a Jinja2 template string "
        f"or the path of a tokenizer_config.json, got {spec!r} (no such file)"
    )


#: LangChain message types -> chat roles.
_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool", "function": "function"}


def message_turns(messages: Sequence[Any]) -> list[Turn]:
    """(role, text) per LangChain message: system -> ``system``, human -> ``user``, AI -> ``assistant``,
    a ``ChatMessage`` keeps its role. Content may be a str (``""`` included) or a list of text blocks
    (str or ``{"type": "text", "text": str}``), joined; anything else is an XclientValueError naming
    the message (``messages[1].content: expected a str or a list of text blocks, got int 5``). The
    tool parts are left out (:func:`chat_turns` keeps them)."""
    return [(turn.role, turn.content) for turn in chat_turns(messages)]


def _text(content: Any, index: int) -> str:
    name = f"messages[{index}].content"
    if isinstance(content, str):
        return check_text(content, name)
    if not isinstance(content, (list, tuple)):
        raise refuse(name, "a str or a list of text blocks", content)
    parts = []
    for number, block in enumerate(content):
        if isinstance(block, str):
            parts.append(check_text(block, f"{name}[{number}]"))
        elif isinstance(block, Mapping) and block.get("type") == "text":
            parts.append(check_text(block.get("text"), f"{name}[{number}]['text']"))
        else:
            kind = block.get("type") if isinstance(block, Mapping) else type(block).__name__
            raise XclientValueError(
                f"messages[{index}]: only text content can be sent to a text LLM, got a {kind!r} block"
            )
    return "".join(parts)


# -- tools: the family renderers ---------------------------------------------------------------------


def _json(value: Any, indent: int | None = None) -> str:
    """JSON as the reference templates write it (Hugging Face's ``tojson``: no ASCII escaping)."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


_HERMES_TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_HERMES_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)


def _render_hermes(template: _Builtin, turns: Sequence[ChatTurn], tools: list[Mapping[str, Any]]) -> str:
    """Qwen2.5's ``chat_template`` (tests/fixtures/templates/qwen2.5-instruct.jinja), with the template's
    own default system message (none for ``chatml``)."""
    first_system = bool(turns) and turns[0].role == "system"
    system = turns[0].content if first_system else template.default_system
    out = []
    if tools:
        block = _HERMES_TOOLS_HEAD + "".join("\n" + _json(tool) for tool in tools) + _HERMES_TOOLS_TAIL
        out.append(f"<|im_start|>system\n{system}\n\n{block}<|im_end|>\n" if system is not None else "")
        if system is None:
            out.append(f"<|im_start|>system\n{block}<|im_end|>\n")
    elif system is not None:
        out.append(f"<|im_start|>system\n{system}<|im_end|>\n")
    for index, turn in enumerate(turns):
        if index == 0 and first_system:
            continue
        if turn.role == "assistant" and turn.tool_calls:
            calls = "".join(
                f'\n<tool_call>\n{{"name": "{call.name}", "arguments": {_json(call.arguments)}}}\n</tool_call>'
                for call in turn.tool_calls
            )
            out.append("<|im_start|>assistant" + ("\n" + turn.content if turn.content else "") + calls + "<|im_end|>\n")
        elif turn.role == "tool":
            opens = index == 0 or turns[index - 1].role != "tool"
            closes = index == len(turns) - 1 or turns[index + 1].role != "tool"
            out.append(
                ("<|im_start|>user" if opens else "")
                + f"\n<tool_response>\n{turn.content}\n</tool_response>"
                + ("<|im_end|>\n" if closes else "")
            )
        else:
            out.append(f"<|im_start|>{turn.role}\n{turn.content}<|im_end|>\n")
    return "".join(out) + template.generation_prompt


def _render_internlm2(template: _Builtin, turns: Sequence[ChatTurn], tools: list[Mapping[str, Any]]) -> str:
    """InternLM2's plugin format, as vLLM's ``tool_chat_template_internlm2_tool.jinja`` renders it
    (tests/fixtures/templates/internlm2-tool.jinja)."""
    out = [template.begin]
    rest = list(turns)
    if rest and rest[0].role == "system":
        out.append(f"<|im_start|>system\n{rest.pop(0).content}<|im_end|>\n")
    if tools:
        functions = ", ".join(_json(tool.get("function", tool)) for tool in tools)
        out.append(f"<|im_start|>system name=<|plugin|>\n[{functions}]<|im_end|>\n")
    for turn in rest:
        if turn.role == "assistant" and turn.tool_calls:
            calls = "".join(
                f'<|action_start|><|plugin|>\n{{"name": "{call.name}", "arguments": {_json(call.arguments)}}}'
                "<|action_end|>"
                for call in turn.tool_calls
            )
            out.append(f"<|im_start|>assistant\n{turn.content}{calls}<|im_end|>\n")
        elif turn.role == "tool":
            out.append(f"<|im_start|>environment name=<|plugin|>\n{turn.content}<|im_end|>\n")
        else:
            out.append(f"<|im_start|>{turn.role}\n{turn.content}<|im_end|>\n")
    return "".join(out) + template.generation_prompt


_LLAMA31_DATE = "26 Jul 2024"  # the Llama 3.1 template's date_string when none is passed
_LLAMA31_TOOLS_INTRO = (
    "Given the following functions, please respond with a JSON for a function call with its proper arguments "
    'that best answers the given prompt.\n\nRespond in the format {"name": function name, "parameters": '
    "dictionary of argument name and its value}.Do not use variables.\n\n"
)


def _render_llama3(template: _Builtin, turns: Sequence[ChatTurn], tools: list[Mapping[str, Any]]) -> str:
    """Llama 3.1's ``chat_template`` (tests/fixtures/templates/llama-3.1-instruct.jinja): JSON tool calls,
    the tools in the first user message, tool results as ``ipython`` turns. Several calls in one turn
    (the reference refuses them) are written one after the other, separated by ``; ``."""
    header = "<|start_header_id|>{}<|end_header_id|>\n\n".format
    rest = list(turns)
    system = rest.pop(0).content.strip() if rest and rest[0].role == "system" else ""
    out = [template.begin, header("system")]
    if tools:
        out.append("Environment: ipython\n")
    out.append(f"Cutting Knowledge Date: December 2023\nToday Date: {_LLAMA31_DATE}\n\n{system}<|eot_id|>")
    if tools:
        if not rest:
            raise XclientValueError("chat_template llama3: tools need a first user message to be put in")
        first = rest.pop(0).content.strip()
        listed = "".join(_json(tool, indent=4) + "\n\n" for tool in tools)
        out.append(header("user") + _LLAMA31_TOOLS_INTRO + listed + first + "<|eot_id|>")
    for turn in rest:
        if turn.role == "assistant" and turn.tool_calls:
            calls = "; ".join(
                f'{{"name": "{call.name}", "parameters": {_json(call.arguments)}}}' for call in turn.tool_calls
            )
            out.append(header("assistant") + calls + "<|eot_id|>")
        elif turn.role in ("tool", "ipython"):
            out.append(header("ipython") + _json(turn.content) + "<|eot_id|>")
        else:
            out.append(header(turn.role) + turn.content.strip() + "<|eot_id|>")
    return "".join(out) + template.generation_prompt


_STYLE_RENDERERS = {"hermes": _render_hermes, "internlm2": _render_internlm2, "llama3": _render_llama3}
_STYLE_FORMATS: dict[str, ToolFormat] = {"hermes": HERMES, "internlm2": INTERNLM2, "llama3": LLAMA3}


def _hf_message(turn: ChatTurn) -> dict[str, Any]:
    """A message as Hugging Face's ``apply_chat_template`` passes it to a Jinja template."""
    message: dict[str, Any] = {"role": turn.role, "content": turn.content}
    if turn.tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": dict(call.arguments)}}
            for call in turn.tool_calls
        ]
    if turn.tool_call_id is not None:
        message["tool_call_id"] = turn.tool_call_id
    if turn.name is not None and turn.role == "tool":
        message["name"] = turn.name
    return message


#: Content blocks that repeat an AI message's tool calls (Anthropic-style); dropped, tool_calls render them.
_CALL_BLOCKS = frozenset({"tool_use", "tool_call", "function_call"})


def chat_turns(messages: Sequence[Any]) -> list[ChatTurn]:
    """:func:`message_turns` with the tool parts: an AI message's ``tool_calls`` (its ``tool_use`` blocks
    are the same calls, and are dropped), a ``ToolMessage``'s ``tool_call_id`` and ``name``. A tool
    result that is not text (a list of JSON values, a dict) is rendered as JSON."""
    turns = []
    for index, message in enumerate(messages):
        kind = getattr(message, "type", None)
        role = message.role if kind == "chat" else _ROLES.get(str(kind))
        if role is None:
            raise XclientValueError(f"messages[{index}]: unsupported message type {type(message).__name__}")
        content = message.content
        calls: tuple[ToolCallTurn, ...] = ()
        if kind == "ai":
            calls = tuple(
                ToolCallTurn(call.get("id"), call["name"], call.get("args") or {})
                for call in getattr(message, "tool_calls", None) or ()
            )
            if isinstance(content, list):
                content = [b for b in content if not (isinstance(b, Mapping) and b.get("type") in _CALL_BLOCKS)]
        if kind == "tool" and not isinstance(content, str) and not _is_text_blocks(content):
            content = _json(content)
        turns.append(
            ChatTurn(
                role,
                _text(content, index),
                calls,
                tool_call_id=getattr(message, "tool_call_id", None) if kind == "tool" else None,
                name=getattr(message, "name", None) if kind == "tool" else None,
            )
        )
    return turns


def _is_text_blocks(content: Any) -> bool:
    return isinstance(content, (list, tuple)) and all(
        isinstance(b, str) or (isinstance(b, Mapping) and b.get("type") == "text") for b in content
    )
