"""The integrations over several replicas: ChatMetaLM, MetaLM, MetaLMEmbeddings and MetaLMRerank take a
list of URLs, and the CLI takes ``--url`` repeated (or ``XCLIENT_URL=a,b``). Against two real local
servers (the session's and a second one serving the demo models these classes use), over both
protocols: requests land on both (each server's own Triton statistics say so), and with one server
stopped every call still succeeds."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import pathlib
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from Xclient import ChatMetaLM, MetaLM, MetaLMEmbeddings, MetaLMRerank
from Xclient.cli import main
from Xclient.client import ServerClient
from Xclient.exceptions import ServerUnavailableError
from Xclient.server import DEMO_MODELS, LocalTritonServer

LLM, EMBEDDER, RERANKER = "Qwen2-0.5B-Instruct", "bge-m3-v", "bge-reranker-v2-m3"
#: A model of tests/models cheap to unload and load again.
CHEAP_MODEL = "optional"
MODELS = pathlib.Path(__file__).parent / "models"
DOCS = [f"第{i}篇文档：向量检索把文本变成向量。Document {i} on vector search." for i in range(24)]
PASSAGES = ["向量检索把文本变成向量，再按相似度查找。", "今天天气很好。", "Paris is the capital of France."]


@pytest.fixture(scope="module")
def second_server() -> Iterator[LocalTritonServer]:
    """A second replica: only the models these tests use (the same configs as the session server's,
    from the same repositories)."""
    models = [LLM, EMBEDDER, RERANKER, CHEAP_MODEL]
    with LocalTritonServer(model_repository=[MODELS, DEMO_MODELS], models=models) as server:
        yield server


@pytest.fixture
def servers(triton_server: LocalTritonServer, second_server: LocalTritonServer) -> list[LocalTritonServer]:
    return [triton_server, second_server]


@pytest.fixture
def replicas(servers: list[LocalTritonServer], protocol: str) -> list[str]:
    return [server.url(protocol) for server in servers]


def free_urls(protocol: str, count: int) -> list[str]:
    """``count`` different URLs on which nothing listens."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [f"{protocol}://127.0.0.1:{s.getsockname()[1]}" for s in sockets]


def free_url(protocol: str) -> str:
    return free_urls(protocol, 1)[0]


def successes(server: LocalTritonServer, model: str) -> int:
    """The server's own count of the model's successful requests (Triton's statistics)."""
    with ServerClient(server.http_url) as client:
        return sum(int(entry["inference_stats"]["success"]["count"]) for entry in client.statistics(model))


def settled(servers: list[LocalTritonServer], model: str, at_least: int = 0) -> list[int]:
    """Each server's count once the statistics are up to date: Triton counts a request just after its
    response went out, so a count read right after the last answer may miss it. The counts are read
    until they stop moving (and reach ``at_least`` in all), for at most 10 s."""
    counts = [successes(server, model) for server in servers]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.1)
        again = [successes(server, model) for server in servers]
        if again == counts and sum(again) >= at_least:
            break
        counts = again
    return counts


def spread(servers: list[LocalTritonServer], model: str, work: Callable[[], Any], requests: int) -> list[int]:
    """Run ``work``, which sends ``requests`` requests for ``model``; how many each server answered."""
    before = settled(servers, model)
    work()
    after = settled(servers, model, sum(before) + requests)
    return [a - b for a, b in zip(after, before, strict=True)]


# -- the fields: a list of URLs, checked before anything is sent ----------------------------------------

CLASSES: dict[str, tuple[type[Any], str]] = {
    "ChatMetaLM": (ChatMetaLM, LLM),
    "MetaLM": (MetaLM, LLM),
    "MetaLMEmbeddings": (MetaLMEmbeddings, EMBEDDER),
    "MetaLMRerank": (MetaLMRerank, RERANKER),
}


@pytest.fixture(params=list(CLASSES))
def kind(request: pytest.FixtureRequest) -> tuple[type[Any], str]:
    return CLASSES[request.param]


