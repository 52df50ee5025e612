"""Chat templates: the built-ins match the models' own Jinja templates, choice by name or override,
sandboxed user templates, tokenizer_config.json, stop tokens, and LangChain message -> role mapping."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage

from Xclient.exceptions import XclientValueError
from Xclient.llms._templates import (
    BUILTIN_TEMPLATES,
    compile_jinja,
    message_turns,
    resolve_template,
    template_name_for_model,
)

# The chat_template of each family's tokenizer_config.json, as the models ship it.
QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
INTERNLM2 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
OFFICIAL = {
    "qwen": (QWEN2, "", "<|im_end|>"),
    "internlm2": (INTERNLM2, "<s>", "</s>"),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
}
CONVERSATIONS = [
    [("user", "介绍一下你自己")],
    [
        ("system", "你是一个乐于助人的助手。"),
        ("user", "你好"),
        ("assistant", "你好！有什么可以帮你？"),
        ("user", "  讲个笑话 "),
    ],
    [("system", "a"), ("system", "b"), ("user", "x"), ("user", "y"), ("assistant", "z"), ("user", "how are you")],
]


@pytest.mark.parametrize("name", sorted(OFFICIAL))
@pytest.mark.parametrize("turns", CONVERSATIONS)
def test_builtin_templates_render_exactly_like_the_models_own_jinja_templates(name, turns):
    source, bos, eos = OFFICIAL[name]
    official = compile_jinja(source, bos_token=bos, eos_token=eos)
    assert BUILTIN_TEMPLATES[name].render(turns) == official.render(turns)


def test_qwen_chatml_adds_the_default_system_message_only_when_none_is_given():
    qwen = BUILTIN_TEMPLATES["qwen"]
    assert qwen.render([("user", "你好")]) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    )
    assert qwen.render([("system", "用中文回答。"), ("user", "hi")]).startswith(
        "<|im_start|>system\n用中文回答。<|im_end|>"
    )
    assert (
        BUILTIN_TEMPLATES["chatml"].render([("user", "hi")])
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert BUILTIN_TEMPLATES["raw"].render([("system", "规则"), ("user", "问题")]) == "规则\n问题"


def test_template_is_chosen_from_the_model_name_and_overridable_by_name():
    names = {
        "Qwen2-0.5B-Instruct": "qwen",
        "qwen1.5-14b-chat": "qwen",
        "internlm2-chat-7b": "internlm2",
        "Meta-Llama-3-8B-Instruct": "llama3",
        "llama3.1-70b": "llama3",
        "ensemble": "chatml",
        "Llama-2-7b-chat": "chatml",
    }
    assert {model: template_name_for_model(model) for model in names} == names
    assert resolve_template(None, "Qwen2-7B").name == "qwen"
    assert resolve_template("Llama3", "Qwen2-7B").name == "llama3"  # an explicit name wins, any case
    assert resolve_template("raw", "Qwen2-7B").render([("user", "原样")]) == "原样"


def test_template_stop_tokens():
    assert BUILTIN_TEMPLATES["qwen"].stop == ("<|im_end|>", "<|endoftext|>")
    assert BUILTIN_TEMPLATES["internlm2"].stop == ("<|im_end|>", "<|action_end|>")
    assert BUILTIN_TEMPLATES["llama3"].stop == ("<|eot_id|>", "<|end_of_text|>")
    assert BUILTIN_TEMPLATES["raw"].stop == ()
    # a user template stops on the end-of-turn markers it contains, and on its eos_token
    assert compile_jinja(QWEN2).stop == ("<|im_end|>",)
    assert compile_jinja(LLAMA3, eos_token="<|end_of_text|>").stop == ("<|eot_id|>", "<|end_of_text|>")


def test_jinja_string_and_tokenizer_config_json(tmp_path):
    source = (
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    template = resolve_template(source, "Qwen2-7B")
    assert template.render([("user", "你好")]) == "[user]你好\n[assistant]"

    config = tmp_path / "tokenizer_config.json"
    config.write_text(
        json.dumps(
            {"chat_template": LLAMA3, "bos_token": {"content": "<|begin_of_text|>"}, "eos_token": "<|end_of_text|>"}
        ),
        encoding="utf-8",
    )
    loaded = resolve_template(str(config), "whatever")
    assert loaded.render([("user", "hi")]) == BUILTIN_TEMPLATES["llama3"].render([("user", "hi")])
    assert loaded.stop == ("<|eot_id|>", "<|end_of_text|>")

    several = tmp_path / "several.json"
    several.write_text(
        json.dumps({"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": QWEN2}]})
    )
    assert resolve_template(str(several), "m").render([("user", "hi")]) == BUILTIN_TEMPLATES["qwen"].render(
        [("user", "hi")]
    )

    jinja_file = tmp_path / "chat.jinja"
    jinja_file.write_text(INTERNLM2, encoding="utf-8")
    assert resolve_template(str(jinja_file), "m").render([("user", "hi")]).startswith("<|im_start|>user")


def test_bad_templates_are_refused_with_clear_errors(tmp_path):
    with pytest.raises(XclientValueError, match="built-in name.*'no-such-template'"):
        resolve_template("no-such-template", "Qwen2-7B")
    with pytest.raises(XclientValueError, match="not a valid Jinja2 template"):
        resolve_template("{% for m in messages %}", "m")
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(XclientValueError, match="has no 'chat_template'"):
        resolve_template(str(tmp_path / "empty.json"), "m")
    refusing = compile_jinja("{% if messages[0].role != 'user' %}{{ raise_exception('只接受用户消息') }}{% endif %}")
    with pytest.raises(XclientValueError, match="只接受用户消息"):
        refusing.render([("system", "x")])


def test_user_templates_render_in_a_sandbox():
    escapes = [
        "{{ messages.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{% set _ = messages.append({'role': 'user', 'content': 'x'}) %}",  # immutable: no mutation
    ]
    for source in escapes:
        with pytest.raises(XclientValueError, match="chat_template"):
            compile_jinja(source).render([("user", "hi")])


def test_messages_map_to_roles_system_user_assistant_and_multi_turn():
    messages = [
        SystemMessage("你是助手。"),
        HumanMessage("你好", name="小明"),
        AIMessage("你好！"),
        HumanMessage([{"type": "text", "text": "再"}, "说一遍"]),
        ChatMessage(role="observation", content="结果"),
        ToolMessage("42", tool_call_id="1"),
    ]
    assert message_turns(messages) == [
        ("system", "你是助手。"),
        ("user", "你好"),
        ("assistant", "你好！"),
        ("user", "再说一遍"),
        ("observation", "结果"),
        ("tool", "42"),
    ]
    image = HumanMessage([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
    with pytest.raises(XclientValueError, match=r"messages\[0\]: only text content.*'image_url'"):
        message_turns([image])
