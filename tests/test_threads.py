"""Thread patterns that used to kill the process over HTTP (gevent's hubs under short-lived threads), each
run in a subprocess, repeated: it must exit 0 and print nothing about libev, bad descriptors or exceptions
ignored in ``__del__``. Also: descriptors and threads come back to their baseline after 30 short-lived
threads, and no client, used over HTTP, imports gevent.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).parent.parent
#: What a crash of the old gevent path printed; none of it may appear.
CRASH_SIGNS = ("libev", "Bad file descriptor", "EBADF", "Exception ignored", "Traceback", "Fatal Python error")
REPEATS = 3


def run_pattern(code: str, *args: str, timeout_s: float = 240.0) -> str:
    """Run ``code`` in a fresh interpreter (``sys.argv[1:]`` = ``args``); its stdout when it exited 0 quietly."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    for sign in CRASH_SIGNS:
        assert sign not in result.stderr, result.stderr
    return result.stdout


def closed_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


SEQUENTIAL_THREADS = """
    import sys, threading
    from Xclient.client import ModelClient
    from Xclient.exceptions import ServerUnavailableError

    url, expect_up = sys.argv[1], sys.argv[2] == "up"
    outcomes = []

    def one_call():
        with ModelClient(url, "text", init_timeout_s=5) as client:
            try:
                outcomes.append(client.infer_sample("线程")["UPPER"].tolist() == ["线程".encode()])
            except ServerUnavailableError:
                outcomes.append("unavailable")

    for _ in range(8):
        thread = threading.Thread(target=one_call)
        thread.start()
        thread.join()
    assert outcomes == ([True] if expect_up else ["unavailable"]) * 8, outcomes
    print("ok")
"""


@pytest.mark.parametrize("repeat", range(REPEATS))
def test_sequential_short_lived_threads_each_with_an_http_client_exit_cleanly(triton_server, repeat):
    assert run_pattern(SEQUENTIAL_THREADS, triton_server.http_url, "up").strip() == "ok"


@pytest.mark.parametrize("repeat", range(REPEATS))
def test_sequential_short_lived_threads_against_a_closed_port_exit_cleanly(repeat):
    assert run_pattern(SEQUENTIAL_THREADS, closed_port(), "down").strip() == "ok"


POOL_ROUNDS = """
    import sys
    from concurrent.futures import ThreadPoolExecutor
    from Xclient.client import ModelClient

    url = sys.argv[1]
    shared = ModelClient(url, "text")
    for round_ in range(6):
        with ThreadPoolExecutor(max_workers=4) as pool:
            texts = [f"第{round_}轮{i}" for i in range(12)]
            results = list(pool.map(lambda t: shared.infer_sample(t)["UPPER"][0].decode(), texts))
            assert results == texts, results
        with ThreadPoolExecutor(max_workers=3) as pool:  # a client per task, too
            def own(t):
                with ModelClient(url, "text") as client:
                    return client.infer_sample(t)["LENGTH"].tolist()
            assert list(pool.map(own, ["一", "一二"])) == [[1], [2]]
    shared.close()
    print("ok")
"""


@pytest.mark.parametrize("repeat", range(REPEATS))
def test_successive_thread_pool_rounds_over_http_exit_cleanly(triton_server, repeat):
    assert run_pattern(POOL_ROUNDS, triton_server.http_url).strip() == "ok"


LANGCHAIN_THREADS = """
    import sys, threading
    from Xclient import MetaLMEmbeddings, MetaLMRerank
    from langchain_core.documents import Document

    url = sys.argv[1]
    embeddings = MetaLMEmbeddings(model="bge-m3-v", base_url=url)
    rerank = MetaLMRerank(model="bge-reranker-v2-m3", base_url=url, top_n=2)
    outcomes = []

    def use_both():
        vectors = embeddings.embed_documents(["你好", "世界"])
        ranked = rerank.compress_documents([Document(page_content="北京"), Document(page_content="猫")], "中国的首都")
        outcomes.append((len(vectors), len(ranked)))

    for _ in range(6):
        thread = threading.Thread(target=use_both)
        thread.start()
        thread.join()
    assert outcomes == [(2, 2)] * 6, outcomes
    print("ok")
"""