def test_base_url_takes_a_list_of_replicas_and_reads_back_as_given(kind):
    cls, model = kind
    instance = cls(base_url=["grpc://a:8001", " b:8001 "], model=model)
    assert instance.base_url == instance.server_url == ["grpc://a:8001", "b:8001"]
    assert instance.urls == ("grpc://a:8001", "b:8001")
    old = cls(server_url=("http://a:8000", "http://b:8000"), model_name=model)
    assert old.base_url == ["http://a:8000", "http://b:8000"] and old.urls == ("http://a:8000", "http://b:8000")
    one = cls(base_url="grpc://a:8001", model=model)
    assert one.base_url == "grpc://a:8001" and one.urls == ("grpc://a:8001",)


def test_a_comma_inside_one_url_is_an_error_that_says_to_give_a_list(kind):
    cls, model = kind
    with pytest.raises(ValidationError, match=r"base_url: 'a:8001,b:8001' holds a comma.*\['a:8001', 'b:8001'\]"):
        cls(base_url="a:8001,b:8001", model=model)


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        (["grpc://a:8001", "ftp://b"], r"base_url\[1\]: Invalid server URL 'ftp://b': unknown scheme 'ftp'"),
        (["grpc://a:8001", "http://b:8000"], r"base_url: every replica must speak one protocol.*'http://b:8000'"),
        (["grpc://a:8001", "a:8001"], r"base_url: 'grpc://a:8001' is given twice"),
        ([], "base_url: an empty list"),
        (["grpc://a:8001", ""], r"base_url\[1\]: Invalid server URL '': it is empty"),
    ],
)
def test_a_bad_replica_list_names_the_field_and_the_entry(kind, urls, message):
    cls, model = kind
    with pytest.raises(ValidationError, match=message):
        cls(base_url=urls, model=model)


def test_xclient_url_holds_several_replicas_separated_by_commas(kind, monkeypatch):
    cls, model = kind
    monkeypatch.setenv("XCLIENT_URL", "grpc://a:8001, grpc://b:8001")
    instance = cls(model=model)
    assert instance.base_url == ["grpc://a:8001", "grpc://b:8001"]
    monkeypatch.setenv("XCLIENT_URL", "grpc://a:8001")
    assert cls(model=model).base_url == "grpc://a:8001"


# -- the classes over two real servers --------------------------------------------------------------------


