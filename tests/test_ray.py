"""Xclient.ray on a local Ray cluster started here (2 CPUs), against two local Triton servers.

Server ``a`` serves the small models the classes are checked with (embed_lexical, embed_bad_sparse, text,
failing, and the demo's bge-m3-v, bge-reranker-v2-m3, Qwen2-0.5B-Instruct); server ``b`` only
embed_lexical, the cheap bge-m3-contract model of the bulk test. Every result is compared with what the
plain Xclient class gives for the same input on the same server.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import ray

from Xclient import MetaLMEmbeddings, MetaLMRerank, ServerClient
from Xclient.embeddings import sparse_to_indices_values
from Xclient.llms import ChatMetaLM
from Xclient.ray import Embedder, ModelCaller, Reranker, TextGenerator
from Xclient.server import DEMO_MODELS, LocalTritonServer

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "models"
#: The test servers' models: a carries every model used here, b the bulk test's embedder.
A_MODELS = [
    "embed_lexical",
    "embed_bad_sparse",
    "text",
    "failing",
    "bge-m3-v",
    "bge-reranker-v2-m3",
    "Qwen2-0.5B-Instruct",
]
B_MODELS = ["embed_lexical"]
#: Actors take half a CPU each, so that two of them leave a CPU of the 2 for Ray Data's own tasks.
ACTOR = {"num_cpus": 0.5}


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[LocalTritonServer, LocalTritonServer]]:
    a = LocalTritonServer([MODELS, DEMO_MODELS], models=A_MODELS)
    b = LocalTritonServer([MODELS], models=B_MODELS)
    errors: list[BaseException] = []

    def start(server: LocalTritonServer) -> None:
        try:
            server.start()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start, args=(s,)) for s in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        if errors:
            raise errors[0]
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture(scope="module")
def a(servers: tuple[LocalTritonServer, LocalTritonServer]) -> LocalTritonServer:
    return servers[0]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    # The raylet waits for its agent, which imports much of Ray: on a loaded 2-core machine that took
    # longer than the default wait, and the node failed to start.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


def corpus(count: int) -> list[str]:
    """``count`` distinct documents, Chinese and English by turns."""
    chinese = [
        "向量检索把文本变成向量。",
        "今天天气很好，适合散步。",
        "大语言模型在 Triton 上服务。",
        "重排序模型给段落打分。",
    ]
    english = ["Vector search turns text into vectors.", "The weather is fine today.", "LLMs are served on Triton."]
    return [
        f"{i}: {chinese[i % len(chinese)]}" if i % 2 else f"doc {i}: {english[i % len(english)]}" for i in range(count)
    ]


def column(rows: list[dict[str, Any]], name: str) -> list[Any]:
    return [row[name] for row in rows]


def plain(values: list[Any]) -> list[Any]:
    """Cells as plain Python values (Ray hands list cells back as numpy arrays)."""
    return [v.tolist() if isinstance(v, np.ndarray) else v for v in values]


# -- the embedder ----------------------------------------------------------------------------------


def kill_at(batch: dict[str, np.ndarray], *, pid: int, at: int) -> dict[str, np.ndarray]:
    """Kill the Triton server ``pid`` (SIGKILL, as a crash) when the batch holds document ``at``: this
    batch and those after it reach the embedder with that server gone."""
    if at in batch["id"]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return batch


def inferences(server: LocalTritonServer, model: str) -> int:
    """How many texts the server's model has embedded (gRPC leaves a count of 0 out)."""
    with ServerClient(server.grpc_url) as client:
        return int(client.statistics(model)[0].get("inference_count", 0))