@pytest.mark.parametrize("repeat", range(REPEATS))
def test_embeddings_and_rerank_shared_across_short_lived_threads_over_http_exit_cleanly(triton_server, repeat):
    assert run_pattern(LANGCHAIN_THREADS, triton_server.http_url).strip() == "ok"


BASELINE = """
    import sys, threading
    sys.path.insert(0, ".")
    from tests.leaks import Resources, assert_released
    from Xclient.client import ModelClient

    url = sys.argv[1]
    with ModelClient(url, "text") as shared:
        shared.infer_sample("预热")
        baseline = Resources.now()
        for i in range(30):
            def call(i=i):
                assert shared.infer_sample(f"第{i}个")["LENGTH"].tolist() == [len(f"第{i}个")]
                with ModelClient(url, "text") as own:
                    own.infer_sample("自己的")
            thread = threading.Thread(target=call)
            thread.start()
            thread.join()
        assert_released(baseline, timeout_s=5)
    print("ok")
"""


def test_descriptors_and_threads_are_back_to_baseline_after_30_short_lived_threads(triton_server):
    assert run_pattern(BASELINE, triton_server.http_url).strip() == "ok"


NO_GEVENT = """
    import asyncio, sys
    from Xclient import AsyncioDecoupledModelClient, MetaLMEmbeddings, MetaLMRerank
    from Xclient.client import (
        AsyncioModelClient, DecoupledModelClient, FuturesModelClient, ModelClient, ServerClient,
    )
    from Xclient.exceptions import XclientError
    from Xclient.llms import ChatMetaLM
    from langchain_core.documents import Document

    url = sys.argv[1]
    used = []
    with ModelClient(url, "text") as client:
        used.append(client.infer_sample("一")["LENGTH"].tolist())
    with FuturesModelClient(url, "text") as client:
        used.append(client.infer_sample("一二").result()["LENGTH"].tolist())

    async def main():
        async with AsyncioModelClient(url, "text") as client:
            used.append((await client.infer_sample("一二三"))["LENGTH"].tolist())

    asyncio.run(main())
    for streaming in (DecoupledModelClient, AsyncioDecoupledModelClient):  # gRPC only: refused, importing nothing
        try:
            streaming(url, "text_stream")
        except XclientError as e:
            used.append(type(e).__name__)
    with ServerClient(url) as server:
        used.append(server.is_model_ready("text"))
    used.append(ChatMetaLM(server_url=url, model="Qwen2-0.5B-Instruct", max_tokens=4).invoke("你好").content != "")
    used.append(len(MetaLMEmbeddings(model="bge-m3-v", base_url=url).embed_query("你好")) > 0)
    used.append(len(MetaLMRerank(model="bge-reranker-v2-m3", base_url=url).compress_documents(
        [Document(page_content="北京")], "首都")))
    assert "gevent" not in sys.modules, "gevent was imported"
    assert not any(name.startswith("tritonclient.http") for name in sys.modules), "tritonclient.http was imported"
    print(used)
"""


def test_no_client_used_over_http_imports_gevent(triton_server):
    out = run_pattern(NO_GEVENT, triton_server.http_url)
    expected = "[[1], [2], [3], 'XclientValueError', 'XclientValueError', True, True, True, 1]"
    assert out.strip() == expected, out


UNCLOSED_GRPC_AT_EXIT = """
    import faulthandler, sys
    faulthandler.dump_traceback_later(20, exit=True)  # a hang at exit prints every thread's stack, and fails
    from Xclient.client import DecoupledModelClient, ModelClient

    url = sys.argv[1]
    stream_client = DecoupledModelClient(url, "Qwen2-0.5B-Instruct")  # never closed, as scripts do
    list(stream_client.infer_sample("你好"))
    unary = ModelClient(url, "text")  # never closed either
    unary.infer_sample("一")
    print("ok")
"""


def test_unclosed_grpc_clients_let_the_interpreter_exit(triton_server):
    """tritonclient closes a leftover channel in ``__del__`` during finalization, when gRPC's daemon threads
    are frozen and may hold the channel's lock: before the atexit close, about one exit in twenty hung."""
    for _ in range(8):
        assert run_pattern(UNCLOSED_GRPC_AT_EXIT, triton_server.grpc_url, timeout_s=60).strip() == "ok"
