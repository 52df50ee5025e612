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
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._text import check_text, refuse
from ..exceptions import XclientValueError

Turn = tuple[str, str]  # (role, content)

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


@dataclasses.dataclass(frozen=True)
class _Builtin(ChatTemplate):
    """A template of the form ``begin + turn(role, content)... + generation prompt``."""

    begin: str = ""
    turn: str = "{content}"
    generation_prompt: str = ""
    separator: str = ""
    default_system: str | None = None
    strip: bool = False

    def render(self, turns: Sequence[Turn]) -> str:
        if self.default_system is not None and (not turns or turns[0][0] != "system"):
            turns = [("system", self.default_system), *turns]
        parts = [
            self.turn.format(role=role, content=content.strip() if self.strip else content) for role, content in turns
        ]
        return self.begin + self.separator.join(parts) + self.generation_prompt


_CHATML_TURN = "<|im_start|>{role}\n{content}<|im_end|>\n"
_CHATML_PROMPT = "<|im_start|>assistant\n"
BUILTIN_TEMPLATES: dict[str, ChatTemplate] = {
    "qwen": _Builtin(
        "qwen",
        ("<|im_end|>", "<|endoftext|>"),
        turn=_CHATML_TURN,
        generation_prompt=_CHATML_PROMPT,
        default_system=QWEN_DEFAULT_SYSTEM,
    ),
    "chatml": _Builtin("chatml", ("<|im_end|>", "<|endoftext|>"), turn=_CHATML_TURN, generation_prompt=_CHATML_PROMPT),
    "internlm2": _Builtin(
        "internlm2", ("<|im_end|>", "<|action_end|>"), begin="<s>", turn=_CHATML_TURN, generation_prompt=_CHATML_PROMPT
    ),
    "llama3": _Builtin(
        "llama3",
        ("<|eot_id|>", "<|end_of_text|>"),
        begin="<|begin_of_text|>",
        turn="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
        generation_prompt="<|start_header_id|>assistant<|end_header_id|>\n\n",
        strip=True,
    ),
    "raw": _Builtin("raw", (), separator="\n"),
}

_FAMILIES = (
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

    def render(self, turns: Sequence[Turn]) -> str:
        from jinja2.exceptions import SecurityError, TemplateError

        messages = [{"role": role, "content": content} for role, content in turns]
        try:
            return str(
                self.compiled.render(
                    messages=messages, add_generation_prompt=True, bos_token=self.bos_token, eos_token=self.eos_token
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
    the message (``messages[1].content: expected a str or a list of text blocks, got int 5``)."""
    turns = []
    for index, message in enumerate(messages):
        kind = getattr(message, "type", None)
        role = message.role if kind == "chat" else _ROLES.get(str(kind))
        if role is None:
            raise XclientValueError(f"messages[{index}]: unsupported message type {type(message).__name__}")
        turns.append((role, _text(message.content, index)))
    return turns


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
