"""LLMs on PaddlePaddle FastDeploy's LLM serving (docs/protocols.md section 8), against the real local server.

The demo model ``model`` (FastDeploy's default name) is a stand-in built from FastDeploy's
``triton_server.py`` and ``checker.py`` (:mod:`Xclient.server._demo_fastdeploy`): its checker's errors,
the refusal of a ``req_id`` in flight, one JSON result per token, ``is_end`` on a last response with no
token, errors as one dict on a final response. ``fastdeploy_slow`` is the same model with 50 ms per token.
The answer is the demo's deterministic one, so tests compare exact text.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests

from Xclient import exceptions as errors
from Xclient.fastdeploy import ChatBot
from Xclient.llms import ChatMetaLM, MetaLM
from Xclient.llms import _engine as engine_module
from Xclient.llms._backends import FastDeployBackend, detect_backend
from Xclient.server._demo_fastdeploy import render
from Xclient.server._demo_llm import answer, tokenize

MODEL = "model"
SLOW = "fastdeploy_slow"
QUESTION = "请用一句话介绍你自己"


def expected(*turns: tuple[str, str], system: str | None = None, model: str = MODEL) -> str:
    """The stand-in's answer to a chat, rendered with the server's own template."""
    task: dict[str, Any] = {"messages": [{"role": role, "content": text} for role, text in turns]}
    if system:
        task["system"] = system
    return answer(render(task), model)


def prompt_tokens(*turns: tuple[str, str], system: str | None = None) -> int:
    task: dict[str, Any] = {"messages": [{"role": role, "content": text} for role, text in turns]}
    if system:
        task["system"] = system
    return len(tokenize(render(task)))


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The task dict of every request the engine starts."""
    tasks: list[dict[str, Any]] = []
    real = engine_module.start

    def spy(connection: Any, call: Any) -> Any:
        generation, request = real(connection, call)
        (raw,) = request.inputs["IN"].reshape(-1)
        tasks.extend(json.loads(raw))
        return generation, request

    monkeypatch.setattr(engine_module, "start", spy)
    return tasks


def grpc_address(server: Any) -> tuple[str, int]:
    host, port = server.url("grpc").removeprefix("grpc://").rsplit(":", 1)
    return host, int(port)


# -- detection and the request --------------------------------------------------------------------


def test_a_decoupled_model_with_in_and_out_is_detected_as_fastdeploy(triton_server):
    from Xclient.client import ServerClient

    with ServerClient(triton_server.url("grpc")) as server:
        config = server.model_config(MODEL)
    backend = detect_backend(config)
    assert isinstance(backend, FastDeployBackend) and backend.name == "fastdeploy"


def test_chat_streams_the_answer_with_the_servers_template_over_both_protocols(url, sent):
    llm = ChatMetaLM(server_url=url, model_name=MODEL)
    chunks = list(llm.stream(QUESTION))
    assert "".join(chunk.content for chunk in chunks) == expected(("user", QUESTION))
    assert len(chunks) > 10  # token by token
    (task,) = sent
    assert task["messages"] == [{"role": "user", "content": QUESTION}] and "text" not in task
    assert llm.invoke(QUESTION).content == expected(("user", QUESTION))


def test_settings_go_under_fastdeploys_names_and_its_own_names_are_accepted_too(url, sent):
    llm = ChatMetaLM(server_url=url, model_name=MODEL, max_tokens=40, temperature=0.5, top_p=0.8)
    llm.invoke(QUESTION, presence_penalty=0.1, frequency_penalty=0.2, repetition_penalty=1.1, min_tokens=2, seed=7)
    llm.invoke(QUESTION, topp=0.9, max_dec_len=30, penalty_score=1.2, model_kwargs={"eos_token_ids": [2]})
    first, second = sent
    assert {k: first[k] for k in ("max_dec_len", "temperature", "topp", "presence_score", "frequency_score")} == {
        "max_dec_len": 40,
        "temperature": 0.5,
        "topp": 0.8,
        "presence_score": 0.1,
        "frequency_score": 0.2,
    }
    assert (first["penalty_score"], first["min_dec_len"], first["seed"]) == (1.1, 2, 7)
    assert (second["topp"], second["max_dec_len"], second["penalty_score"]) == (0.9, 30, 1.2)
    assert second["eos_token_ids"] == [2]
    assert not any(key in first for key in ("top_p", "max_tokens", "stop"))


