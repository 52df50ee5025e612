"""Xclient against the vLLM backend as each release's ``src/model.py`` answers (docs/protocols.md section 1),
over both protocols: the test models ``vllm_r23_10`` (the full sample config, a required ``stream``,
cumulative text, an empty final response), ``vllm_legacy`` (r24.02: cumulative, final flag on the last
text, no response after a cancellation), ``vllm_r24_07`` (deltas, no response after a cancellation) and
``vllm_r26_01`` (the ``return_*`` outputs, the ``lora_name`` error), and the demo ``Qwen2-0.5B-Instruct``
(r24.12)."""

from __future__ import annotations

import io
import json
import sys

import pytest

from Xclient import AsyncioDecoupledModelClient, DecoupledModelClient
from Xclient import exceptions as errors
from Xclient.cli import main
from Xclient.llms import ChatMetaLM, MetaLM
from Xclient.llms._templates import BUILTIN_TEMPLATES
from Xclient.server._demo_llm import answer, tokenize

RELEASES = ("vllm_r23_10", "vllm_legacy", "vllm_r24_07", "vllm_r26_01", "Qwen2-0.5B-Instruct")
CUMULATIVE = ("vllm_r23_10", "vllm_legacy")  # vLLM <= 0.3: prompt + all text so far, stop starts taken back
QUESTION = "请用一句话介绍你自己"


def chatml(question: str) -> str:
    return BUILTIN_TEMPLATES["qwen"].render([("user", question)])


def expected(question: str, model: str) -> str:
    return answer(chatml(question), model)


@pytest.mark.parametrize("model", RELEASES)
def test_chat_invoke_and_stream_give_the_answer_on_every_release(url, model):
    llm = ChatMetaLM(server_url=url, model=model, chat_template="qwen")
    message = llm.invoke(QUESTION)
    assert message.content == expected(QUESTION, model)
    assert "".join(chunk.content for chunk in llm.stream(QUESTION)) == expected(QUESTION, model)
    assert MetaLM(server_url=url, model=model, max_tokens=6).invoke("你好") == "".join(
        tokenize(answer("你好", model))[:6]
    )


@pytest.mark.parametrize("model", RELEASES)
async def test_async_chat_gives_the_answer_on_every_release(url, model):
    llm = ChatMetaLM(server_url=url, model=model, chat_template="qwen", max_tokens=8)
    first = "".join(tokenize(expected(QUESTION, model))[:8])
    assert (await llm.ainvoke(QUESTION)).content == first
    assert "".join([chunk.content async for chunk in llm.astream(QUESTION)]) == first
    await llm.aclose()


def test_r23_10_requires_stream_and_every_path_sends_it(triton_server):
    with DecoupledModelClient(triton_server.grpc_url, "vllm_r23_10") as client:
        config = client.model_config
    assert not config.input("stream").optional  # the sample config of r23.10, written out in full
    for url in (triton_server.grpc_url, triton_server.http_url):
        llm = ChatMetaLM(server_url=url, model="vllm_r23_10", chat_template="qwen", max_tokens=5)
        assert llm.invoke("今天天气怎么样").content == "你好！我是"  # not streaming: stream=False is sent


def _stop_cases():
    return [
        ("今天天气怎么样", ["天气"], "“今天"),  # the engine's text ends "今天", after streaming "今天天"
        ("The quick brown fox jumps over the lazy dog", [" fox jumps"], '"The quick brown'),
    ]


@pytest.mark.parametrize("model", CUMULATIVE)
@pytest.mark.parametrize(("question", "stop", "end"), _stop_cases())
def test_a_stop_start_the_engine_takes_back_is_not_delivered(url, model, question, stop, end):
    llm = ChatMetaLM(server_url=url, model=model, chat_template="qwen", stop=stop)
    streamed = "".join(chunk.content for chunk in llm.stream(question))
    assert streamed.endswith(end)
    assert streamed == llm.invoke(question).content
    completion = MetaLM(server_url=url, model=model, stop=stop)
    assert "".join(completion.stream(question)).endswith(end)


@pytest.mark.parametrize("model", CUMULATIVE)
async def test_a_stop_start_the_engine_takes_back_is_not_delivered_async(url, model):
    llm = ChatMetaLM(server_url=url, model=model, chat_template="qwen", stop=["Observation:"])
    question = "Thought: look it up Observation: 42"
    text = "".join([chunk.content async for chunk in llm.astream(question)])
    assert text.endswith('You said: "Thought: look it up ')
    await llm.aclose()


