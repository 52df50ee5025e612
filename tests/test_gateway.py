"""``xclient gateway`` against the real local server, through clients we did not write: the official
``openai`` SDK (sync, async, streaming), LangChain's ``ChatOpenAI`` and ``OpenAIEmbeddings``, and curl.

The gateway runs as a real process (``python -m Xclient gateway``) on a free loopback port in front of the
session's Triton server over gRPC, with an API key. The stand-in models answer deterministically
(``Xclient.server._demo_llm``), so every text is compared with the exact expected answer. Tests of what
only an in-process app can show (the headers handed to Triton, a dead server, a deadline) run
:func:`Xclient.gateway.create_app` under httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from Xclient import MetaLMEmbeddings, MetaLMRerank
from Xclient.gateway import create_app
from Xclient.llms._templates import BUILTIN_TEMPLATES
from Xclient.server import DEMO_MODELS, LocalTritonServer
from Xclient.server._demo_llm import answer, generate, tokenize

from .conftest import MODELS
from .test_chat_models import wait_for_log

QWEN = "Qwen2-0.5B-Instruct"
QWEN_STOP = ["<|im_end|>", "<|endoftext|>"]
QUESTION = "介绍一下你自己"
KEY = "sk-gateway-0123456789abcdef"
TRITON_KEY = "sk-triton-fedcba9876543210"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# -- shared with test_gateway_load.py ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def expected_chat(question: str, model: str = QWEN, max_tokens: int = 512, stop: Sequence[str] = ()) -> str:
    """What the vLLM stand-in answers to one user turn rendered with Qwen2's template."""
    prompt = BUILTIN_TEMPLATES["qwen"].render([("user", question)])
    tokens, _ = generate(answer(prompt, model), max_tokens, [*stop, *QWEN_STOP], keep_stop=False)
    return "".join(tokens)


def expected_completion(prompt: str, model: str = QWEN, max_tokens: int = 512) -> str:
    tokens, _ = generate(answer(prompt, model), max_tokens, [], keep_stop=False)
    return "".join(tokens)


def prompt_tokens(question: str) -> int:
    return len(tokenize(BUILTIN_TEMPLATES["qwen"].render([("user", question)])))