def test_a_setting_fastdeploy_lacks_is_refused_before_sending(url, sent):
    with pytest.raises(errors.XclientValueError, match="'top_k'.*FastDeploy"):
        ChatMetaLM(server_url=url, model_name=MODEL, top_k=5).invoke(QUESTION)
    assert sent == []


def test_every_request_gets_a_fresh_req_id_so_concurrent_streams_never_collide(url, sent):
    llm = ChatMetaLM(server_url=url, model_name=SLOW, max_tokens=8)
    questions = [f"第{i}个问题" for i in range(6)]
    answers = llm.batch(questions, config={"max_concurrency": 6})
    assert [a.content for a in answers] == ["".join(tokenize(expected(("user", q), model=SLOW))[:8]) for q in questions]
    assert len({task["req_id"] for task in sent}) == 6


def test_multi_turn_chat_goes_as_messages_and_system_in_fastdeploys_form(url, sent):
    llm = ChatMetaLM(server_url=url, model_name=MODEL)
    chat = [
        SystemMessage("你是一个简洁的助手"),
        HumanMessage("你好"),
        AIMessage("你好！"),
        HumanMessage("再说一遍"),
        HumanMessage("谢谢"),  # two user turns in a row are joined into one
    ]
    reply = llm.invoke(chat)
    (task,) = sent
    assert task["system"] == "你是一个简洁的助手"
    assert task["messages"] == [
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！"},
        {"role": "user", "content": "再说一遍\n谢谢"},
    ]
    assert reply.content == expected(
        ("user", "你好"), ("assistant", "你好！"), ("user", "再说一遍\n谢谢"), system="你是一个简洁的助手"
    )
    assert "第2轮" in reply.content


def test_a_chat_fastdeploy_cannot_say_is_refused_clearly(url, sent):
    with pytest.raises(errors.XclientValueError, match="user and assistant turns in turn"):
        ChatMetaLM(server_url=url, model_name=MODEL).invoke([AIMessage("我先说"), HumanMessage("你好")])
    assert sent == []


def test_a_chosen_template_renders_client_side_and_goes_as_text(url, sent):
    llm = ChatMetaLM(server_url=url, model_name=MODEL, chat_template="raw")
    assert llm.invoke("你好").content == answer(render({"text": "你好"}), MODEL)
    (task,) = sent
    assert task["text"] == "你好" and "messages" not in task


def test_metalm_sends_the_prompt_as_text(url, sent):
    assert MetaLM(server_url=url, model_name=MODEL).invoke("写一首诗") == answer(render({"text": "写一首诗"}), MODEL)
    assert sent[0]["text"] == "写一首诗"


# -- the streaming rules --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stream", "invoke"])
def test_a_stop_split_across_tokens_keeps_the_text_before_it(url, mode):
    llm = ChatMetaLM(server_url=url, model_name=MODEL, stop=["替身"])
    full = expected(("user", QUESTION))
    if mode == "stream":
        text = "".join(chunk.content for chunk in llm.stream(QUESTION))
    else:
        text = llm.invoke(QUESTION).content
    assert text == full[: full.index("替身")]
    assert llm.invoke(QUESTION, stop=["没有这个词"]).content == full  # a call's stop replaces the field's


def test_leaving_a_stream_closes_it_and_the_client_stays_usable(triton_server, protocol):
    llm = ChatMetaLM(server_url=triton_server.url(protocol), model_name=SLOW)
    with pytest.raises(StopIteration):  # next() twice, then leave
        stream = llm.stream(QUESTION)
        next(stream)
        stream.close()
        next(stream)
    assert llm.invoke(QUESTION, max_tokens=3).content == "".join(tokenize(expected(("user", QUESTION), model=SLOW))[:3])


