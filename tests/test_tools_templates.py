"""Tool prompts: the built-in templates render tools, tool calls and tool results byte for byte as the
model families' reference chat templates do (tests/fixtures/templates, rendered here with jinja2 the
way Hugging Face's apply_chat_template renders them), and Jinja templates receive tools as HF passes them."""

from __future__ import annotations

import json
import pathlib

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool

from Xclient.exceptions import XclientValueError
from Xclient.llms._templates import BUILTIN_TEMPLATES, chat_turns, resolve_template, template_name_for_model

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "templates"


@tool
def get_weather(city: str, unit: str = "摄氏") -> str:
    """查询一个城市的天气。"""
    return f"{city}：晴，25度"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


TOOLS = [convert_to_openai_tool(get_weather), convert_to_openai_tool(add)]


def _reference(name: str, bos_token: str = "") -> object:
    """A reference template compiled as transformers compiles chat templates (sandbox, trim_blocks,
    lstrip_blocks, loopcontrols, tojson without ASCII escaping, raise_exception)."""
    from jinja2 import ext
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    template = env.from_string((FIXTURES / name).read_text(encoding="utf-8"))
    return lambda messages, tools: template.render(
        messages=messages, tools=tools, add_generation_prompt=True, bos_token=bos_token
    )


def _hf(messages, *, string_arguments: bool = False) -> list[dict]:
    """LangChain messages as the dicts apply_chat_template takes (OpenAI-style tool_calls)."""
    roles = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}
    out = []
    for message in messages:
        entry = {"role": roles[message.type], "content": message.content}
        if message.type == "ai" and message.tool_calls:
            entry["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {
                        "name": call["name"],
                        "arguments": json.dumps(call["args"], ensure_ascii=False) if string_arguments else call["args"],
                    },
                }
                for call in message.tool_calls
            ]
        if message.type == "tool":
            entry["tool_call_id"] = message.tool_call_id
        out.append(entry)
    return out


QUESTION = HumanMessage("北京今天天气怎么样？再算一下 2 加 3。")
CALL_WEATHER = {"name": "get_weather", "args": {"city": "北京"}, "id": "call_1"}
CALL_ADD = {"name": "add", "args": {"a": 2, "b": 3}, "id": "call_2"}
PARALLEL = [
    QUESTION,
    AIMessage("", tool_calls=[CALL_WEATHER, CALL_ADD]),
    ToolMessage("北京：晴，25度", tool_call_id="call_1"),
    ToolMessage("5", tool_call_id="call_2"),
    AIMessage("北京晴，25度；2 加 3 等于 5。"),
    HumanMessage("谢谢！"),
]
SEQUENTIAL = [
    QUESTION,
    AIMessage("我先查天气。", tool_calls=[CALL_WEATHER]),
    ToolMessage("北京：晴，25度", tool_call_id="call_1"),
    AIMessage("", tool_calls=[CALL_ADD]),
    ToolMessage("5", tool_call_id="call_2"),
]
SYSTEM = SystemMessage("你是一个会使用工具的助手。")
CONVERSATIONS = {
    "question": [QUESTION],
    "system+question": [SYSTEM, QUESTION],
    "parallel calls": PARALLEL,
    "system+sequential calls": [SYSTEM, *SEQUENTIAL],
}


@pytest.mark.parametrize("with_tools", [True, False], ids=["tools", "no-tools"])
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_qwen25_builtin_renders_tools_like_qwen25_instruct_chat_template(conversation, with_tools):
    messages = CONVERSATIONS[conversation]
    tools = TOOLS if with_tools else None
    reference = _reference("qwen2.5-instruct.jinja")(_hf(messages), tools)
    assert BUILTIN_TEMPLATES["qwen2.5"].render_chat(chat_turns(messages), tools) == reference


@pytest.mark.parametrize("conversation", ["system+question", "system+sequential calls"])
def test_qwen2_and_chatml_builtins_write_the_same_hermes_blocks_when_a_system_message_is_given(conversation):
    messages = CONVERSATIONS[conversation]
    reference = _reference("qwen2.5-instruct.jinja")(_hf(messages), TOOLS)
    for name in ("qwen", "chatml"):
        assert BUILTIN_TEMPLATES[name].render_chat(chat_turns(messages), TOOLS) == reference


def test_qwen2_builtin_keeps_qwen2s_default_system_message_before_the_tools():
    prompt = BUILTIN_TEMPLATES["qwen"].render_chat(chat_turns([QUESTION]), TOOLS)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\n")
    assert '"description": "查询一个城市的天气。"' in prompt  # no ASCII escaping, as HF's tojson
    chatml = BUILTIN_TEMPLATES["chatml"].render_chat(chat_turns([QUESTION]), TOOLS)
    assert chatml.startswith("<|im_start|>system\n# Tools\n\n")


