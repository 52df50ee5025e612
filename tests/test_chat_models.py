"""ChatMetaLM against the real local server, over gRPC and HTTP, plus LangChain's standard suites.

Models: the demo ``Qwen2-0.5B-Instruct`` (the vLLM backend's contract) and ``ensemble`` (TensorRT-LLM's),
and the test models ``vllm_legacy`` (r23.10-r24.02: cumulative chunks), ``vllm_slow`` (50 ms per token,
logs cancellations), ``vllm_failing`` (an error after 3 tokens), ``trtllm_legacy`` (v0.5 dtypes and
names, coupled), ``tensorrt_llm_bls`` (accumulate_tokens), ``text_llm`` (a generic coupled text model)
and ``utf8_split`` (UTF-8 bytes two at a time). The stand-ins answer deterministically
(``Xclient.server._demo_llm.answer``), so tests compare with the exact expected text.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import ValidationError

from Xclient import exceptions as errors
from Xclient.client import RetryPolicy
from Xclient.llms import ChatMetaLM
from Xclient.llms import _engine as engine_module
from Xclient.llms import chat_models as chat_module
from Xclient.llms._templates import BUILTIN_TEMPLATES
from Xclient.server import DEMO_MODELS, LocalTritonServer
from Xclient.server._demo_llm import answer, tokenize

QWEN = "Qwen2-0.5B-Instruct"
QUESTION = "介绍一下你自己"
KEY = "sk-llm-0123456789abcdef"
UTF8_TEXT = "你好😀，这是按字节切开的流：中文、emoji 🎉 和 English 混在一起。" * 3


def expected(question: str, model: str = QWEN, template: str = "qwen") -> str:
    """What the stand-ins answer to ``question`` rendered with ``template``."""
    return answer(BUILTIN_TEMPLATES[template].render([("user", question)]), model)


def drain(stream: Iterator[AIMessageChunk]) -> tuple[list[AIMessageChunk], errors.XclientError | None]:
    chunks: list[AIMessageChunk] = []
    try:
        for chunk in stream:
            chunks.append(chunk)
    except errors.XclientError as e:
        return chunks, e
    return chunks, None


def text_of(chunks: list[Any]) -> str:
    return "".join(chunk.content for chunk in chunks)


def wait_for_log(server: LocalTritonServer, needle: str, timeout_s: float = 3.0) -> str:
    """The first server log line containing ``needle`` (it proves what the model saw, e.g. a cancellation)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = [line for line in server.logs().splitlines() if needle in line]
        if lines:
            return lines[0]
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in the server log after {timeout_s} s")


# -- the issue's examples --------------------------------------------------------------------------


def test_the_issue_examples_run_unchanged(triton_server, capsys):
    # The issue wrote "localhost:8001": no scheme on port 8001 is gRPC (test_urls.py pins the rule); the
    # session's server has a free port instead of 8001, so the scheme is spelled out here.
    host = triton_server.grpc_url
    llm = ChatMetaLM(server_url=host, model_name="Qwen2-0.5B-Instruct")
    print(llm.invoke("介绍一下你自己"))
    for token in llm.stream("介绍一下你自己"):
        print(token)
    llm = ChatMetaLM(server_url=host, model_name="Qwen2-0.5B-Instruct", stop=["。"])
    print(llm.invoke("介绍一下你自己").content)

    lines = capsys.readouterr().out.splitlines()
    full = expected(QUESTION)
    assert lines[0].startswith(f"content='{full}'") and "'finish_reason': 'stop'" in lines[0]
    assert full.startswith("你好！我是Qwen2-0.5B-Instruct的演示替身") and "。" in full
    assert lines[1].startswith("content='你'") and lines[-2].startswith("content=''")  # the last chunk: metadata
    assert lines[-1] == full.split("。")[0]
    assert llm._engine().settings.url.protocol == "grpc"