def test_usage_and_finish_reason_on_the_last_chunk(url):
    llm = ChatMetaLM(server_url=url, model_name=MODEL)
    chunks = list(llm.stream(QUESTION))
    tokens = tokenize(expected(("user", QUESTION)))
    assert chunks[-1].usage_metadata == {
        "input_tokens": prompt_tokens(("user", QUESTION)),
        "output_tokens": len(tokens),
        "total_tokens": prompt_tokens(("user", QUESTION)) + len(tokens),
    }
    assert chunks[-1].response_metadata["finish_reason"] == "stop"
    assert all(not chunk.usage_metadata for chunk in chunks[:-1])
    short = llm.invoke(QUESTION, max_tokens=5)
    assert short.content == "".join(tokens[:5])
    assert short.response_metadata["finish_reason"] == "length"
    assert short.usage_metadata["output_tokens"] == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"top_p": 1.5}, "The `topp` must be in [0, 1]"),
        ({"temperature": -1.0}, "The `temperature` must be >= 0"),
        ({"max_tokens": 5000}, "exceeds the limit MAX_DEC_LEN(1024)"),
    ],
)
def test_the_servers_checker_errors_are_typed_and_name_the_model(url, options, message):
    llm = ChatMetaLM(server_url=url, model_name=MODEL)
    with pytest.raises(errors.InferenceServerError) as caught:
        llm.invoke(QUESTION, **options)
    assert message in str(caught.value) and "'model'" in str(caught.value) and "FastDeploy" in str(caught.value)
    assert caught.value.status == "200" and message in caught.value.server_message


async def test_async_stream_and_invoke_agree_with_sync(url):
    llm = ChatMetaLM(server_url=url, model_name=MODEL)
    streamed = "".join([chunk.content async for chunk in llm.astream(QUESTION)])
    replies = await asyncio.gather(*(llm.ainvoke(f"问题{i}") for i in range(4)))
    assert streamed == expected(("user", QUESTION))
    assert [r.content for r in replies] == [expected(("user", f"问题{i}")) for i in range(4)]


# -- FastDeploy's ChatBot interface ---------------------------------------------------------------