def test_embedder_over_two_servers_embeds_5000_documents_once_in_order_and_survives_a_kill(cluster, servers):
    a, b = servers
    texts = corpus(5000)
    before = inferences(a, "embed_lexical")
    items = [{"id": i, "text": t} for i, t in enumerate(texts)]
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    try:
        ds = (
            ray.data.from_items(items, override_num_blocks=10)
            .map_batches(kill_at, fn_kwargs={"pid": b.pid, "at": 2500}, batch_size=500)
            .map_batches(
                Embedder,
                fn_constructor_kwargs={
                    "url": [a.grpc_url, b.grpc_url],
                    "model": "embed_lexical",
                    "sparse_column": "sparse",
                },
                batch_size=500,
                concurrency=2,
                **ACTOR,
            )
        )
        rows = ds.take_all()
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        b.kill()  # already dead: this reaps it and frees its shared memory

    served_by_a = inferences(a, "embed_lexical") - before
    assert column(rows, "id") == list(range(5000))  # each document once, in order, none lost
    assert column(rows, "text") == texts
    assert served_by_a < 5000  # server b embedded some before it died
    dense, sparse = MetaLMEmbeddings(base_url=a.http_url, model="embed_lexical").embed_documents_sparse(texts)
    assert plain(column(rows, "embedding")) == dense
    assert plain(column(rows, "sparse_indices")) == [sparse_to_indices_values(s)[0] for s in sparse]
    assert plain(column(rows, "sparse_values")) == [sparse_to_indices_values(s)[1] for s in sparse]
    assert len({tuple(v) for v in dense}) == 5000  # the documents are told apart: the check means something


def test_embedder_error_column_reports_the_failed_rows_and_embeds_the_rest(cluster, a):
    texts: list[Any] = ["第一", "坏JSON", "second", None, "第三", "列表", "fourth", "第五"]
    ds = ray.data.from_items([{"text": t} for t in texts]).map_batches(
        Embedder,
        fn_constructor_kwargs={
            "url": a.http_url,
            "model": "embed_bad_sparse",
            "sparse_column": "sparse",
            "on_error": "column",
        },
        batch_format="pandas",
        batch_size=8,
        concurrency=1,
        **ACTOR,
    )
    rows = ds.take_all()

    errors = column(rows, "error")
    assert [e is not None for e in errors] == [False, True, False, True, False, True, False, False]
    assert errors[1].startswith("IncompatibleModelError: ") and "embed_bad_sparse" in errors[1]
    assert errors[3] == "XclientValueError: text[3]: expected a str, got NAType <NA>"  # pandas' missing value
    assert "a JSON list" in errors[5]
    good = [t for t, e in zip(texts, errors, strict=True) if e is None]
    dense, sparse = MetaLMEmbeddings(base_url=a.http_url, model="embed_bad_sparse").embed_documents_sparse(good)
    assert plain([r["embedding"] for r in rows if r["error"] is None]) == dense
    assert [r["embedding"] for r in rows if r["error"] is not None] == [None, None, None]
    assert plain([r["sparse_indices"] for r in rows if r["error"] is None]) == [
        sparse_to_indices_values(s)[0] for s in sparse
    ]


def test_embedder_raise_fails_the_job_with_the_models_error(cluster, a):
    ds = ray.data.from_items([{"text": t} for t in ["好", "坏JSON", "ok"]]).map_batches(
        Embedder,
        fn_constructor_kwargs={"url": a.grpc_url, "model": "embed_bad_sparse", "sparse_column": "sparse"},
        concurrency=1,
        **ACTOR,
    )
    with pytest.raises(ray.exceptions.RayTaskError) as raised:
        ds.take_all()
    assert "IncompatibleModelError: Model 'embed_bad_sparse' does not fit MetaLMEmbeddings" in str(raised.value)


# -- the reranker, the generator, the generic caller -------------------------------------------------


def test_reranker_scores_each_rows_documents_in_their_order(cluster, a):
    items = [
        {"query": "什么是向量检索", "documents": ["今天天气很好。", "向量检索把文本变成向量。", "重排序"]},
        {"query": "what is vector search", "documents": ["vector search finds similar vectors", "天气"]},
        {"query": "空文档", "documents": ["", "空"]},
    ]
    ds = ray.data.from_items(items).map_batches(
        Reranker, fn_constructor_kwargs={"url": a.grpc_url}, batch_size=2, concurrency=1, **ACTOR
    )
    rows = ds.take_all()

    reranker = MetaLMRerank(base_url=a.http_url)
    for item, row in zip(items, rows, strict=True):
        expected = {r.index: r.score for r in reranker.rerank(item["query"], item["documents"])}
        assert plain([row["scores"]])[0] == [expected[i] for i in range(len(item["documents"]))]
    assert rows[0]["scores"][1] > rows[0]["scores"][0]  # the passage that answers ranks above the weather


