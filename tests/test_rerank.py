"""MetaLMRerank against the real local server: the demo bge-reranker-v2-m3 (query/passages form,
all-MiniLM-L6-v2 similarity) and the test model rerank_pairs (pairs form), over HTTP and gRPC."""

from __future__ import annotations

import asyncio
import copy
import math

import pytest
from langchain_core.documents import Document

from Xclient import MetaLMRerank
from Xclient.exceptions import IncompatibleModelError
from Xclient.rerank import RerankResult

QUERY = "测试程序5"
PASSAGES = [
    "测试程序1的说明",
    "测试程序5",
    "程序5",
    "完全无关的内容",
    "测试",
    "测试程序5的完整测试报告",
    "5",
    "程序测试5",
    "天气",
    "",
    "test program 5",
]


def pairs_score(query: str, passage: str) -> float:
    """rerank_pairs's score (tests/models/rerank_pairs/1/model.py), as float32 gives it back."""
    import numpy as np

    return float(np.float32(len(set(query) & set(passage)) - len(passage) / 1000))


def documents() -> list[Document]:
    return [Document(page_content=text, metadata={"n": i, "source": "单元测试"}) for i, text in enumerate(PASSAGES)]


@pytest.fixture
def pairs(url):
    reranker = MetaLMRerank(model="rerank_pairs", base_url=url)
    yield reranker
    reranker.close()


def test_issue_example_runs_unchanged(url):
    docs = documents()
    before = copy.deepcopy(docs)
    rerank = MetaLMRerank(model="bge-reranker-v2-m3", base_url=url)
    result = rerank.compress_documents(documents=docs, query="测试程序5")
    assert len(result) == 5  # top_n defaults to 5
    scores = [d.metadata["relevance_score"] for d in result]
    assert all(type(s) is float for s in scores) and scores == sorted(scores, reverse=True)
    assert result[0].page_content == "测试程序5"  # the passage equal to the query: cosine 1
    assert all(d.metadata["source"] == "单元测试" and PASSAGES[d.metadata["n"]] == d.page_content for d in result)
    assert docs == before and all(r is not d for r in result for d in docs)  # copies; inputs untouched
    rerank.close()


def test_real_model_ranks_the_relevant_english_passage_first(url):
    reranker = MetaLMRerank(base_url=url)
    texts = ["Stock markets fell sharply today.", "A cat is sitting on a mat.", "我愛日本的山和水"]
    ranking = reranker.rerank("Where is the cat?", texts)
    assert [r.index for r in ranking][0] == 1 and len(ranking) == 3


def test_pairs_form_scores_match_the_model_and_merge_across_batches(pairs):
    # rerank_pairs takes 4 pairs per request: 11 passages are 3 requests, ranked together
    ranking = pairs.rerank(QUERY, PASSAGES)
    expected = sorted(range(len(PASSAGES)), key=lambda i: -pairs_score(QUERY, PASSAGES[i]))
    assert [r.index for r in ranking] == expected
    assert [r.score for r in ranking] == [pairs_score(QUERY, PASSAGES[i]) for i in expected]
    assert pairs.detect_contract(pairs._sync_client()[0].model_config).batch_size == 4


def test_query_passages_form_splits_passages_and_merges_globally(url):
    whole = MetaLMRerank(base_url=url).rerank(QUERY, PASSAGES)
    split = MetaLMRerank(base_url=url, max_batch_size=2, max_concurrency=3)
    client, _ = split._sync_client()
    sizes: list[int] = []
    real = client.infer_sample

    def spy(*args, **kwargs):
        sizes.append(len(args[1]))
        return real(*args, **kwargs)

    client.infer_sample = spy
    ranking = split.rerank(QUERY, PASSAGES)
    assert sorted(sizes) == [1] + [2] * 5
    assert [r.index for r in ranking] == [r.index for r in whole]
    assert [r.score for r in ranking] == pytest.approx([r.score for r in whole], abs=1e-5)


@pytest.mark.parametrize("top_n", [0, -1, 1, 3, 11, 50])
def test_top_n(pairs, top_n):
    pairs.top_n = top_n
    result = pairs.compress_documents(documents(), QUERY)
    assert len(result) == max(0, min(top_n, len(PASSAGES)))
    if result:
        assert result[0].page_content == "测试程序5"
    assert len(pairs.rerank(QUERY, PASSAGES, top_n=top_n)) == max(0, min(top_n, len(PASSAGES)))


def test_rerank_without_top_n_returns_every_text_once(pairs):
    ranking = pairs.rerank(QUERY, PASSAGES)
    assert sorted(r.index for r in ranking) == list(range(len(PASSAGES)))
    assert all(isinstance(r, RerankResult) and type(r.score) is float for r in ranking)


def test_normalize_maps_logits_through_a_sigmoid(url):
    raw = MetaLMRerank(base_url=url).rerank(QUERY, PASSAGES)
    normalized = MetaLMRerank(base_url=url, normalize=True).rerank(QUERY, PASSAGES)
    assert [r.index for r in normalized] == [r.index for r in raw]
    for n, r in zip(normalized, raw, strict=True):
        assert 0.0 <= n.score <= 1.0 and n.score == pytest.approx(1 / (1 + math.exp(-r.score)), abs=1e-6)


async def test_async_matches_sync(url):
    reranker = MetaLMRerank(base_url=url, max_batch_size=3, top_n=4)
    docs = documents()
    expected = reranker.compress_documents(docs, QUERY)
    result = await reranker.acompress_documents(docs, QUERY)
    assert [d.page_content for d in result] == [d.page_content for d in expected]
    assert [d.metadata["relevance_score"] for d in result] == pytest.approx(
        [d.metadata["relevance_score"] for d in expected], abs=1e-5
    )
    assert [r.index for r in await reranker.arerank(QUERY, PASSAGES, top_n=2)] == [d.metadata["n"] for d in result[:2]]
    assert await reranker.acompress_documents([], QUERY) == []
    await reranker.aclose()


async def test_async_pairs_form_merges_across_concurrent_batches(pairs):
    assert await pairs.arerank(QUERY, PASSAGES) == pairs.rerank(QUERY, PASSAGES)
    await pairs.aclose()


def test_empty_documents_and_top_n_below_one_send_nothing(dead_url):
    reranker = MetaLMRerank(base_url=dead_url)
    assert reranker.compress_documents([], QUERY) == []
    assert asyncio.run(reranker.acompress_documents([], QUERY)) == []
    assert reranker.rerank(QUERY, []) == [] and reranker.rerank(QUERY, PASSAGES, top_n=0) == []
    reranker.top_n = 0
    assert reranker.compress_documents(documents(), QUERY) == []


def test_bad_arguments_are_value_errors_naming_the_offender(dead_url):
    reranker = MetaLMRerank(base_url=dead_url)
    with pytest.raises(ValueError, match=r"texts\[1\]: expected a str, got int"):
        reranker.rerank(QUERY, ["a", 1])
    with pytest.raises(ValueError, match="query: expected a str, got NoneType"):
        reranker.compress_documents(documents(), None)
    with pytest.raises(ValueError, match="texts: expected a list of str, got str"):
        reranker.rerank(QUERY, "一段文字")


def test_a_model_of_another_kind_is_refused_with_what_it_has(url):
    with pytest.raises(IncompatibleModelError, match="does not fit MetaLMRerank.*'INPUT_TEXT' BYTES \\[1\\]"):
        MetaLMRerank(model="text", base_url=url).rerank(QUERY, PASSAGES)
