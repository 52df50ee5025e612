"""lagent-style meta templates: the prompt rendering of lagent's ``LMTemplateParser``, written for Xclient.

A meta template is a list of role dicts (lagent's ``INTERNLM2_META`` is the reference)::

    [{"role": "system", "begin": "<|im_start|>system\\n", "end": "<|im_end|>\\n"},
     {"role": "user", "begin": "<|im_start|>user\\n", "end": "<|im_end|>\\n"},
     {"role": "assistant", "begin": "<|im_start|>assistant\\n", "end": "<|im_end|>\\n", "generate": True}]

- ``begin`` is a str, or a dict with ``without_name``, ``with_name`` (a format string with ``{name}``)
  and ``name`` (a message name -> what ``{name}`` becomes, e.g. ``plugin`` -> ``<|plugin|>``).
- ``end`` closes a message; ``fallback_role`` renders a role as another one; ``api_role`` is the
  OpenAI-style role a template role answers to (``user`` for lagent's ``human``, say).
- The last message is left open when its role has ``generate=True`` (the model continues it);
  otherwise the ``assistant`` role's ``begin`` follows it (or, without one, that of the role with
  ``generate=True``), so the model answers.
- A str item of the dialog is copied as it is. Without a meta template the dialog's texts are joined
  one line apart, as lagent does.

Every ``end`` (stripped of whitespace) is also a stop word: the model ends its turn with it.

>>> template = MetaTemplate([{"role": "user", "begin": "<u>", "end": "</u>\\n"},
...                          {"role": "assistant", "begin": "<a>", "end": "</a>\\n", "generate": True}])
>>> template.render([("user", "你好")])
'<u>你好</u>\\n<a>'
>>> template.stop
('</u>', '</a>')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..exceptions import XclientValueError
from ._templates import ChatTurn, Tools, render_without_tools
from ._tools import ToolFormat


class MetaTemplate:
    """A lagent meta template: :meth:`render` (Xclient's chat turns), :meth:`render_dialog` (lagent's
    message dicts), :attr:`stop`. It has the interface of :class:`~Xclient.llms._templates.ChatTemplate`."""

    def __init__(self, meta_template: Sequence[Mapping[str, Any]]) -> None:
        if not isinstance(meta_template, Sequence) or isinstance(meta_template, (str, bytes)) or not meta_template:
            raise XclientValueError(
                f"meta_template: expected a non-empty list of role dicts, got {meta_template!r:.80}"
            )
        self.roles: dict[str, dict[str, Any]] = {}
        for index, item in enumerate(meta_template):
            if not isinstance(item, Mapping) or not isinstance(item.get("role"), str):
                raise XclientValueError(f"meta_template[{index}]: expected a dict with a 'role' str, got {item!r:.80}")
            if item["role"] in self.roles:
                raise XclientValueError(f"meta_template[{index}]: role {item['role']!r} appears twice")
            for key in ("begin", "end"):
                value = item.get(key, "")
                if not isinstance(value, (str, Mapping)) or (key == "end" and not isinstance(value, str)):
                    raise XclientValueError(
                        f"meta_template[{index}] ({item['role']!r}): {key!r} must be a str"
                        + (" or a dict" if key == "begin" else "")
                        + f", got {value!r:.60}"
                    )
            self.roles[item["role"]] = dict(item)
        self._by_api_role = {cfg["api_role"]: name for name, cfg in self.roles.items() if cfg.get("api_role")}
        ends = (str(cfg.get("end", "")).strip() for cfg in self.roles.values())
        self.stop: tuple[str, ...] = tuple(dict.fromkeys(end for end in ends if end))

    def render(self, turns: Sequence[tuple[str, str]]) -> str:
        """The prompt for Xclient's (role, text) turns (``system``, ``user``, ``assistant``...)."""
        return self.render_dialog([{"role": role, "content": text} for role, text in turns])

    @property
    def tool_format(self) -> ToolFormat | None:
        """None: a meta template has no tool-call format."""
        return None

    def render_chat(self, turns: Sequence[ChatTurn], tools: Tools | None = None) -> str:
        """:meth:`render` of chat turns; tools, tool calls and tool results are refused."""
        return render_without_tools("meta_template", self.render, turns, tools)

    def render_dialog(self, dialog: str | Sequence[str | Mapping[str, Any]]) -> str:
        """The prompt for a lagent dialog: a str (as it is), or a list of str items and message dicts
        (``role``, ``content``, optional ``name``)."""
        if isinstance(dialog, str):
            return dialog
        parts = []
        for index, item in enumerate(dialog):
            if isinstance(item, str):
                parts.append(item)
            else:
                parts.append(self._message(item, last=index == len(dialog) - 1))
        return "".join(parts)

    def _config(self, role: str) -> dict[str, Any]:
        name = role if role in self.roles else self._by_api_role.get(role)
        if name is None:
            raise XclientValueError(
                f"meta_template has no role {role!r} (nor a role with api_role {role!r}); its roles: {list(self.roles)}"
            )
        config = self.roles[name]
        fallback = config.get("fallback_role")
        return self.roles[fallback] if fallback else config

    def _message(self, message: Mapping[str, Any], *, last: bool) -> str:
        config = self._config(str(message.get("role")))
        text = _begin(config, message.get("name")) + str(message.get("content", ""))
        if last and config.get("generate", False):
            return text  # left open: the model continues this message
        text += config.get("end", "")
        answering = self._answering()
        if last and answering is not None and config["role"] != answering["role"]:
            text += _begin(answering, None)
        return text

    def _answering(self) -> dict[str, Any] | None:
        """The role the model answers as: ``assistant`` (as lagent has it), else the one with ``generate``."""
        if "assistant" in self.roles:
            return self.roles["assistant"]
        return next((config for config in self.roles.values() if config.get("generate")), None)


def _begin(config: Mapping[str, Any], name: Any) -> str:
    """A role's opening for a message with or without a name (lagent's ``_format_begin``)."""
    begin = config.get("begin", "")
    if isinstance(begin, str):
        return begin
    if name is None:
        return str(begin.get("without_name", ""))
    shown = begin.get("name", {}).get(name, name)
    return str(begin.get("with_name", "")).format(name=shown)


def join_without_template(dialog: str | Sequence[str | Mapping[str, Any]]) -> str:
    """What lagent sends for a dialog when the model has no meta template: the texts, one line apart."""
    if isinstance(dialog, str):
        return dialog
    prompt, separator = "", ""
    for item in dialog:
        if isinstance(item, str):
            if item:
                prompt += separator + item
        elif item.get("content", ""):
            prompt += separator + item.get("prompt", "")
        separator = "\n"
    return prompt