# Without tools and tool turns the llama3 built-in is Llama 3's own template (test_templates.py).
LLAMA31_CASES = [
    ("question", True),
    ("system+question", True),
    ("system+sequential calls", True),
    ("system+sequential calls", False),
]


@pytest.mark.parametrize(("conversation", "with_tools"), LLAMA31_CASES)
def test_llama3_builtin_renders_tools_like_llama31_instruct_chat_template(conversation, with_tools):
    messages = CONVERSATIONS[conversation]
    tools = TOOLS if with_tools else None
    reference = _reference("llama-3.1-instruct.jinja", "<|begin_of_text|>")(_hf(messages), tools)
    assert BUILTIN_TEMPLATES["llama3"].render_chat(chat_turns(messages), tools) == reference


def test_llama3_builtin_writes_several_calls_of_one_turn_separated_by_semicolons():
    prompt = BUILTIN_TEMPLATES["llama3"].render_chat(chat_turns(PARALLEL), TOOLS)
    assert (
        '{"name": "get_weather", "parameters": {"city": "北京"}}; {"name": "add", "parameters": {"a": 2, "b": 3}}'
        in prompt
    )
    with pytest.raises(XclientValueError, match="first user message"):
        BUILTIN_TEMPLATES["llama3"].render_chat(chat_turns([SYSTEM]), TOOLS)


@pytest.mark.parametrize("with_tools", [True, False], ids=["tools", "no-tools"])
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_internlm2_builtin_renders_tools_like_the_internlm2_plugin_template(conversation, with_tools):
    messages = CONVERSATIONS[conversation]
    tools = TOOLS if with_tools else None
    reference = _reference("internlm2-tool.jinja", "<s>")(_hf(messages, string_arguments=True), tools)
    assert BUILTIN_TEMPLATES["internlm2"].render_chat(chat_turns(messages), tools) == reference


def test_a_jinja_template_receives_tools_and_tool_calls_as_apply_chat_template_passes_them(tmp_path):
    source = (FIXTURES / "qwen2.5-instruct.jinja").read_text(encoding="utf-8")
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": source, "eos_token": "<|im_end|>"}), encoding="utf-8")
    template = resolve_template(str(config), "my-model")
    assert template.tool_format is not None and template.tool_format.name == "hermes"
    for messages in CONVERSATIONS.values():
        reference = _reference("qwen2.5-instruct.jinja")(_hf(messages), TOOLS)
        assert template.render_chat(chat_turns(messages), TOOLS) == reference
        assert template.render_chat(chat_turns(messages)) == _reference("qwen2.5-instruct.jinja")(_hf(messages), None)
    llama = resolve_template((FIXTURES / "llama-3.1-instruct.jinja").read_text(encoding="utf-8"), "m")
    assert llama.tool_format is not None and llama.tool_format.name == "llama3"


def test_models_are_matched_to_their_familys_tool_format():
    assert template_name_for_model("Qwen2.5-7B-Instruct") == "qwen2.5"
    assert template_name_for_model("qwen2_5-coder") == "qwen2.5"
    assert template_name_for_model("Qwen2-0.5B-Instruct") == "qwen"
    formats = {name: getattr(t.tool_format, "name", None) for name, t in BUILTIN_TEMPLATES.items()}
    assert formats == {
        "qwen": "hermes",
        "qwen2.5": "hermes",
        "chatml": "hermes",
        "internlm2": "internlm2",
        "llama3": "llama3",
        "raw": None,
    }


def test_a_template_without_a_tool_format_refuses_tools_naming_the_ones_that_have_one():
    with pytest.raises(XclientValueError, match="'raw' has no tool-call format"):
        BUILTIN_TEMPLATES["raw"].render_chat(chat_turns([QUESTION]), TOOLS)


def test_tool_results_that_are_not_text_are_rendered_as_json_and_tool_use_blocks_are_not_repeated():
    messages = [
        QUESTION,
        AIMessage(
            [
                {"type": "text", "text": "查一下。"},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}},
            ],
            tool_calls=[CALL_WEATHER],
        ),
        ToolMessage([{"温度": 25}], tool_call_id="call_1"),
    ]
    turns = chat_turns(messages)
    assert turns[1].content == "查一下。" and turns[1].tool_calls[0].arguments == {"city": "北京"}
    assert turns[2].content == '[{"温度": 25}]' and turns[2].tool_call_id == "call_1"