@pytest.mark.parametrize("model", ("vllm_r24_07", "vllm_legacy"))
def test_leaving_a_stream_that_gets_no_final_response_returns_and_the_client_stays_usable(url, model):
    llm = ChatMetaLM(server_url=url, model=model, chat_template="qwen", timeout=30)
    for _ in range(3):  # each left stream is cancelled; the server sends nothing more for it
        for index, _chunk in enumerate(llm.stream(QUESTION)):
            if index == 2:
                break
    assert llm.invoke(QUESTION, max_tokens=3).content == "你好！"
    llm.close()


@pytest.mark.parametrize("model", ("vllm_r24_07", "vllm_legacy"))
async def test_leaving_an_async_stream_that_gets_no_final_response_returns(url, model):
    llm = ChatMetaLM(server_url=url, model=model, chat_template="qwen", timeout=30)
    for _ in range(3):
        index = 0
        async for _chunk in llm.astream(QUESTION):
            index += 1
            if index == 3:
                break
    assert (await llm.ainvoke(QUESTION, max_tokens=3)).content == "你好！"
    await llm.aclose()


def test_decoupled_clients_leave_a_stream_without_a_final_response(triton_server):
    params = json.dumps({"max_tokens": 200})
    with DecoupledModelClient(triton_server.grpc_url, "vllm_r24_07", inference_timeout_s=30) as client:
        for _ in range(3):
            with client.infer_sample(text_input="你好", stream=True, sampling_parameters=params) as responses:
                next(iter(responses))
        short = json.dumps({"max_tokens": 2})
        with client.infer_sample(text_input="你好", stream=True, sampling_parameters=short) as responses:
            assert [r["text_output"][0].decode() for r in responses] == ["你", "好"]


async def test_async_decoupled_client_leaves_a_stream_without_a_final_response(triton_server):
    params = json.dumps({"max_tokens": 200})
    async with AsyncioDecoupledModelClient(triton_server.grpc_url, "vllm_r24_07", inference_timeout_s=30) as client:
        for _ in range(3):
            async with client.infer_sample(text_input="你好", stream=True, sampling_parameters=params) as responses:
                async for _response in responses:
                    break
        short = json.dumps({"max_tokens": 2})
        async with client.infer_sample(text_input="你好", stream=True, sampling_parameters=short) as responses:
            assert [r["text_output"][0].decode() async for r in responses] == ["你", "好"]


def test_bad_sampling_parameters_on_r25_and_later_name_what_was_sent(url):
    llm = ChatMetaLM(server_url=url, model="vllm_r26_01", chat_template="qwen", model_kwargs={"no_such_key": 1})
    with pytest.raises(errors.InferenceServerError) as caught:
        llm.invoke("你好")
    message = str(caught.value)
    assert "'NoneType' object has no attribute 'lora_name'" in message
    assert '"no_such_key": 1' in message and '"max_tokens": 512' in message and "server log" in message
    # r24.12 (the demo) still says what is wrong: no hint is added
    demo = ChatMetaLM(server_url=url, model="Qwen2-0.5B-Instruct", model_kwargs={"no_such_key": 1})
    with pytest.raises(errors.InferenceServerError, match="Unexpected keyword argument 'no_such_key'") as plain:
        demo.invoke("你好")
    assert "server log" not in str(plain.value)


async def test_bad_sampling_parameters_hint_async(url):
    llm = ChatMetaLM(server_url=url, model="vllm_r26_01", model_kwargs={"温度": 0.5})
    with pytest.raises(errors.InferenceServerError, match=r"lora_name.*\"温度\": 0.5.*server log"):
        await llm.ainvoke("你好")
    await llm.aclose()


@pytest.mark.parametrize(("model", "reports"), [("vllm_r23_10", False), ("vllm_r24_07", False), ("vllm_r26_01", True)])
def test_usage_and_finish_reason_come_from_the_return_outputs_of_r24_12_and_later(url, model, reports):
    llm = ChatMetaLM(server_url=url, model=model, chat_template="qwen", max_tokens=5)
    message = llm.invoke(QUESTION)
    assert message.content == "你好！我是"
    if reports:
        assert message.response_metadata["finish_reason"] == "length"
        assert message.usage_metadata["output_tokens"] == 5
    else:
        assert message.response_metadata["finish_reason"] is None and message.usage_metadata is None


@pytest.mark.parametrize("model", RELEASES)
def test_xclient_generate_on_every_release(url, model, capsys, monkeypatch):
    for name in ("XCLIENT_URL", "XCLIENT_API_KEY", "XCLIENT_MODEL", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    answers = []
    for stream in ((), ("--no-stream",)):
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        argv = ["generate", QUESTION, "--model", model, "--chat-template", "qwen", "--url", url, *stream, "--json"]
        capsys.readouterr()
        assert main(argv) == 0
        answers.append(json.loads(capsys.readouterr().out)["text"])
    assert answers == [expected(QUESTION, model)] * 2