def test_a_fastdeploy_users_chatbot_script_runs_with_only_the_import_changed(triton_server):
    host, port = grpc_address(triton_server)
    script = f"""
from Xclient.fastdeploy import ChatBot

hostname = {host!r}
port = {port}

chatbot = ChatBot(hostname=hostname, port=port)
stream_result = chatbot.stream_generate("你好", topp=0.8)
for res in stream_result:
    print(res)

chatbot = ChatBot(hostname=hostname, port=port)
result = chatbot.generate("你好，你是谁?", topp=0.8)
print(result)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = [eval(line) for line in run.stdout.splitlines()]  # the script prints dict reprs
    *stream, whole = lines
    assert all(set(res) == {"req_id", "token", "token_ids", "is_end"} for res in stream)
    assert [res["is_end"] for res in stream] == [0] * (len(stream) - 1) + [1]
    assert "".join(res["token"] for res in stream) == answer(render({"text": "你好"}), MODEL)
    assert len({res["req_id"] for res in stream}) == 1
    assert set(whole) == {"req_id", "results", "token_ids"}
    assert whole["results"] == answer(render({"text": "你好，你是谁?"}), MODEL)
    assert len(whole["token_ids"]) == len(tokenize(whole["results"]))
    assert "Exception ignored" not in run.stderr


def test_chatbot_keeps_a_multi_turn_chatmessage_and_sends_system(triton_server):
    class ChatMessage:  # the shape of fastdeploy_client.message.ChatMessage
        def __init__(self, prompt: str) -> None:
            self.message = [{"role": "user", "content": prompt}]

    host, port = grpc_address(triton_server)
    with ChatBot(host, port) as chatbot:
        message = ChatMessage("你好")
        first = "".join(res["token"] for res in chatbot.stream_generate(message, system="简洁"))
        message.message.append({"role": "user", "content": "再说一遍"})
        second = chatbot.generate(message)
    assert first == expected(("user", "你好"), system="简洁")
    assert message.message[1] == {"role": "assistant", "content": first}
    assert second["results"] == expected(("user", "你好"), ("assistant", first), ("user", "再说一遍"))


def test_chatbot_returns_errors_as_fastdeploy_does(triton_server):
    host, port = grpc_address(triton_server)
    with ChatBot(host, port) as chatbot:
        (res,) = list(chatbot.stream_generate("你好", topp=2.0))
        assert set(res) == {"req_id", "error_msg"} and "The `topp` must be in [0, 1]" in res["error_msg"]
        bad = chatbot.generate([{"role": "assistant", "content": "先说"}])
        assert bad["error_msg"]["error_msg"].startswith("response error, please check the info:")
        assert "should be 'user'" in bad["error_msg"]["error_msg"]
        timed_out = list(ChatBot(host, port, timeout=0.01, model=SLOW).stream_generate("你好"))
        assert timed_out[-1]["error_msg"] == "Fetch response from server timeout (0.01s)"
    with pytest.raises(ValueError, match="Invalid port number"):
        ChatBot(host, 70000)


def test_the_server_refuses_a_req_id_in_flight_and_chatbot_says_so(triton_server):
    host, port = grpc_address(triton_server)
    chatbot = ChatBot(host, port, model=SLOW)
    started = threading.Event()
    first: list[dict[str, Any]] = []

    def long_one() -> None:
        for res in chatbot.stream_generate("慢慢说", req_id="同一个"):
            first.append(res)
            started.set()

    thread = threading.Thread(target=long_one)
    thread.start()
    assert started.wait(30)
    (second,) = list(chatbot.stream_generate("你好", req_id="同一个"))
    thread.join(60)
    chatbot.close()
    assert "The req_id 同一个 already exists" in second["error_msg"]
    assert first[-1]["is_end"] == 1 and "error_msg" not in first[-1]


# -- LangChain's standard suite on this backend ---------------------------------------------------


class TestChatMetaLMFastDeployIntegration(ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _server_url(self, triton_server: Any) -> None:
        self._url = triton_server.url("grpc")

    @property
    def chat_model_class(self) -> type[ChatMetaLM]:
        return ChatMetaLM

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": MODEL, "server_url": self._url}

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True  # the stand-in reports FastDeploy's usage (prompt_tokens) and one token id per token

    @property
    def model_override_value(self) -> str:
        return SLOW


# -- the command line, as fdclient users type it ----------------------------------------------------


def test_fastdeploy_model_url_is_the_llm_commands_server_and_model_as_for_fdclient(triton_server):
    from tests.test_cli import run_module, subprocess_env

    host, port = grpc_address(triton_server)
    env = subprocess_env(FASTDEPLOY_MODEL_URL=f"{host}:{port}")
    for command in ("generate", "stream_generate"):  # stream_generate: fdclient's name
        done = run_module(command, "你好", "--json", env=env)
        assert done.code == 0, done.err
        reply = json.loads(done.out)
        assert reply["model"] == MODEL and reply["text"] == expected(("user", "你好"))
        assert reply["finish_reason"] == "stop" and reply["usage"]["output_tokens"] == len(tokenize(reply["text"]))
    # --url, XCLIENT_URL and XCLIENT_MODEL still win over it
    other = run_module("generate", "你好", "--json", "--url", triton_server.url("grpc"), env=env)
    assert json.loads(other.out)["model"] == "Qwen2-0.5B-Instruct"
    env_url = run_module("generate", "你好", "--json", env={**env, "XCLIENT_URL": triton_server.url("http")})
    assert json.loads(env_url.out)["model"] == "Qwen2-0.5B-Instruct"
    slow = run_module("generate", "你好", "--json", "--max-tokens", "3", env={**env, "XCLIENT_MODEL": SLOW})
    assert json.loads(slow.out)["text"] == "".join(tokenize(expected(("user", "你好"), model=SLOW))[:3])


def test_xclient_chat_on_fastdeploy_sends_the_turns_for_the_servers_template(triton_server):
    from tests.test_cli import run_module, subprocess_env

    host, port = grpc_address(triton_server)
    env = subprocess_env(FASTDEPLOY_MODEL_URL=f"{host}:{port}")
    done = run_module("chat", "--system", "简洁", "--no-stream", input="你好\n再说一遍\n/exit\n", env=env)
    assert done.code == 0, done.err
    first = expected(("user", "你好"), system="简洁")
    second = expected(("user", "你好"), ("assistant", first), ("user", "再说一遍"), system="简洁")
    assert first in done.out and second in done.out and "第2轮" in second