def test_generator_writes_text_and_usage_per_prompt_and_reports_a_bad_prompt(cluster, a):
    prompts: list[Any] = ["你好，介绍一下你自己", "What is Triton?", None, "向量检索是什么？"]
    ds = ray.data.from_items([{"prompt": p} for p in prompts]).map_batches(
        TextGenerator,
        fn_constructor_kwargs={"url": a.grpc_url, "llm_options": {"max_tokens": 24}, "on_error": "column"},
        batch_size=4,
        concurrency=1,
        **ACTOR,
    )
    rows = ds.take_all()

    assert column(rows, "error") == [
        None,
        None,
        "XclientValueError: prompt[2]: expected a str, got NoneType None",
        None,
    ]
    llm = ChatMetaLM(base_url=a.http_url, model="Qwen2-0.5B-Instruct", max_tokens=24)
    for prompt, row in zip(prompts, rows, strict=True):
        if row["error"] is not None:
            assert row["text"] is None and row["total_tokens"] is None
            continue
        message = llm.invoke(prompt)
        assert row["text"] == message.content
        usage = message.usage_metadata
        assert usage is not None
        assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (
            usage["input_tokens"],
            usage["output_tokens"],
            usage["total_tokens"],
        )


def test_model_caller_maps_columns_to_inputs_and_outputs_to_columns(cluster, a):
    words = ["hello", "你好，世界", "Ärger", "", "triton 服务"] * 7  # 35 rows: more than text's max_batch_size 8
    ds = ray.data.from_items([{"s": w} for w in words]).map_batches(
        ModelCaller,
        fn_constructor_kwargs={
            "url": a.grpc_url,
            "model": "text",
            "inputs": {"INPUT_TEXT": "s"},
            "outputs": {"UPPER": "upper", "LENGTH": "length"},
        },
        batch_size=20,
        concurrency=1,
        **ACTOR,
    )
    rows = ds.take_all()

    assert column(rows, "s") == words
    assert column(rows, "upper") == [w.upper() for w in words]
    assert column(rows, "length") == [len(w) for w in words]


def test_model_caller_error_column_carries_the_servers_message(cluster, a):
    ds = ray.data.from_items([{"x": [1.0, 2.0]}, {"x": [3.0, 4.0]}]).map_batches(
        ModelCaller,
        fn_constructor_kwargs={"url": a.http_url, "model": "failing", "inputs": ["x"], "on_error": "column"},
        concurrency=1,
        **ACTOR,
    )
    rows = ds.take_all()

    assert [row["y"] for row in rows] == [None, None]
    assert all("模型出错" in row["error"] and row["error"].startswith("InferenceServerError") for row in rows)


# -- the example and the README --------------------------------------------------------------------


def test_example_writes_a_parquet_file_of_vectors_from_jsonl(cluster, a, tmp_path):
    import pyarrow.parquet as pq

    texts = corpus(60)
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)))
    target = tmp_path / "vectors.parquet"
    command = [sys.executable, str(ROOT / "examples" / "ray_embed.py"), str(source), str(target)]
    command += ["--url", a.grpc_url, "--model", "embed_lexical", "--sparse", "--batch-size", "16", "--actors", "1"]
    command += ["--address", ray.get_runtime_context().gcs_address]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)

    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"rows": 60, "failed": 0, "output": str(target)}
    table = pq.read_table(target).to_pylist()
    dense, sparse = MetaLMEmbeddings(base_url=a.grpc_url, model="embed_lexical").embed_documents_sparse(texts)
    assert [r["id"] for r in table] == list(range(60)) and [r["text"] for r in table] == texts
    assert [r["embedding"] for r in table] == dense
    assert [(r["sparse_indices"], r["sparse_values"]) for r in table] == [sparse_to_indices_values(s) for s in sparse]


def readme_ray_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Ray Data", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def test_readme_ray_data_blocks_run_on_the_test_cluster(cluster, a, tmp_path, monkeypatch):
    """The README's Ray Data blocks are marked skip for tests/test_readme.py (they need Ray): they run here."""
    blocks = readme_ray_blocks()
    assert blocks
    monkeypatch.chdir(tmp_path)
    http, grpc = a.http_url.split("://", 1)[1], a.grpc_url.split("://", 1)[1]
    for code in blocks:
        exec(compile(code.replace("localhost:8000", http).replace("localhost:8001", grpc), "README.md", "exec"), {})