class GatewayProcess:
    """``python -m Xclient gateway`` in a subprocess, its stdout and stderr in ``log_path``."""

    def __init__(self, args: Sequence[str], log_path: pathlib.Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "Xclient", "gateway", "--port", str(self.port), *args]
        self._log = open(log_path, "wb")  # noqa: SIM115 - kept open while the process runs
        environment = {k: v for k, v in os.environ.items() if not k.startswith("XCLIENT_")}
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**environment, **(env or {})}
        )
        self._wait_until_up()

    def _wait_until_up(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.process.returncode}:\n{self.logs()}")
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{self.url}/health", timeout=2.0)
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the gateway did not answer in {timeout_s} s:\n{self.logs()}")

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def logs(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@contextlib.contextmanager
def gateway_process(
    args: Sequence[str], log_path: pathlib.Path, env: dict[str, str] | None = None
) -> Iterator[GatewayProcess]:
    process = GatewayProcess(args, log_path, env)
    try:
        yield process
    finally:
        code = process.stop()
        # uvicorn shuts down cleanly on SIGTERM, then dies of it (it re-raises the signal)
        assert code in (0, -signal.SIGTERM), f"the gateway exited with {code}:\n{process.logs()}"


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in Prometheus' text format."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics:\n{text}")


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(triton_server: LocalTritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    args = ["--url", triton_server.grpc_url, "--log-level", "debug"]
    with gateway_process(args, log, env={"XCLIENT_GATEWAY_API_KEY": KEY}) as process:
        yield process


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.v1, api_key=KEY, max_retries=0, timeout=60) as made:
        yield made


@pytest.fixture
async def aclient(gateway: GatewayProcess) -> AsyncIterator[openai.AsyncOpenAI]:
    made = openai.AsyncOpenAI(base_url=gateway.v1, api_key=KEY, max_retries=0, timeout=60)
    yield made
    await made.close()


def post(gateway: GatewayProcess, path: str, body: Any, key: str | None = KEY, **headers: str) -> httpx.Response:
    if key:
        headers["Authorization"] = f"Bearer {key}"
    content = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return httpx.post(f"{gateway.v1}{path}", content=content, headers=headers, timeout=60)


def sse(response: httpx.Response) -> tuple[list[str], list[dict[str, Any]]]:
    """A streamed answer's events (each ``data: ...``), and the JSON chunks of all but the last (``[DONE]``)."""
    events = [line for line in response.text.split("\n\n") if line]
    return events, [json.loads(event[6:]) for event in events[:-1]]


def assert_error(response: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


# -- /v1/models ----------------------------------------------------------------------------------------------


def test_models_lists_each_model_with_its_kind_and_server(client, gateway, triton_server):
    ids = [model.id for model in client.models.list()]
    listed = {
        m["id"]: m for m in httpx.get(f"{gateway.v1}/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
    }
    assert ids == list(listed)
    kinds = {name: listed[name]["kind"] for name in (QWEN, "ensemble", "text", "bge-m3-v", "bge-reranker-v2-m3")}
    assert kinds == {
        QWEN: "chat",
        "ensemble": "chat",
        "text": "completion",
        "bge-m3-v": "embedding",
        "bge-reranker-v2-m3": "rerank",
    }
    assert {m["server"] for m in listed.values()} == {triton_server.grpc_url}
    assert "failing" not in listed and "versioned" not in listed  # numbers in, numbers out: not served


# -- chat ------------------------------------------------------------------------------------------------------


def test_openai_sync_chat_answers_with_the_template_usage_and_finish_reason(client):
    completion = client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": QUESTION}])
    assert completion.choices[0].message.content == expected_chat(QUESTION)
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    answer_tokens = len(tokenize(expected_chat(QUESTION)))
    assert completion.usage.prompt_tokens == prompt_tokens(QUESTION)
    assert completion.usage.completion_tokens == answer_tokens
    assert completion.usage.total_tokens == prompt_tokens(QUESTION) + answer_tokens
    assert completion.model == QWEN and completion.object == "chat.completion"


async def test_openai_async_chat_with_system_and_history_turns(aclient):
    messages = [
        {"role": "system", "content": "你是一个乐于助人的助手。"},
        {"role": "user", "content": "第一个问题"},
        {"role": "assistant", "content": "第一个回答"},
        {"role": "user", "content": [{"type": "text", "text": "第二个"}, {"type": "text", "text": "问题"}]},
    ]
    completions = await asyncio.gather(
        *(aclient.chat.completions.create(model=QWEN, messages=messages) for _ in range(3))
    )
    prompt = BUILTIN_TEMPLATES["qwen"].render(
        [
            ("system", "你是一个乐于助人的助手。"),
            ("user", "第一个问题"),
            ("assistant", "第一个回答"),
            ("user", "第二个问题"),
        ]
    )
    tokens, _ = generate(answer(prompt, QWEN), 512, QWEN_STOP, keep_stop=False)
    assert "这是我们对话的第2轮" in "".join(tokens)
    assert [c.choices[0].message.content for c in completions] == ["".join(tokens)] * 3


def test_openai_streaming_chat_ends_with_finish_reason_then_usage(client):
    stream = client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_chat(QUESTION)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 10  # token by token
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(tokenize(text))
    assert [c.usage for c in chunks[:-1]] == [None] * (len(chunks) - 1)


def test_raw_stream_is_sse_ending_with_done_and_without_usage_unless_asked(gateway):
    body = {"model": QWEN, "messages": [{"role": "user", "content": "你好"}], "stream": True, "max_tokens": 4}
    response = post(gateway, "/chat/completions", body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events, chunks = sse(response)
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    assert all("usage" not in chunk for chunk in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == expected_chat("你好", max_tokens=4)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_max_tokens_stop_seed_n_and_user_reach_the_model(client):
    limited = client.chat.completions.create(
        model=QWEN, messages=[{"role": "user", "content": QUESTION}], max_completion_tokens=5, seed=7, user="用户甲"
    )
    assert limited.choices[0].message.content == expected_chat(QUESTION, max_tokens=5)
    assert limited.choices[0].finish_reason == "length" and limited.usage.completion_tokens == 5
    stopped = client.chat.completions.create(
        model=QWEN, messages=[{"role": "user", "content": QUESTION}], stop=["。"], n=3, temperature=0.5, top_p=0.9
    )
    before_stop = expected_chat(QUESTION, stop=["。"])
    assert before_stop and "。" not in before_stop
    assert [c.message.content for c in stopped.choices] == [before_stop] * 3
    assert [c.index for c in stopped.choices] == [0, 1, 2]
    assert stopped.usage.prompt_tokens == prompt_tokens(QUESTION)  # the prompt counts once
    # vLLM counts the token that completed the stop string too (it comes as a last response with no text)
    assert stopped.usage.completion_tokens == 3 * (len(tokenize(before_stop)) + 1)


def test_streamed_n_choices_each_get_their_whole_text(client):
    stream = client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "你好"}],
        n=2,
        stream=True,
        max_tokens=12,
        presence_penalty=0.5,
        frequency_penalty=0.5,
    )
    texts = ["", ""]
    reasons: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    assert texts == [expected_chat("你好", max_tokens=12)] * 2
    assert reasons == {0: "length", 1: "length"}


def test_chat_on_the_tensorrt_llm_model_and_a_setting_it_lacks_is_refused(client):
    completion = client.chat.completions.create(
        model="ensemble", messages=[{"role": "user", "content": QUESTION}], max_tokens=8, temperature=0.1
    )
    prompt = BUILTIN_TEMPLATES["chatml"].render([("user", QUESTION)])
    tokens, _ = generate(answer(prompt, "ensemble"), 8, [], keep_stop=True)
    assert completion.choices[0].message.content == "".join(tokens)
    assert completion.usage is None  # the ensemble reports no token counts
    with pytest.raises(openai.BadRequestError) as info:  # v0.5's ensemble has no frequency_penalty input
        client.completions.create(model="trtllm_legacy", prompt="你好", max_tokens=4, frequency_penalty=0.5)
    assert info.value.status_code == 400 and info.value.param == "frequency_penalty"


# -- completions -------------------------------------------------------------------------------------------------


def test_openai_completions_for_one_prompt_and_a_list_of_prompts(client):
    prompt = "请介绍一下 Triton 推理服务器"
    one = client.completions.create(model=QWEN, prompt=prompt, max_tokens=20)
    assert one.choices[0].text == expected_completion(prompt, max_tokens=20)
    assert one.object == "text_completion" and one.choices[0].finish_reason == "length"
    prompts = ["第一个提示", "第二个提示"]
    many = client.completions.create(model=QWEN, prompt=prompts, max_tokens=30, n=2)
    assert [c.text for c in many.choices] == [expected_completion(p, max_tokens=30) for p in prompts for _ in range(2)]
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.usage.prompt_tokens == sum(len(tokenize(p)) for p in prompts)


async def test_openai_async_streaming_completions(aclient):
    prompt = "流式补全的提示"
    stream = await aclient.completions.create(model=QWEN, prompt=prompt, max_tokens=15, stream=True)
    texts = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert "".join(texts) == expected_completion(prompt, max_tokens=15)
    assert len(texts) >= 15


def test_completions_on_a_generic_text_model_and_its_refused_settings(client):
    done = client.completions.create(model="text", prompt="hello 你好 triton")
    assert done.choices[0].text == "HELLO 你好 TRITON" and done.usage is None
    stopped = client.completions.create(model="text", prompt="hello 你好 triton", stop=["你"])
    assert stopped.choices[0].text == "HELLO " and stopped.choices[0].finish_reason == "stop"
    for field in ({"max_tokens": 5}, {"temperature": 0.3}, {"presence_penalty": 1.0}):
        with pytest.raises(openai.BadRequestError) as info:
            client.completions.create(model="text", prompt="x", **field)
        assert info.value.param == next(iter(field)) and info.value.code == "unsupported_parameter"


# -- embeddings and rerank -------------------------------------------------------------------------------------------


def test_openai_embeddings_match_metalm_embeddings_in_base64_and_float(client, gateway, triton_server):
    texts = ["什么是向量检索？", "今天天气很好", "Triton 推理服务器"] * 15  # 45 texts: two batches of <= 32
    direct = MetaLMEmbeddings(model="bge-m3-v", base_url=triton_server.http_url).embed_documents(texts)
    sdk = client.embeddings.create(model="bge-m3-v", input=texts)  # the SDK asks for base64 and decodes it
    assert [item.index for item in sdk.data] == list(range(len(texts)))
    assert np.array_equal(np.array([item.embedding for item in sdk.data], dtype=np.float32), np.float32(direct))
    # One text alone, against the same text alone: the stand-in (MiniLM in numpy) pads a batch to its longest text,
    # and BLAS may round a padded row differently from the same row alone, by a few float32 steps.
    alone = MetaLMEmbeddings(model="bge-m3-v", base_url=triton_server.http_url).embed_documents(texts[:1])[0]
    floats = post(gateway, "/embeddings", {"model": "bge-m3-v", "input": texts[0], "encoding_format": "float"}).json()
    assert floats["data"][0]["embedding"] == alone and floats["object"] == "list"
    encoded = post(gateway, "/embeddings", {"model": "bge-m3-v", "input": [texts[0]], "encoding_format": "base64"})
    vector = np.frombuffer(base64.b64decode(encoded.json()["data"][0]["embedding"]), dtype="<f4")
    assert vector.tolist() == np.float32(alone).tolist()
    assert_error(
        post(gateway, "/embeddings", {"model": "bge-m3-v", "input": "x", "dimensions": 7}), 400, param="dimensions"
    )
    assert_error(post(gateway, "/embeddings", {"model": "bge-m3-v", "input": [1, 2]}), 400, param="input")


def test_rerank_with_curl_is_cohere_shaped_and_matches_metalm_rerank(gateway, triton_server):
    query, documents = "什么是向量检索？", ["向量检索用嵌入找相似的文本", "今天天气很好", {"text": "检索增强生成"}]
    body = json.dumps({"model": "bge-reranker-v2-m3", "query": query, "documents": documents, "top_n": 2})
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-H",
            f"Authorization: Bearer {KEY}",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
            f"{gateway.v1}/rerank",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    answer_ = json.loads(result.stdout)
    texts = ["向量检索用嵌入找相似的文本", "今天天气很好", "检索增强生成"]
    direct = MetaLMRerank(model="bge-reranker-v2-m3", base_url=triton_server.http_url, normalize=True).rerank(
        query, texts
    )
    assert [(r["index"], r["relevance_score"]) for r in answer_["results"]] == [(r.index, r.score) for r in direct[:2]]
    assert [r["document"]["text"] for r in answer_["results"]] == [texts[r.index] for r in direct[:2]]
    assert all(0 <= r["relevance_score"] <= 1 for r in answer_["results"])
    bare = post(
        gateway,
        "/rerank",
        {"model": "bge-reranker-v2-m3", "query": query, "documents": texts, "return_documents": False},
    ).json()
    assert len(bare["results"]) == 3 and all("document" not in r for r in bare["results"])


# -- errors ------------------------------------------------------------------------------------------------------


def test_errors_have_openai_shape_and_status_through_curl_and_the_sdk(client, gateway):
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-w",
            "\n%{http_code}",
            "-H",
            f"Authorization: Bearer {KEY}",
            "--data-binary",
            json.dumps({"model": "没有这个模型", "messages": [{"role": "user", "content": "你好"}]}),
            f"{gateway.v1}/chat/completions",
        ],
        capture_output=True,
        check=True,
        timeout=60,
        text=True,
    )
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "404"
    error = json.loads(body)["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model" and "没有这个模型" in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="没有这个模型", messages=[{"role": "user", "content": "你好"}])
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "你好"}], temperature=3)
    assert info.value.param == "temperature" and info.value.type == "invalid_request_error"
    tools = [{"type": "function", "function": {"name": "天气", "parameters": {"type": "object", "properties": {}}}}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "你好"}], tools=tools)
    assert info.value.code == "unsupported_parameter" and info.value.param == "tools"
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=QWEN, input="你好")
    assert info.value.param == "model" and "/v1/chat/completions" in info.value.message
    assert_error(post(gateway, "/chat/completions", b"{not json"), 400, code="invalid_json")
    assert_error(post(gateway, "/chat/completions", {"model": QWEN, "messages": []}), 400, param="messages")
    bad_role = {"model": QWEN, "messages": [{"role": "tool", "content": "x"}]}
    assert_error(post(gateway, "/chat/completions", bad_role), 400, param="messages[0].role")
    bad_content = {"model": QWEN, "messages": [{"role": "user", "content": 5}]}
    assert_error(post(gateway, "/chat/completions", bad_content), 400, param="messages[0].content")
    assert_error(post(gateway, "/rerank", {"model": "bge-reranker-v2-m3", "query": "问", "documents": [1]}), 400)
    assert_error(httpx.get(f"{gateway.v1}/no-such-route", headers={"Authorization": f"Bearer {KEY}"}), 404)


