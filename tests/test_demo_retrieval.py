"""The demo retrieval models make sense in Chinese: the sparse vector of text MiniLM cannot read is not
empty, and the passage that answers a Chinese question ranks first (both protocols, the real server)."""

from __future__ import annotations

import pytest

from Xclient import MetaLMEmbeddings, MetaLMRerank
from Xclient.server._minilm import CHAR_KEY_BASE

QUESTION = "什么是向量检索"
ANSWER = "向量检索把文本表示成向量，再按相似度找出最相关的文档。"
PASSAGES = ["今天天气很好。", ANSWER, "我喜欢吃苹果。"]


@pytest.fixture
def embeddings(url):
    client = MetaLMEmbeddings(model="bge-m3-v", base_url=url)
    yield client
    client.close()


@pytest.fixture
def reranker(url):
    client = MetaLMRerank(model="bge-reranker-v2-m3", base_url=url)
    yield client
    client.close()


def test_sparse_vector_of_unknown_chinese_characters_is_not_empty(embeddings) -> None:
    _, (hello, greeting, english) = embeddings.embed_documents_sparse(["你好", "你好，世界", "hello"])
    assert set(hello) == {str(CHAR_KEY_BASE + ord("你")), str(CHAR_KEY_BASE + ord("好"))}
    assert set(hello) <= set(greeting) and all(w > 0 for w in hello.values())  # shared characters share keys
    assert english and all(int(key) < CHAR_KEY_BASE for key in english)  # tokens MiniLM knows keep their ids


def test_chinese_lexical_match_prefers_the_text_with_the_query_characters(embeddings) -> None:
    _, (query, answer, weather) = embeddings.embed_documents_sparse([QUESTION, ANSWER, PASSAGES[0]])

    def lexical_match(a: dict[str, float], b: dict[str, float]) -> float:
        return sum(weight * b[key] for key, weight in a.items() if key in b)

    assert lexical_match(query, answer) > lexical_match(query, weather)


def test_rerank_puts_the_passage_that_answers_a_chinese_question_first(reranker) -> None:
    ranked = reranker.rerank(QUESTION, PASSAGES)
    assert ranked[0].index == 1 and ranked[0].score > ranked[1].score
    assert {r.index for r in ranked[1:]} == {0, 2}


def test_rerank_of_an_english_query_is_the_cosine_alone(reranker) -> None:
    passages = ["Paris is the capital of France", "Bananas are yellow", "巴黎是法国的首都"]
    ranked = reranker.rerank("capital of France", passages)
    assert ranked[0].index == 0  # English is what MiniLM reads; no character rule applies


def test_a_passage_score_does_not_depend_on_the_other_passages(reranker) -> None:
    together = {r.index: r.score for r in reranker.rerank(QUESTION, PASSAGES)}
    alone = reranker.rerank(QUESTION, [PASSAGES[0]])  # no passage shares a character with the query
    assert alone[0].score == pytest.approx(together[0], abs=1e-5)