def test_embeddings_spread_over_both_replicas_and_equal_one_server(servers, replicas, protocol):
    one = MetaLMEmbeddings(base_url=replicas[0], model=EMBEDDER, max_batch_size=2)
    fleet = MetaLMEmbeddings(base_url=replicas, model=EMBEDDER, max_batch_size=2, max_concurrency=4)
    try:
        got: list[list[float]] = []
        counts = spread(servers, EMBEDDER, lambda: got.extend(fleet.embed_documents(DOCS)), len(DOCS) // 2)
        expected = one.embed_documents(DOCS)
    finally:
        one.close()
        fleet.close()
    assert np.allclose(got, expected, atol=1e-5)
    assert sum(counts) == len(DOCS) // 2 and min(counts) > 0, counts


def test_rerank_spreads_over_both_replicas_asyncio_too(servers, replicas):
    reranker = MetaLMRerank(base_url=replicas, model=RERANKER)

    async def many() -> list[Any]:
        try:
            return await asyncio.gather(*(reranker.arerank("什么是向量检索", PASSAGES) for _ in range(12)))
        finally:
            await reranker.aclose()

    results: list[Any] = []
    counts = spread(servers, RERANKER, lambda: results.extend(asyncio.run(many())), 12)
    assert all(r[0].index == 0 for r in results) and len(results) == 12
    assert sum(counts) == 12 and min(counts) > 0, counts


def test_chat_and_completion_spread_over_both_replicas(servers, replicas):
    chat = ChatMetaLM(base_url=replicas, model=LLM, max_tokens=8)
    completion = MetaLM(base_url=replicas, model=LLM, max_tokens=8)
    prompts = [f"你好，第{i}个问题" for i in range(8)]
    answers: list[str] = []
    try:

        def work() -> None:
            answers.extend(m.content for m in chat.batch(prompts, config={"max_concurrency": 4}))
            answers.extend(completion.batch(prompts, config={"max_concurrency": 4}))

        counts = spread(servers, LLM, work, 16)
    finally:
        chat.close()
        completion.close()
    assert len(answers) == 16 and all(isinstance(a, str) and a for a in answers)
    assert sum(counts) == 16 and min(counts) > 0, counts


def test_chat_async_spreads_over_both_replicas(servers, replicas):
    chat = ChatMetaLM(base_url=replicas, model=LLM, max_tokens=8)

    async def many() -> list[Any]:
        try:
            invoked = [chat.ainvoke(f"你好，第{i}个问题") for i in range(6)]
            streamed = [_joined(chat.astream(f"介绍一下第{i}个向量")) for i in range(4)]
            return list(await asyncio.gather(*invoked, *streamed))
        finally:
            await chat.aclose()

    answers: list[Any] = []
    counts = spread(servers, LLM, lambda: answers.extend(asyncio.run(many())), 10)
    assert len(answers) == 10 and all(answers)
    assert sum(counts) == 10 and min(counts) > 0, counts


async def _joined(chunks: Any) -> str:
    return "".join([str(chunk.content) async for chunk in chunks])


def test_chat_streams_chinese_over_replicas(replicas):
    chat = ChatMetaLM(base_url=replicas, model=LLM, max_tokens=16)
    try:
        streamed = "".join(str(chunk.content) for chunk in chat.stream("用中文介绍一下向量检索"))
        assert streamed == chat.invoke("用中文介绍一下向量检索").content
    finally:
        chat.close()


def test_every_class_answers_with_one_replica_down(protocol, triton_server):
    """A replica on which nothing listens (stopped) is taken out: every call still succeeds."""
    urls = [free_url(protocol), triton_server.url(protocol)]
    embeddings = MetaLMEmbeddings(base_url=urls, model=EMBEDDER)
    reranker = MetaLMRerank(base_url=urls, model=RERANKER)
    chat = ChatMetaLM(base_url=urls, model=LLM, max_tokens=8)
    try:
        for _ in range(4):
            assert len(embeddings.embed_query("什么是向量检索")) == 384
            assert reranker.rerank("什么是向量检索", PASSAGES)[0].index == 0
            assert chat.invoke("你好").content
    finally:
        for instance in (embeddings, reranker, chat):
            instance.close()


@pytest.mark.parametrize("name", list(CLASSES))
def test_when_every_replica_is_down_the_error_names_each(protocol, name):
    cls, model = CLASSES[name]
    dead = free_urls(protocol, 2)
    instance = cls(base_url=dead, model=model)
    try:
        with pytest.raises(ServerUnavailableError) as raised:
            if isinstance(instance, MetaLMEmbeddings):
                instance.embed_query("你好")
            elif isinstance(instance, MetaLMRerank):
                instance.rerank("你好", PASSAGES)
            else:
                instance.invoke("你好")
        assert all(url in str(raised.value) for url in dead), str(raised.value)
    finally:
        instance.close()


def test_every_class_keeps_answering_when_a_replica_is_stopped_mid_run(replicas, second_server):
    embeddings = MetaLMEmbeddings(base_url=replicas, model=EMBEDDER, max_batch_size=2, max_concurrency=2)
    reranker = MetaLMRerank(base_url=replicas, model=RERANKER)
    chat = ChatMetaLM(base_url=replicas, model=LLM, max_tokens=8)
    completion = MetaLM(base_url=replicas, model=LLM, max_tokens=8)
    try:
        assert len(embeddings.embed_documents(DOCS[:4])) == 4 and chat.invoke("你好").content
        second_server.stop()
        for _ in range(3):
            assert len(embeddings.embed_documents(DOCS[:6])) == 6
            assert reranker.rerank("什么是向量检索", PASSAGES)[0].index == 0
            assert chat.invoke("你好").content and completion.invoke("你好")
            assert "".join(str(c.content) for c in chat.stream("介绍一下向量检索"))
    finally:
        for instance in (embeddings, reranker, chat, completion):
            instance.close()
        second_server.start()


# -- the CLI -------------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = "") -> Any:
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("XCLIENT_URL", "XCLIENT_API_KEY", "XCLIENT_MODEL", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_cli_embed_takes_url_repeated_and_spreads(servers, replicas, capsys, clean_env):
    texts = [f"向量检索第{i}句" for i in range(70)]  # three requests of at most 32 texts, sent at once
    argv = ["embed", *texts, "--model", EMBEDDER, "--url", replicas[0], "--url", replicas[1]]
    result: list[Any] = []
    counts = spread(servers, EMBEDDER, lambda: result.extend(cli(capsys, clean_env, *argv)), 3)
    code, out, err = result
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in records] == texts
    assert sum(counts) == 3 and min(counts) > 0, counts


def test_cli_reads_several_replicas_from_xclient_url(replicas, capsys, clean_env):
    clean_env.setenv("XCLIENT_URL", ",".join(replicas))
    code, out, err = cli(capsys, clean_env, "rerank", "--query", "什么是向量检索", *PASSAGES, "--json")
    assert code == 0, err
    assert json.loads(out)[0]["text"] == PASSAGES[0]
    code, out, err = cli(capsys, clean_env, "generate", "你好", "--max-tokens", "8", "--no-stream")
    assert code == 0 and out.strip(), err


def test_cli_health_shows_every_replica(replicas, protocol, capsys, clean_env):
    dead = free_url(protocol)
    code, out, err = cli(capsys, clean_env, "health", "--url", replicas[0], "--url", f"{replicas[1]},{dead}")
    assert code == 0, err  # at least one replica is up
    for url in (*replicas, dead):
        assert url in out
    lines = {url: next(line for line in out.splitlines() if url in line) for url in (*replicas, dead)}
    assert "up" in lines[replicas[0]] and "up" in lines[replicas[1]] and "down" in lines[dead]
    code, out, err = cli(capsys, clean_env, "health", "--json", "--url", ",".join([*replicas, dead]))
    states = {r["url"]: r for r in json.loads(out)["replicas"]}
    assert code == 0 and [states[u]["state"] for u in (*replicas, dead)] == ["up", "up", "down"]
    assert all(set(r) >= {"url", "state", "outstanding", "latency_ms", "live", "ready"} for r in states.values())


def test_cli_health_fails_when_no_replica_is_up(protocol, capsys, clean_env):
    dead = free_urls(protocol, 2)
    code, out, err = cli(capsys, clean_env, "health", "--url", dead[0], "--url", dead[1])
    assert code == 1
    assert out.count("down") == 2


def test_cli_refuses_replicas_of_two_protocols_before_sending(capsys, clean_env):
    code, out, err = cli(capsys, clean_env, "health", "--url", "grpc://a:8001", "--url", "http://b:8000")
    assert code == 2 and "--url: every replica must speak one protocol" in err


def test_cli_unload_and_load_act_on_every_replica(servers, replicas, capsys, clean_env):
    urls = ["--url", replicas[0], "--url", replicas[1]]

    def states() -> list[str]:
        found = []
        for server in servers:
            with ServerClient(server.http_url) as client:
                found.append(next(m.state for m in client.models() if m.name == CHEAP_MODEL))
        return found

    try:
        code, out, err = cli(capsys, clean_env, "models", "unload", CHEAP_MODEL, *urls)
        assert code == 0, err
        assert out.splitlines() == [f"unloaded {CHEAP_MODEL} on {url}" for url in replicas]
        assert states() == ["UNAVAILABLE", "UNAVAILABLE"]
    finally:
        code, out, err = cli(capsys, clean_env, "models", "load", CHEAP_MODEL, *urls)
    assert code == 0, err
    assert [line.split(" (")[0] for line in out.splitlines()] == [f"loaded {CHEAP_MODEL} on {url}" for url in replicas]
    assert states() == ["READY", "READY"]