def test_unknown_fields_are_ignored(client):
    completion = client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "你好", "name": "小明"}],
        max_tokens=3,
        extra_body={"未知字段": 1, "repetition_penalty": 1.1, "top_k": 5, "logprobs": False},
    )
    assert completion.choices[0].message.content == expected_chat("你好", max_tokens=3)


def test_every_v1_route_requires_the_api_key_and_health_does_not(gateway):
    with openai.OpenAI(base_url=gateway.v1, api_key="sk-wrong-key-000000", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            bad.models.list()
        assert info.value.code == "invalid_api_key"
    assert_error(httpx.get(f"{gateway.v1}/models"), 401, code="invalid_api_key")
    for key in (None, "sk-wrong-key-000000"):
        for path, body in (("/chat/completions", {"model": QWEN}), ("/embeddings", {}), ("/rerank", {})):
            assert_error(post(gateway, path, body, key=key), 401, code="invalid_api_key")
        assert_error(httpx.get(f"{gateway.v1}/no-such-route", headers={"Authorization": f"Bearer {key}"}), 401)
    assert httpx.get(f"{gateway.url}/health").json()["status"] == "ok"
    assert "xclient_gateway_requests_total" in httpx.get(f"{gateway.url}/metrics").text


def test_metrics_count_requests_latency_and_tokens_per_model(client, gateway):
    client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "数一数"}], max_tokens=6)
    text = gateway.metrics()
    assert f'xclient_gateway_requests_total{{model="{QWEN}",route="chat",status="200"}}' in text
    assert f'xclient_gateway_request_duration_seconds_count{{model="{QWEN}",route="chat"}}' in text
    tokens = [
        line for line in text.splitlines() if line.startswith("xclient_gateway_tokens_total") and "completion" in line
    ]
    assert any(QWEN in line and float(line.split()[-1]) >= 6 for line in tokens)
    assert 'route="chat",status="404"' in text  # the unknown model of an earlier test, without its name
    assert "没有这个模型" not in text


