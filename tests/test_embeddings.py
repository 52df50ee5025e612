"""MetaLMEmbeddings against the real local server (demo bge-m3-v = all-MiniLM-L6-v2, test model embed_fp16),
over HTTP and gRPC, plus LangChain's standard embeddings suites."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from Xclient import MetaLMEmbeddings
from Xclient.embeddings import sparse_to_indices_values
from Xclient.exceptions import AccessDeniedError, IncompatibleModelError
from Xclient.server import LocalTritonServer

from .conftest import MODELS

# Texts whose characters all-MiniLM-L6-v2 knows (it has about 240 CJK characters; others become [UNK]).
SIMILAR_ZH = ("我愛日本的山和水", "日本的山水很美", "公司的法律部门")
SIMILAR_EN = ("The cat sits on the mat.", "A cat is sitting on a mat.", "Stock markets fell sharply today.")
MIXED = ["你好", "", "hello world", "向量检索", "测试程序5", "Triton 推理服务", "a", "长" * 300, "ok", "世界"]


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def embeddings(url):
    model = MetaLMEmbeddings(model="bge-m3-v", base_url=url)
    yield model
    model.close()


@pytest.fixture
def fp16(url):
    model = MetaLMEmbeddings(model="embed_fp16", base_url=url, max_concurrency=3)
    yield model
    model.close()


# -- the issue's examples, unchanged ------------------------------------------------------------


def test_issue_examples_run_unchanged(url):
    xlembed = MetaLMEmbeddings(model="bge-m3-v", base_url=url)
    query = xlembed.embed_query("asdasda")
    documents = xlembed.embed_documents(["asdasda", "asdwrfa"])
    dense, sparse = xlembed.embed_documents_sparse(["asdasda", "asdwrfa"])
    query_dense, query_sparse = xlembed.embed_query_sparse("asdasda")
    assert len(query) == 384 and all(type(x) is float for x in query)
    assert len(documents) == 2 and documents[0] == pytest.approx(query, abs=1e-6)
    assert np.allclose(dense, documents, atol=1e-6) and query_dense == pytest.approx(query, abs=1e-6)
    assert len(sparse) == 2 and sparse[0] == query_sparse
    assert all(isinstance(k, str) and type(v) is float and v >= 0 for k, v in query_sparse.items())
    xlembed.close()


def test_issue_example_with_a_base_url_without_scheme_is_http(triton_server):
    xlembed = MetaLMEmbeddings(model="bge-m3-v", base_url=triton_server.http_url.removeprefix("http://"))
    assert len(xlembed.embed_query("你好")) == 384


# -- the real model ------------------------------------------------------------------------------


def test_forward_pass_matches_sentence_transformers(embeddings):
    # first dims of all-MiniLM-L6-v2 as sentence-transformers 6.2 / torch 2.13 computes them (normalized)
    reference = {
        "你好世界": [-0.008647, 0.154651, 0.032922, -0.03289, 0.040141, 0.027227],
        "hello world": [-0.034477, 0.031023, 0.006735, 0.026109, -0.039362, -0.160302],
        "the cat sits on the mat": [0.134891, -0.032063, -0.020335, 0.035901, -0.028333, 0.041502],
    }
    vectors = embeddings.embed_documents(list(reference))
    for vector, expected in zip(vectors, reference.values(), strict=True):
        assert vector[:6] == pytest.approx(expected, abs=2e-5)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("texts", [SIMILAR_ZH, SIMILAR_EN], ids=["chinese", "english"])
def test_similar_texts_are_closer_than_unrelated_ones(embeddings, texts):
    anchor, similar, unrelated = embeddings.embed_documents(list(texts))
    assert cosine(anchor, similar) > cosine(anchor, unrelated) + 0.3


def test_sparse_weights_share_the_tokens_of_overlapping_texts(embeddings):
    _, (cat, cats, stocks) = embeddings.embed_documents_sparse(list(SIMILAR_EN))

    def lexical_match(a, b):  # bge-m3's lexical matching score: the dot product over shared tokens
        return sum(weight * b[token] for token, weight in a.items() if token in b)

    assert lexical_match(cat, cats) > lexical_match(cat, stocks) + 1.0
    _, empty = embeddings.embed_query_sparse("")
    assert empty == {}
    indices, values = sparse_to_indices_values(cat)
    assert indices == sorted(int(k) for k in cat) and values == [cat[str(i)] for i in indices]


# -- batching, order, concurrency ----------------------------------------------------------------


def test_many_texts_are_split_to_max_batch_size_sent_concurrently_and_kept_in_order(fp16):
    texts = [f"{text}-{i}" for i in range(4) for text in MIXED]  # 40 texts, 10 batches of 4
    one_by_one = [fp16.embed_query(text) for text in texts]
    client, _ = fp16._sync_client()
    sizes, in_flight, peak = [], [0], [0]
    lock = threading.Lock()
    real = client.infer_batch

    def spy(*args, **kwargs):
        with lock:
            sizes.append(len(args[0]))
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    client.infer_batch = spy
    assert fp16.embed_documents(texts) == one_by_one
    assert sorted(sizes) == [4] * 10 and peak[0] == 3  # max_concurrency=3
    assert fp16._sync_client()[0] is client  # one client, reused


def test_a_smaller_user_max_batch_size_wins(url):
    model = MetaLMEmbeddings(model="embed_fp16", base_url=url, max_batch_size=3)
    contract = model.detect_contract(model._sync_client()[0].model_config)
    assert contract.batch_size == 3
    assert MetaLMEmbeddings(model="embed_fp16", max_batch_size=100).detect_contract(contract.config).batch_size == 4
    assert len(model.embed_documents(MIXED)) == len(MIXED)


async def test_async_matches_sync_and_bounds_concurrency(fp16):
    texts = [f"{text}#{i}" for i in range(3) for text in MIXED]
    expected = fp16.embed_documents(texts)
    client, _ = fp16._async_client()
    in_flight, peak = [0], [0]
    real = client.infer_batch

    async def spy(*args, **kwargs):
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        await asyncio.sleep(0.02)
        try:
            return await real(*args, **kwargs)
        finally:
            in_flight[0] -= 1

    client.infer_batch = spy
    assert await fp16.aembed_documents(texts) == expected
    assert peak[0] == 3
    assert await fp16.aembed_query(texts[5]) == expected[5]
    await fp16.aclose()


async def test_async_sparse_methods(embeddings):
    dense, sparse = await embeddings.aembed_documents_sparse(["山上的花", "hello"])
    query_dense, query_sparse = await embeddings.aembed_query_sparse("hello")
    assert query_dense == pytest.approx(dense[1], abs=1e-6) and query_sparse == sparse[1]
    await embeddings.aclose()


def test_async_methods_work_from_one_event_loop_to_the_next(fp16):
    first = asyncio.run(fp16.aembed_query("你好"))
    assert asyncio.run(fp16.aembed_query("你好")) == first == fp16.embed_query("你好")


def test_a_copy_makes_its_own_clients(embeddings, url):
    first = embeddings.embed_query("你好")
    other = embeddings.model_copy(update={"model": "embed_fp16"})
    assert len(other.embed_query("你好")) == 16 and len(copy.deepcopy(embeddings).embed_query("你好")) == 384
    other.close()
    assert embeddings.embed_query("你好") == first  # closing the copy left the original's client alone


def test_progress_bar_is_opt_in(url, capsys):
    MetaLMEmbeddings(model="embed_fp16", base_url=url).embed_documents(MIXED)
    assert "Embedding" not in capsys.readouterr().err
    MetaLMEmbeddings(model="embed_fp16", base_url=url, show_progress=True).embed_documents(MIXED)
    assert "Embedding" in capsys.readouterr().err


# -- other deployments, FP16, no sparse output -----------------------------------------------------


def test_fp16_model_with_other_names_gives_python_floats(fp16):
    vector = fp16.embed_query("测试")
    assert len(vector) == 16 and all(type(x) is float for x in vector)
    contract = fp16.detect_contract(fp16._sync_client()[0].model_config)
    assert (contract.text.name, contract.dense.name, contract.sparse) == ("TEXT", "sentence_embedding", None)


def test_sparse_methods_on_a_model_without_sparse_output_say_so(fp16):
    with pytest.raises(IncompatibleModelError, match="no sparse output.*'sentence_embedding' FP16 \\[16\\]"):
        fp16.embed_documents_sparse(["a"])


def test_overrides_name_the_tensors_and_wrong_ones_are_clear_errors(url):
    named = MetaLMEmbeddings(model="embed_fp16", base_url=url, input_name="TEXT", dense_output="sentence_embedding")
    assert len(named.embed_query("x")) == 16
    wrong = MetaLMEmbeddings(model="embed_fp16", base_url=url, input_name="input_text")
    with pytest.raises(
        IncompatibleModelError, match="no input 'input_text' \\(input_name\\); its inputs: 'TEXT' BYTES"
    ):
        wrong.embed_query("x")


# -- input checks (no request is sent: the URL has no server) ---------------------------------------


def test_empty_list_gives_empty_list_without_a_request(dead_url):
    model = MetaLMEmbeddings(base_url=dead_url)
    assert model.embed_documents([]) == []
    assert model.embed_documents_sparse([]) == ([], [])
    assert asyncio.run(model.aembed_documents([])) == []


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["ok", 3], r"texts\[1\]: expected a str, got int 3"),
        (["ok", "好", None], r"texts\[2\]: expected a str, got NoneType"),
        ("一段文字", "texts: expected a list of str, got str"),
        (b"bytes", "texts: expected a list of str, got bytes"),
    ],
)
def test_bad_texts_are_value_errors_naming_the_offender(dead_url, texts, message):
    model = MetaLMEmbeddings(base_url=dead_url)
    with pytest.raises(ValueError, match=message):
        model.embed_documents(texts)
    with pytest.raises(ValueError, match=message):
        asyncio.run(model.aembed_documents(texts))
    with pytest.raises(ValueError, match="text: expected a str, got list"):
        model.embed_query(["a"])


def test_api_key_is_a_secret_never_shown():
    model = MetaLMEmbeddings(api_key="sk-never-shown-1234", headers={"x-team": "rag"})
    for text in (repr(model), str(model), model.model_dump_json()):
        assert "sk-never-shown-1234" not in text
    assert model.api_key.get_secret_value() == "sk-never-shown-1234"


def test_api_key_from_the_environment_reaches_a_server_that_enforces_it(tmp_path, monkeypatch):
    key = "sk-embeddings-0123456789"
    (tmp_path / "embed_fp16").symlink_to(MODELS / "embed_fp16", target_is_directory=True)
    restriction = f"inference,model-config:authorization=Bearer {key}"
    args = [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]
    with LocalTritonServer(model_repository=tmp_path, extra_args=args) as server:
        for url in (server.http_url, server.grpc_url):
            with pytest.raises(AccessDeniedError):
                MetaLMEmbeddings(model="embed_fp16", base_url=url).embed_query("钥匙")
            monkeypatch.setenv("XCLIENT_API_KEY", key)
            monkeypatch.setenv("XCLIENT_URL", url)
            assert len(MetaLMEmbeddings(model="embed_fp16").embed_query("钥匙")) == 16
            assert len(asyncio.run(MetaLMEmbeddings(model="embed_fp16").aembed_query("钥匙"))) == 16
            monkeypatch.delenv("XCLIENT_API_KEY")


# -- LangChain's standard suites -------------------------------------------------------------------


@pytest.mark.disable_socket
class TestMetaLMEmbeddingsStandardUnit(EmbeddingsUnitTests):
    """No network: the constructor connects to nothing."""

    @property
    def embeddings_class(self) -> type[MetaLMEmbeddings]:
        return MetaLMEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": "bge-m3-v", "base_url": "grpc://triton.invalid:8001"}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return (
            {"XCLIENT_URL": "grpc://triton.invalid:8001", "XCLIENT_API_KEY": "sk-from-env"},
            {"model": "bge-m3-v"},
            {"base_url": "grpc://triton.invalid:8001", "api_key": "sk-from-env"},
        )


class TestMetaLMEmbeddingsStandardIntegration(EmbeddingsIntegrationTests):
    """Against the local server's bge-m3-v, over HTTP and gRPC."""

    @property
    def embeddings_class(self) -> type[MetaLMEmbeddings]:
        return MetaLMEmbeddings

    @pytest.fixture
    async def model(self, url: str) -> AsyncIterator[MetaLMEmbeddings]:
        model = MetaLMEmbeddings(model="bge-m3-v", base_url=url)
        yield model
        await model.aclose()