def test_invoke_stream_and_batch_agree_over_both_protocols(url):
    llm = ChatMetaLM(server_url=url, model=QWEN)
    message = llm.invoke(QUESTION)
    assert isinstance(message, AIMessage) and message.content == expected(QUESTION)
    metadata = dict(message.response_metadata)
    assert metadata.pop("request_info")["model"] == QWEN  # what the request did (tests/test_observe.py)
    assert metadata == {"model_name": QWEN, "finish_reason": "stop", "usage_source": "backend"}
    assert message.usage_metadata["output_tokens"] == len(tokenize(message.content))
    chunks = list(llm.stream(QUESTION))
    assert text_of(chunks) == message.content and len(chunks) > 80
    batch = llm.batch([QUESTION, "Hello"])
    assert [m.content for m in batch] == [expected(QUESTION), expected("Hello")]
    llm.close()


async def test_async_methods_are_native_and_agree_with_sync(url, monkeypatch):
    llm = ChatMetaLM(server_url=url, model=QWEN, stop=["。"])

    def no_sync(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the async methods must not run the sync engine (in a thread)")

    monkeypatch.setattr(chat_module, "run", no_sync)
    first = expected(QUESTION).split("。")[0]
    assert (await llm.ainvoke(QUESTION)).content == first
    chunks = [chunk async for chunk in llm.astream(QUESTION)]
    assert text_of(chunks) == first and chunks[-1].chunk_position == "last"
    assert [m.content for m in await llm.abatch([QUESTION, "Hi"])] == [first, expected("Hi").split("。")[0]]
    await llm.aclose()


# -- fields, per-call options, what is sent --------------------------------------------------------


def test_model_alias_and_server_url_forms(triton_server, sent):
    http_host = triton_server.http_url.removeprefix("http://")  # no scheme, not port 8001: HTTP
    for server_url, protocol in (
        (http_host, "http"),
        (triton_server.grpc_url, "grpc"),
        (triton_server.http_url, "http"),
    ):
        for llm in (ChatMetaLM(server_url=server_url, model=QWEN), ChatMetaLM(server_url=server_url, model_name=QWEN)):
            assert llm.model_name == QWEN
            assert llm.invoke("你好").content == expected("你好")
            assert llm._engine().settings.url.protocol == protocol
    with pytest.raises(ValidationError, match="unknown scheme"):
        ChatMetaLM(server_url="ftp://host:1", model=QWEN)


def test_settings_are_sent_only_when_set_and_overridable_per_call(url, sent):
    llm = ChatMetaLM(server_url=url, model=QWEN)
    llm.invoke("你好")
    call, request = sent[-1]
    template_stop = ["<|im_end|>", "<|endoftext|>"]
    assert (
        call.sampling.max_tokens == 512
        and dict(call.sampling.settings) == {}
        and list(call.sampling.stop) == template_stop
    )

    llm = ChatMetaLM(
        server_url=url, model=QWEN, max_new_tokens=40, temperature=0.3, top_p=0.9, top_k=20, seed=1, stop_words="！"
    )
    message = llm.invoke("你好", max_tokens=5, temperature=0.0, min_tokens=1, stop=["。"], model_kwargs={"min_p": 0.1})
    call, request = sent[-1]
    assert call.sampling.max_tokens == 5 and call.sampling.stop == ("。", *template_stop)
    assert dict(call.sampling.settings) == {"temperature": 0.0, "top_p": 0.9, "top_k": 20, "min_tokens": 1, "seed": 1}
    assert message.content == "你好！我是" and message.response_metadata["finish_reason"] == "length"
    assert message.usage_metadata["output_tokens"] == 5
    with pytest.raises(errors.XclientValueError, match="unknown option 'beam_width'"):
        llm.invoke("你好", beam_width=2)
    with pytest.raises(ValidationError, match="'temperature' is a field"):
        ChatMetaLM(server_url=url, model=QWEN, model_kwargs={"temperature": 0.1})


def test_keys_the_vllm_backend_does_not_know_fail_on_the_server(url):
    llm = ChatMetaLM(server_url=url, model=QWEN, model_kwargs={"use_beam_search": True})
    with pytest.raises(errors.InferenceServerError, match="Unexpected keyword argument 'use_beam_search'"):
        llm.invoke("你好")


def test_environment_defaults(triton_server, monkeypatch):
    monkeypatch.setenv("XCLIENT_URL", triton_server.grpc_url)
    monkeypatch.setenv("XCLIENT_API_KEY", "sk-from-env-123")
    llm = ChatMetaLM(model=QWEN)
    assert llm.server_url == triton_server.grpc_url and llm.api_key.get_secret_value() == "sk-from-env-123"
    assert "sk-from-env-123" not in repr(llm)
    assert llm.invoke("你好").content == expected("你好")  # the unsecured server ignores the key
    monkeypatch.delenv("XCLIENT_URL")
    assert ChatMetaLM(model=QWEN).server_url == "localhost:8001"


@pytest.fixture(scope="module")
def secured_server() -> Iterator[LocalTritonServer]:
    with LocalTritonServer(model_repository=DEMO_MODELS, models=[QWEN], api_key=KEY) as server:
        yield server


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_api_key_and_headers_reach_a_server_that_enforces_them(secured_server, protocol):
    url = secured_server.url(protocol)
    for key in (None, "sk-wrong-0000"):
        with pytest.raises(errors.AccessDeniedError) as info:
            ChatMetaLM(server_url=url, model=QWEN, api_key=key).invoke("你好")
        assert KEY not in str(info.value)
    llm = ChatMetaLM(server_url=url, model=QWEN, api_key=KEY, stop=["，"])
    assert llm.invoke("钥匙").content == "你好！我是Qwen2-0.5B-Instruct的演示替身"
    assert text_of(list(llm.stream("钥匙"))) == "你好！我是Qwen2-0.5B-Instruct的演示替身"
    header = "triton-grpc-protocol-authorization" if protocol == "grpc" else "Authorization"
    headed = ChatMetaLM(server_url=url, model=QWEN, headers={header: f"Bearer {KEY}"}, max_tokens=2)
    assert headed.invoke("钥匙").content == "你好"


def test_each_response_has_a_deadline(url):
    llm = ChatMetaLM(server_url=url, model="vllm_slow", timeout=0.02, max_retries=3)
    started = time.monotonic()
    with pytest.raises(errors.XclientTimeoutError) as info:
        list(llm.stream(QUESTION))
    assert isinstance(info.value, TimeoutError) and time.monotonic() - started < 2.0  # a timeout is not retried


def test_connection_refused_before_the_first_response_is_retried_with_backoff(dead_url, monkeypatch):
    monkeypatch.setattr(engine_module, "RetryPolicy", functools.partial(RetryPolicy, initial_backoff_s=0.05))
    attempts: list[float] = []
    real = engine_module.connect

    def counting(settings: Any, model: str) -> Any:
        attempts.append(time.monotonic())
        return real(settings, model)

    monkeypatch.setattr(engine_module, "connect", counting)
    with pytest.raises(errors.ServerUnavailableError):
        ChatMetaLM(server_url=dead_url, model=QWEN).invoke("你好")
    assert len(attempts) == 1  # retries are opt-in
    attempts.clear()
    with pytest.raises(errors.ServerUnavailableError):
        ChatMetaLM(server_url=dead_url, model=QWEN, max_retries=2).invoke("你好")
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert len(attempts) == 3 and gaps[0] >= 0.05 * 0.75 and gaps[1] >= 0.1 * 0.75  # jitter: up to 25 % less


def test_a_retry_that_reconnects_succeeds(url, monkeypatch):
    monkeypatch.setattr(engine_module, "RetryPolicy", functools.partial(RetryPolicy, initial_backoff_s=0.01))
    real, failures = engine_module.connect, [errors.ServerUnavailableError("connection refused", retryable=True)]

    def flaky(settings: Any, model: str) -> Any:
        if failures:
            raise failures.pop()
        return real(settings, model)

    monkeypatch.setattr(engine_module, "connect", flaky)
    assert ChatMetaLM(server_url=url, model=QWEN, max_retries=1).invoke("你好").content == expected("你好")


def test_a_connection_lost_after_data_came_is_never_retried(monkeypatch):
    opened: list[int] = []

    class LostStream:
        def __enter__(self) -> Iterator[dict[str, Any]]:
            opened.append(1)
            yield {"text_output": "你"}
            raise errors.ServerUnavailableError("connection refused", retryable=True)  # as if before any response

        def __exit__(self, *exc: object) -> None:
            pass

    llm = ChatMetaLM(server_url="grpc://127.0.0.1:1", model="m", chat_template="raw", max_retries=5)
    fake = engine_module.Connection(
        config=None, backend=_FakeBackend(), open=lambda r: LostStream(), close=lambda: None
    )
    monkeypatch.setattr(engine_module.Engine, "connection", lambda self, model: fake)
    chunks, error = drain(llm.stream("x"))
    assert text_of(chunks) == "你" and isinstance(error, errors.ServerUnavailableError) and opened == [1]


class _FakeBackend:
    def request(self, prompt: str, sampling: Any, *, stream: bool, turns: Any = None) -> Any:
        return engine_module.TritonRequest({})

    def read(self, outputs: dict[str, Any]) -> Any:
        from Xclient.llms._streaming import Piece

        return Piece(outputs["text_output"].encode())


# -- each backend ------------------------------------------------------------------------------------


def test_vllm_delta_and_legacy_cumulative_chunks_give_the_same_deltas(url, sent):
    for model in (QWEN, "vllm_legacy"):
        llm = ChatMetaLM(server_url=url, model=model, chat_template="qwen")
        chunks = list(llm.stream(QUESTION))
        assert text_of(chunks) == expected(QUESTION, model) and chunks[1].content == "好"
        assert sent[-1][1].cumulative == (model == "vllm_legacy")
        assert llm.invoke(QUESTION).content == expected(QUESTION, model)  # the echoed prompt is stripped
        assert sent[-1][1].echo == (None if model == QWEN else sent[-1][0].prompt.encode())
    _, request = sent[-3]  # QWEN's invoke: the prompt is excluded by the server
    assert request.inputs["exclude_input_in_output"].tolist() == [True]


def test_tensorrt_llm_ensemble_streams_with_a_batch_axis_and_server_side_stop_words(url):
    llm = ChatMetaLM(server_url=url, model="ensemble", chat_template="qwen", temperature=0.5, top_k=5, seed=3)
    assert llm.invoke(QUESTION).content == expected(QUESTION, "ensemble")
    chunks = list(llm.stream(QUESTION, stop=["。"]))  # the server keeps the stop word; the client drops it
    assert text_of(chunks) == expected(QUESTION, "ensemble").split("。")[0]
    assert chunks[-1].response_metadata["finish_reason"] == "stop" and chunks[-1].usage_metadata is None


def test_tensorrt_llm_legacy_dtypes_renamed_inputs_and_echo(url, sent):
    llm = ChatMetaLM(server_url=url, model="trtllm_legacy", chat_template="qwen", min_tokens=1, seed=2**40)
    assert llm.invoke(QUESTION).content == expected(QUESTION, "trtllm_legacy")
    request = sent[-1][1]
    assert request.inputs["max_tokens"].dtype.name == "uint32" and request.inputs["random_seed"].tolist() == [2**40]
    assert request.inputs["min_length"].dtype.name == "uint32" and request.echo is not None
    assert text_of(list(llm.stream(QUESTION, stop=["，"]))) == "你好！我是trtllm_legacy的演示替身"  # one response


def test_tensorrt_llm_bls_accumulated_chunks_become_deltas(url):
    llm = ChatMetaLM(server_url=url, model="tensorrt_llm_bls", chat_template="qwen", max_tokens=6)
    chunks = list(llm.stream(QUESTION))
    assert [c.content for c in chunks[:-1]] == ["你", "好", "！", "我", "是", "tensorrt_llm_bls"]


def test_generic_text_models_coupled_and_streaming(url):
    coupled = ChatMetaLM(server_url=url, model="text_llm", chat_template="raw")
    assert coupled.invoke("你好").content == answer("你好", "text_llm")
    assert text_of(list(coupled.stream("你好"))) == answer("你好", "text_llm")
    split = ChatMetaLM(server_url=url, model="utf8_split", chat_template="raw")
    chunks = list(split.stream("x"))
    assert text_of(chunks) == UTF8_TEXT and "\ufffd" not in text_of(chunks)  # split characters held back
    assert split.invoke("x").content == UTF8_TEXT


async def test_async_routes_for_coupled_and_tensorrt_llm_models(url, monkeypatch):
    monkeypatch.setattr(chat_module, "run", lambda *a, **k: pytest.fail("the sync engine ran in an async call"))
    coupled = ChatMetaLM(server_url=url, model="text_llm", chat_template="raw")
    assert (await coupled.ainvoke("你好")).content == answer("你好", "text_llm")
    assert text_of([chunk async for chunk in coupled.astream("你好")]) == answer("你好", "text_llm")
    ensemble = ChatMetaLM(server_url=url, model="ensemble", chat_template="qwen", stop=["，"])
    assert (await ensemble.ainvoke(QUESTION)).content == "你好！我是ensemble的演示替身"
    await coupled.aclose()
    await ensemble.aclose()


# -- templates through the whole path -----------------------------------------------------------------


def test_messages_render_with_the_chosen_template_and_its_stops_join_the_stop_list(url, sent):
    llm = ChatMetaLM(server_url=url, model=QWEN)
    conversation = [SystemMessage("用中文回答。"), HumanMessage("你好"), AIMessage("你好！"), HumanMessage("讲个笑话")]
    reply = llm.invoke(conversation)
    assert "“讲个笑话”" in reply.content and "第2轮" in reply.content  # the stand-in parsed both user turns
    call = sent[-1][0]
    assert call.prompt == BUILTIN_TEMPLATES["qwen"].render(
        [("system", "用中文回答。"), ("user", "你好"), ("assistant", "你好！"), ("user", "讲个笑话")]
    )
    assert call.sampling.stop == ("<|im_end|>", "<|endoftext|>")
    llama = (
        "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
        "{% endfor %}"
    )
    ChatMetaLM(
        server_url=url, model=QWEN, chat_template=llama + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ).invoke("嗨")
    assert sent[-1][0].sampling.stop == ("<|eot_id|>",)
    assert "第1轮" in ChatMetaLM(server_url=url, model=QWEN, chat_template="llama3").invoke("嗨").content


def test_a_call_can_pick_another_model(url):
    llm = ChatMetaLM(server_url=url, model=QWEN)
    message = llm.invoke("你好", model="vllm_legacy")
    assert message.response_metadata["model_name"] == "vllm_legacy"
    assert message.content == expected("你好", "vllm_legacy", "chatml")  # the template of that model's name


# -- streaming correctness ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_client_side_stop_split_across_chunks_keeps_the_text_before_and_cancels(triton_server, protocol, mode):
    llm = ChatMetaLM(server_url=triton_server.url(protocol), model="utf8_split", chat_template="raw", stop=["😀，这"])
    before = triton_server.logs().count("[utf8_split] request cancelled")
    chunks = list(llm.stream("x")) if mode == "sync" else [chunk async for chunk in llm.astream("x")]
    assert text_of(chunks) == "你好"  # the stop spans three 2-byte responses and is not delivered
    assert chunks[-1].response_metadata["finish_reason"] == "stop"
    deadline = time.monotonic() + 3
    while triton_server.logs().count("[utf8_split] request cancelled") == before:
        assert time.monotonic() < deadline, "the server never saw the request cancelled"
        await asyncio.sleep(0.05)


def test_leaving_a_stream_early_cancels_the_request_on_the_server(triton_server, protocol):
    llm = ChatMetaLM(server_url=triton_server.url(protocol), model="vllm_slow")
    marker = f"早退{protocol}"
    for index, _ in enumerate(llm.stream(marker)):
        if index == 1:
            break
    assert "request cancelled after" in wait_for_log(triton_server, marker)


async def test_leaving_an_async_stream_early_cancels_the_request(triton_server, protocol):
    llm = ChatMetaLM(server_url=triton_server.url(protocol), model="vllm_slow")
    marker = f"异步早退{protocol}"
    stream = llm.astream(marker)
    async for _ in stream:
        break
    await stream.aclose()
    assert "request cancelled after" in await asyncio.to_thread(wait_for_log, triton_server, marker)


def test_usage_and_response_metadata_come_once_on_the_last_chunk(url):
    chunks = list(ChatMetaLM(server_url=url, model=QWEN).stream(QUESTION))
    with_usage = [c for c in chunks if c.usage_metadata]
    with_metadata = [c for c in chunks if c.response_metadata]
    assert with_usage == with_metadata == [chunks[-1]] and chunks[-1].chunk_position == "last"
    full = sum(chunks[1:], chunks[0])
    prompt_tokens = len(tokenize(BUILTIN_TEMPLATES["qwen"].render([("user", QUESTION)])))
    answer_tokens = len(tokenize(expected(QUESTION)))
    assert full.usage_metadata == {
        "input_tokens": prompt_tokens,
        "output_tokens": answer_tokens,
        "total_tokens": prompt_tokens + answer_tokens,
    }
    metadata = dict(full.response_metadata)
    assert metadata.pop("request_info")["stream"] is True
    assert metadata == {"model_name": QWEN, "finish_reason": "stop", "usage_source": "backend"}


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_server_error_mid_stream_is_raised_after_the_chunks_already_delivered(url, mode):
    llm = ChatMetaLM(server_url=url, model="vllm_failing", max_retries=2)
    if mode == "sync":
        chunks, error = await asyncio.to_thread(drain, llm.stream(QUESTION))
    else:
        chunks, error = [], None
        try:
            async for chunk in llm.astream(QUESTION):
                chunks.append(chunk)
        except errors.XclientError as e:
            error = e
    assert text_of(chunks) == "你好！"
    assert isinstance(error, errors.InferenceServerError) and "生成失败" in error.server_message
    assert error.model == "vllm_failing"
    with pytest.raises(errors.InferenceServerError, match="生成失败"):
        llm.invoke(QUESTION)


# -- LangChain's standard suites ------------------------------------------------------------------------


class _Params:
    """What both standard suites need: tool calling, tool_choice, structured output and JSON mode on
    (the demo stand-in answers in the Hermes tool format and honours vLLM's structured outputs);
    only image, audio and PDF inputs stay off (their defaults)."""

    @property
    def chat_model_class(self) -> type[ChatMetaLM]:
        return ChatMetaLM

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True  # the vLLM stand-in reports num_input_tokens / num_output_tokens


@pytest.mark.disable_socket
class TestChatMetaLMUnit(_Params, ChatModelUnitTests):
    """No network: construction only (nothing connects before the first call)."""

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": QWEN, "server_url": "grpc://triton.invalid:8001"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        env = {"XCLIENT_URL": "grpc://triton:8001", "XCLIENT_API_KEY": "sk-env-key"}
        return env, {"model": QWEN}, {"server_url": "grpc://triton:8001", "api_key": "sk-env-key"}


class TestChatMetaLMIntegrationGrpc(_Params, ChatModelIntegrationTests):
    protocol_name = "grpc"

    @pytest.fixture(autouse=True)
    def _server_url(self, triton_server: LocalTritonServer) -> None:
        self._url = triton_server.url(self.protocol_name)

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": QWEN, "server_url": self._url}

    @property
    def model_override_value(self) -> str:
        return "vllm_legacy"


class TestChatMetaLMIntegrationHttp(TestChatMetaLMIntegrationGrpc):
    protocol_name = "http"