def test_leaving_a_stream_cancels_the_triton_request(gateway, triton_server):
    marker = "网关断开测试"
    body = {"model": "vllm_slow", "messages": [{"role": "user", "content": marker}], "stream": True}
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", f"{gateway.v1}/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
        ) as response,
    ):
        assert response.status_code == 200
        contents = 0
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                contents += 1
            if contents == 2:
                break  # the client goes away with most of the answer still to come
    assert "request cancelled after" in wait_for_log(triton_server, marker)
    deadline = time.monotonic() + 5
    while metric(gateway.metrics(), "xclient_gateway_generations_in_flight") != 0:
        assert time.monotonic() < deadline, "the generation is still running in the gateway"
        time.sleep(0.05)


# -- LangChain ----------------------------------------------------------------------------------------------------


def test_langchain_chat_openai_invoke_stream_and_batch(gateway):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=gateway.v1, api_key=KEY, model=QWEN, max_retries=0)
    message = llm.invoke(QUESTION)
    assert message.content == expected_chat(QUESTION)
    assert message.usage_metadata["output_tokens"] == len(tokenize(expected_chat(QUESTION)))
    chunks = list(llm.stream("流式的问题"))
    assert "".join(c.content for c in chunks) == expected_chat("流式的问题") and len(chunks) > 10
    questions = ["第一个", "第二个", "第三个"]
    assert [m.content for m in llm.batch(questions)] == [expected_chat(q) for q in questions]


def test_langchain_openai_embeddings(gateway, triton_server):
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        base_url=gateway.v1, api_key=KEY, model="bge-m3-v", check_embedding_ctx_length=False, max_retries=0
    )
    texts = ["向量检索", "重排序模型", "大语言模型"]
    direct = MetaLMEmbeddings(model="bge-m3-v", base_url=triton_server.http_url)
    assert np.allclose(embeddings.embed_documents(texts), direct.embed_documents(texts), atol=1e-6)
    assert np.allclose(embeddings.embed_query("什么是向量检索？"), direct.embed_query("什么是向量检索？"), atol=1e-6)


# -- in-process: what reaches Triton, dead servers, deadlines --------------------------------------------------------


@contextlib.asynccontextmanager
async def in_process(urls: Sequence[str], **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(urls, **options)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as http:
            yield http
    finally:
        await app.state.gateway.servers.close()


@pytest.fixture
def sent_headers(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The headers (gRPC metadata) every Triton request and stream of the base clients and of the HTTP
    generate client carries."""
    from Xclient.client._base import BaseClient
    from Xclient.llms._http import GenerateClient

    seen: list[dict[str, str]] = []
    call_headers = BaseClient._call_headers
    stream_request = GenerateClient._stream_request

    def spy(self: Any, headers: Any, info: Any = None) -> Any:
        merged = call_headers(self, headers, info)
        seen.append(dict(merged or {}))
        return merged

    def spy_stream(self: Any, request: Any, info: Any) -> Any:
        http_request = stream_request(self, request, info)  # an Xclient.client._rest.Request
        seen.append(dict(http_request.headers))
        return http_request

    monkeypatch.setattr(BaseClient, "_call_headers", spy)
    monkeypatch.setattr(GenerateClient, "_stream_request", spy_stream)
    return seen


async def test_traceparent_and_the_triton_key_reach_triton_on_every_route(triton_server, protocol, sent_headers):
    trace = {"traceparent": TRACEPARENT, "tracestate": "xclient=gw01"}
    async with in_process([triton_server.url(protocol)], triton_api_key=TRITON_KEY) as http:
        chat = {"model": QWEN, "messages": [{"role": "user", "content": "追踪"}], "max_tokens": 3}
        for stream in (False, True):
            response = await http.post("/v1/chat/completions", json={**chat, "stream": stream}, headers=trace)
            assert response.status_code == 200, response.text
        assert (
            await http.post("/v1/embeddings", json={"model": "bge-m3-v", "input": ["追踪"]}, headers=trace)
        ).status_code == 200
        rerank = {"model": "bge-reranker-v2-m3", "query": "问", "documents": ["答"]}
        assert (await http.post("/v1/rerank", json=rerank, headers=trace)).status_code == 200
        untraced = len(sent_headers)
        assert (await http.post("/v1/chat/completions", json=chat)).status_code == 200
    inference = [h for h in sent_headers[:untraced] if h.get("traceparent")]
    assert len(inference) >= 4  # two chats, an embedding batch, a rerank
    assert all(h["traceparent"] == TRACEPARENT for h in inference)
    assert all(h.get("Authorization") == f"Bearer {TRITON_KEY}" for h in sent_headers)
    assert not any("traceparent" in h for h in sent_headers[untraced:])


async def test_an_unreachable_server_is_503_and_a_missed_deadline_504(triton_server, dead_url):
    chat = {"model": QWEN, "messages": [{"role": "user", "content": "你好"}]}
    async with in_process([dead_url]) as http:
        response = await http.post("/v1/chat/completions", json=chat)
        assert_error(response, 503, code="triton_unavailable")
        assert (await http.get("/health")).status_code == 503
        assert_error(await http.get("/v1/models"), 503)
    async with in_process([triton_server.grpc_url], timeout_s=0.02) as http:
        slow = {"model": "vllm_slow", "messages": [{"role": "user", "content": "慢"}], "max_tokens": 3}
        assert_error(await http.post("/v1/chat/completions", json=slow), 504, code="triton_timeout")
        assert_error(await http.post("/v1/chat/completions", json={**slow, "stream": True}), 504)


async def test_an_error_after_the_first_text_ends_the_stream_with_an_error_event(triton_server):
    body = {"model": "vllm_failing", "messages": [{"role": "user", "content": "失败"}], "stream": True}
    async with in_process([triton_server.grpc_url]) as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    events = [json.loads(e[6:]) for e in response.text.split("\n\n") if e.startswith("data: {")]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if "choices" in e)  # text came first
    assert events[-1]["error"]["type"] == "server_error" and "生成失败" in events[-1]["error"]["message"]
    assert "[DONE]" not in response.text


# -- several servers, the Triton key, logs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured_server() -> Iterator[LocalTritonServer]:
    """A second Triton server that requires TRITON_KEY, serving only ``text``."""
    with LocalTritonServer(model_repository=[MODELS, DEMO_MODELS], models=["text"], api_key=TRITON_KEY) as server:
        yield server


def test_a_model_on_servers_of_two_protocols_lives_on_the_first_ones_and_the_triton_key_is_sent(
    secured_server, triton_server, tmp_path
):
    args = ["--url", secured_server.grpc_url, "--url", triton_server.http_url, "--api-key", KEY, "--log-level", "debug"]
    with gateway_process(args, tmp_path / "fleet.log", env={"XCLIENT_API_KEY": TRITON_KEY}) as fleet:
        with openai.OpenAI(base_url=fleet.v1, api_key=KEY, max_retries=0) as sdk:
            servers = {m["id"]: m["server"] for m in sdk.models.list().model_dump()["data"]}
            assert servers["text"] == secured_server.grpc_url  # on both, over gRPC and HTTP: the first one's
            listed = {m["id"]: m["servers"] for m in sdk.models.list().model_dump()["data"]}
            assert listed["text"] == [secured_server.grpc_url]  # a replica set has one protocol
            assert servers[QWEN] == triton_server.http_url
            assert sdk.completions.create(model="text", prompt="钥匙 key").choices[0].text == "钥匙 KEY"
            chat = sdk.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "你好"}], max_tokens=4)
            assert chat.choices[0].message.content == expected_chat("你好", max_tokens=4)
            with pytest.raises(openai.BadRequestError):
                sdk.completions.create(model="text", prompt="x", temperature=0.5)
        logs = fleet.logs()
    assert "POST /v1/completions" in logs  # uvicorn's access log is there, and debug logs too
    assert KEY not in logs and TRITON_KEY not in logs


async def _chat_counts(servers: Sequence[LocalTritonServer]) -> list[int]:
    """How many requests each server's Qwen stand-in has answered (Triton's statistics)."""
    from Xclient.client import AsyncioServerClient

    counts = []
    for server in servers:
        async with AsyncioServerClient(server.grpc_url) as client:
            (stats,) = await client.statistics(QWEN)
        counts.append(int(stats["inference_stats"]["success"].get("count", 0)))  # protobuf leaves out a 0
    return counts


async def test_a_model_on_two_servers_is_served_by_both_and_still_answered_when_one_stops(triton_server):
    questions = [f"第{i}个问题：负载均衡" for i in range(12)]

    async def ask(http: httpx.AsyncClient, question: str, stream: bool) -> str:
        body = {"model": QWEN, "messages": [{"role": "user", "content": question}], "max_tokens": 6, "stream": stream}
        response = await http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        if not stream:
            return str(response.json()["choices"][0]["message"]["content"])
        events = [json.loads(e[6:]) for e in response.text.split("\n\n") if e.startswith("data: {")]
        assert response.text.endswith("data: [DONE]\n\n")
        return "".join(e["choices"][0]["delta"].get("content", "") for e in events)

    with LocalTritonServer(model_repository=[MODELS, DEMO_MODELS], models=[QWEN]) as second:
        servers = [second, triton_server]
        async with in_process([second.grpc_url, triton_server.grpc_url]) as http:
            listed = {m["id"]: m for m in (await http.get("/v1/models")).json()["data"]}
            assert listed[QWEN]["servers"] == [second.grpc_url, triton_server.grpc_url]
            assert listed["text"]["servers"] == [triton_server.grpc_url]  # only the session server has it
            before = await _chat_counts(servers)
            answers = await asyncio.gather(*(ask(http, q, i % 2 == 0) for i, q in enumerate(questions)))
            assert answers == [expected_chat(q, max_tokens=6) for q in questions]
            after = await _chat_counts(servers)
            assert all(a > b for a, b in zip(after, before, strict=True))  # both replicas took requests
            assert sum(after) - sum(before) == len(questions)
            health = (await http.get("/health")).json()
            assert health["models"][QWEN] == [
                {"url": second.grpc_url, "ready": True},
                {"url": triton_server.grpc_url, "ready": True},
            ]

            second.stop()
            later = [f"停了一台之后：{i}" for i in range(6)]
            answers = await asyncio.gather(*(ask(http, q, i % 2 == 1) for i, q in enumerate(later)))
            assert answers == [expected_chat(q, max_tokens=6) for q in later]
            assert (await http.post("/v1/completions", json={"model": "text", "prompt": "还在"})).status_code == 200
            health_response = await http.get("/health")
            assert health_response.status_code == 200  # one server is still ready
            assert health_response.json()["models"][QWEN] == [
                {"url": second.grpc_url, "ready": False},
                {"url": triton_server.grpc_url, "ready": True},
            ]


def uses_uvloop(process: GatewayProcess) -> bool:
    """Whether uvloop's extension is loaded in the gateway's process (what ``--loop`` chose)."""
    return "/uvloop/" in pathlib.Path(f"/proc/{process.process.pid}/maps").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/maps")
def test_the_gateway_runs_on_uvloop_by_default_and_on_asyncios_loop_when_asked(gateway, triton_server, tmp_path):
    assert uses_uvloop(gateway)
    args = ["--url", triton_server.grpc_url, "--loop", "asyncio"]
    with gateway_process(args, tmp_path / "gateway.log") as plain:
        assert not uses_uvloop(plain)
        body = {"model": QWEN, "messages": [{"role": "user", "content": "事件循环"}], "stream": True}
        events, chunks = sse(post(plain, "/chat/completions", body))
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert (text, events[-1]) == (expected_chat("事件循环"), "data: [DONE]")


def gateway_command_without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``xclient gateway --url grpc://127.0.0.1:1 ARGS`` in a fresh interpreter where ``module`` cannot be imported."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from Xclient.cli import main\n"
        f"raise SystemExit(main(['gateway', '--url', 'grpc://127.0.0.1:1', *{list(args)!r}]))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_loop_uvloop_without_uvloop_says_so_before_starting():
    result = gateway_command_without("uvloop", "--loop", "uvloop")
    assert result.returncode == 1
    assert "--loop uvloop: uvloop is not installed" in result.stderr and "Traceback" not in result.stderr


def test_neither_key_is_ever_logged(gateway):
    post(
        gateway,
        "/chat/completions",
        {"model": QWEN, "messages": [{"role": "user", "content": "日志"}]},
        key="sk-bad-key-1234",
    )
    post(gateway, "/chat/completions", {"model": "没有", "messages": [{"role": "user", "content": "日志"}]})
    logs = gateway.logs()
    assert "/v1/chat/completions" in logs
    assert KEY not in logs and "sk-bad-key-1234" not in logs


def test_the_command_without_the_extra_names_it():
    result = gateway_command_without("starlette")
    assert result.returncode == 1
    assert "pip install 'llmops-xclient[gateway]'" in result.stderr


def test_request_headers_reach_triton_from_sync_clients_and_a_calls_own_headers_win(url, sent_headers):
    from Xclient.client import ModelClient, request_headers

    with ModelClient(url, "text") as client:
        with request_headers({"traceparent": TRACEPARENT}):
            assert client.infer_sample("追踪")["UPPER"].tolist() == ["追踪".encode()]
            client.infer_sample("b", headers={"traceparent": "00-override-01"})
        client.infer_sample("c")
    # the last three requests: inside the block, inside it with the call's own header, after it
    assert [h.get("traceparent") for h in sent_headers[-3:]] == [TRACEPARENT, "00-override-01", None]


# -- the event stream's own rules (an ASGI response driven by hand: what no HTTP client can time) -----------


class _Client:
    """The ASGI side of one streamed response: what was sent, and a disconnect on demand."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def _stream(events: list[bytes], wait: asyncio.Event | None = None) -> tuple[Any, list[str]]:
    from Xclient.gateway._app import EventStream

    log: list[str] = []

    async def write(send: Any) -> None:
        try:
            for index, data in enumerate(events):
                if index == len(events) - 1 and wait is not None:
                    await wait.wait()  # the last event waits: the client may leave meanwhile
                await send({"type": "http.response.body", "body": data, "more_body": index < len(events) - 1})
            log.append("written")
        except asyncio.CancelledError:
            log.append("cancelled")
            raise

    async def close() -> None:
        await asyncio.sleep(0)  # an await in close() must not be cut short
        log.append("closed")

    return EventStream(write, close), log


async def test_a_client_leaving_cancels_the_writing_and_the_stream_closes_once() -> None:
    client, never = _Client(), asyncio.Event()
    stream, log = _stream(["data: 你好\n\n".encode(), b"data: [DONE]\n\n"], wait=never)
    task = asyncio.ensure_future(stream({}, client.receive, client.send))
    await asyncio.sleep(0.05)
    client.gone.set()
    await asyncio.wait_for(task, 5)  # returns normally: a client leaving is not an error
    assert log == ["cancelled", "closed"]
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]
    if sys.version_info >= (3, 11):
        assert task.cancelling() == 0  # the watcher's cancellation is taken back


async def test_a_stream_sent_in_full_is_not_cancelled_by_a_later_disconnect() -> None:
    client = _Client()
    stream, log = _stream(["data: 你好\n\n".encode(), b"data: [DONE]\n\n"])
    client.gone.set()  # the disconnect is already there; the whole stream is sent before the watcher runs
    await asyncio.wait_for(stream({}, client.receive, client.send), 5)
    assert log == ["written", "closed"]
    assert client.sent[-1] == {"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False}


async def test_a_cancellation_from_outside_goes_through_and_the_stream_still_closes() -> None:
    client, never = _Client(), asyncio.Event()
    stream, log = _stream([b"data: 1\n\n", b"data: [DONE]\n\n"], wait=never)
    task = asyncio.ensure_future(stream({}, client.receive, client.send))
    await asyncio.sleep(0.05)
    task.cancel()  # the server shutting down
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["cancelled", "closed"]
