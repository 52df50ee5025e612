"""The text layers at the edges of text: empty strings, very long strings, items that are not str, and
server output that is not valid UTF-8 (or not JSON), for ChatMetaLM/MetaLM, MetaLMEmbeddings and
MetaLMRerank, over HTTP and gRPC.

The rules (the classes' docstrings say them too): an empty string is a text like any other; a long text
is sent whole; anything that is not a str (or a str UTF-8 cannot encode) is an XclientValueError naming
the argument, raised before anything is sent (``dead_url``: nothing listens there, so a request would
fail with ServerUnavailableError instead); LLM output bytes that are not UTF-8 become U+FFFD; a sparse
or score output the contract does not allow is an IncompatibleModelError naming the model and output.

Test models: ``vllm_bad_utf8`` (the vLLM contract, answering bytes that are not UTF-8),
``embed_bad_sparse`` (dense ``[len(text), 1]``; a sparse output broken for some texts) and
``rerank_bad`` (a score missing, or NaN).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.messages import HumanMessage, SystemMessage

from Xclient import MetaLMEmbeddings, MetaLMRerank
from Xclient import exceptions as errors
from Xclient.llms import ChatMetaLM, MetaLM
from Xclient.llms._templates import BUILTIN_TEMPLATES
from Xclient.server._demo_llm import answer, tokenize

QWEN = "Qwen2-0.5B-Instruct"
QUESTION = "介绍一下你自己"
#: 200,000 characters, mostly Chinese; 100,000 for the embeddings and rerankers.
LONG_PROMPT = ("长文本测试：向量检索与大语言模型，Triton 推理服务 and some English. " * 5000)[:200_000]
LONG_TEXT = LONG_PROMPT[:100_000]
#: Not valid UTF-8, as vllm_bad_utf8 sends it: "你", b"\xff\xfe", "好" split in two, "。", half of "世".
BAD_UTF8_DELTAS = ["你", "\ufffd\ufffd", "好。", "\ufffd"]
#: Not text: (value, how an error names its type and value).
NOT_TEXT = [
    (5, "int 5"),
    (None, "NoneType None"),
    ("你好".encode(), r"bytes b'\\xe4\\xbd\\xa0\\xe5\\xa5\\xbd'"),
    (["你好"], r"list \['你好'\]"),
]
NOT_UTF8 = "坏\udcff"  # a lone surrogate: what surrogateescape makes of an undecodable byte


def expected_chat(question: str, model: str = QWEN) -> str:
    """What the vLLM stand-in answers to ``question`` rendered with Qwen's template."""
    return answer(BUILTIN_TEMPLATES["qwen"].render([("user", question)]), model)


def refused(value: Any, name: str, given: str) -> str:
    """The message pattern of an XclientValueError for argument ``name``."""
    if value == NOT_UTF8:
        return rf"^{name}: expected a str that UTF-8 can encode \(no lone surrogates\), got str '坏\\udcff'$"
    return rf"^{name}: expected a str, got {given}$"


def not_text_ids(cases: list[Any]) -> list[str]:
    return [type(case[0]).__name__ for case in cases]


# -- ChatMetaLM and MetaLM -----------------------------------------------------------------------------


async def test_llm_empty_prompt_and_empty_message_content_are_sent_and_answered(url):
    chat = ChatMetaLM(server_url=url, model=QWEN)
    empty_turn = expected_chat("")  # the template still renders the (empty) user turn
    assert chat.invoke("").content == empty_turn
    assert chat.invoke([HumanMessage(content="")]).content == empty_turn
    assert "".join(c.content for c in chat.stream([HumanMessage(content="")])) == empty_turn
    assert (await chat.ainvoke("")).content == empty_turn
    with_system = BUILTIN_TEMPLATES["qwen"].render([("system", ""), ("user", "你好")])
    assert chat.invoke([SystemMessage(content=""), HumanMessage(content="你好")]).content == answer(with_system, QWEN)
    llm = MetaLM(server_url=url, model=QWEN)
    assert llm.invoke("") == answer("", QWEN) == "".join(llm.stream(""))  # sent as it is: the model decides
    assert await llm.ainvoke("") == answer("", QWEN)


async def test_llm_a_very_long_chinese_prompt_is_sent_whole(url):
    chat = ChatMetaLM(server_url=url, model=QWEN)
    message = chat.invoke(LONG_PROMPT)
    assert message.content == expected_chat(LONG_PROMPT)
    prompt = BUILTIN_TEMPLATES["qwen"].render([("user", LONG_PROMPT)])
    assert message.usage_metadata["input_tokens"] == len(tokenize(prompt))  # the server saw every token
    assert "".join([c.content async for c in chat.astream(LONG_PROMPT)]) == message.content
    llm = MetaLM(server_url=url, model=QWEN, max_tokens=8)
    assert (
        llm.invoke(LONG_PROMPT) == "".join(llm.stream(LONG_PROMPT)) == "".join(tokenize(answer(LONG_PROMPT, QWEN))[:8])
    )
    # the r23.10 backend echoes the whole prompt in every streamed response: stripped every time
    legacy = MetaLM(server_url=url, model="vllm_legacy", max_tokens=8)
    assert "".join(legacy.stream(LONG_PROMPT)) == "".join(tokenize(answer(LONG_PROMPT, "vllm_legacy"))[:8])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (5, r"^messages\[1\]\.content: expected a str or a list of text blocks, got int 5$"),
        (None, r"^messages\[1\]\.content: expected a str or a list of text blocks, got NoneType None$"),
        ("你".encode(), r"^messages\[1\]\.content: expected a str or a list of text blocks, got bytes b'\\xe4"),
        (NOT_UTF8, refused(NOT_UTF8, r"messages\[1\]\.content", "")),
        (["你好", 7], r"^messages\[1\]: only text content can be sent to a text LLM, got a 'int' block$"),
        ([{"type": "text", "text": None}], r"^messages\[1\]\.content\[0\]\['text'\]: expected a str, got NoneType"),
        ([{"type": "text"}], r"^messages\[1\]\.content\[0\]\['text'\]: expected a str, got NoneType None$"),
        ([{"type": "image_url", "image_url": {"url": "x"}}], r"only text content .* got a 'image_url' block$"),
    ],
    ids=["int", "None", "bytes", "lone-surrogate", "int-block", "text-None", "text-missing", "image"],
)
async def test_llm_message_content_that_is_not_text_is_refused_before_anything_is_sent(dead_url, content, message):
    chat = ChatMetaLM(server_url=dead_url, model=QWEN)
    # built without validation, as other code (or an assignment) can make one
    messages = [SystemMessage(content="你是一个助手"), HumanMessage.model_construct(content=content)]
    with pytest.raises(errors.XclientValueError, match=message):
        chat.invoke(messages)
    with pytest.raises(errors.XclientValueError, match=message):
        list(chat.stream(messages))
    with pytest.raises(errors.XclientValueError, match=message):
        await chat.ainvoke(messages)


@pytest.mark.parametrize(
    ("value", "given"), [*NOT_TEXT[:3], (NOT_UTF8, "")], ids=not_text_ids(NOT_TEXT[:3]) + ["lone-surrogate"]
)
async def test_llm_a_prompt_that_is_not_text_is_refused_before_anything_is_sent(dead_url, value, given):
    chat, llm = ChatMetaLM(server_url=dead_url, model=QWEN), MetaLM(server_url=dead_url, model=QWEN)
    if value != NOT_UTF8:  # invoke's input: a str, messages or a PromptValue (bytes are not a list of messages)
        pattern = rf"^input: expected a str, a list of messages or a PromptValue, got {given}$"
        for model in (chat, llm):
            with pytest.raises(errors.XclientValueError, match=pattern):
                model.invoke(value)
            with pytest.raises(errors.XclientValueError, match=pattern):
                await model.ainvoke(value)
    prompt = refused(value, "prompt", given)
    with pytest.raises(errors.XclientValueError, match=prompt):
        llm.generate(["你好", value])  # BaseLLM.generate hands the items over unchecked
    with pytest.raises(errors.XclientValueError, match=prompt):
        await llm.agenerate([value])
    with pytest.raises(errors.XclientValueError, match=refused(value, r"stop\[1\]", given)):
        chat.invoke("你好", stop=["。", value])


def test_llm_a_stop_string_per_call_is_one_stop_sequence_not_its_characters(url):
    chat = ChatMetaLM(server_url=url, model=QWEN)
    assert chat.invoke(QUESTION, stop="好的").content == expected_chat(QUESTION)  # not cut at "好"
    assert chat.invoke("Hello", stop="stand-in").content == expected_chat("Hello").split("stand-in")[0]
    assert "".join(MetaLM(server_url=url, model=QWEN).stream("你好", stop="好的")) == answer("你好", QWEN)


async def test_llm_output_that_is_not_utf8_becomes_replacement_characters_alike_in_invoke_and_stream(url):
    full = "".join(BAD_UTF8_DELTAS)
    chat = ChatMetaLM(server_url=url, model="vllm_bad_utf8")
    assert chat.invoke("你好").content == full
    chunks = list(chat.stream("你好"))
    assert [c.content for c in chunks] == BAD_UTF8_DELTAS  # "好", split across two responses, is whole
    assert chunks[-1].chunk_position == "last"  # the dangling half character comes at the end
    assert (await chat.ainvoke("你好")).content == full
    assert [c.content async for c in chat.astream("你好")] == BAD_UTF8_DELTAS
    llm = MetaLM(server_url=url, model="vllm_bad_utf8")
    assert llm.invoke("你好") == full and list(llm.stream("你好")) == BAD_UTF8_DELTAS


# -- MetaLMEmbeddings ----------------------------------------------------------------------------------


async def test_embeddings_an_empty_list_gives_an_empty_list_without_a_request(dead_url):
    embeddings = MetaLMEmbeddings(base_url=dead_url)
    assert embeddings.embed_documents([]) == [] and await embeddings.aembed_documents([]) == []
    assert embeddings.embed_documents_sparse([]) == ([], []) and await embeddings.aembed_documents_sparse([]) == (
        [],
        [],
    )


async def test_embeddings_an_empty_string_is_embedded_like_any_other_text(url):
    embeddings = MetaLMEmbeddings(model="bge-m3-v", base_url=url)
    empty = embeddings.embed_query("")
    assert len(empty) == 384 and all(type(x) is float for x in empty)
    assert np.linalg.norm(empty) == pytest.approx(1.0, abs=1e-5)
    assert embeddings.embed_documents([""]) == [empty] and await embeddings.aembed_query("") == empty
    vectors = embeddings.embed_documents(["", "你好", ""])
    assert np.allclose(vectors, [empty, embeddings.embed_query("你好"), empty], atol=1e-6)
    dense, sparse = embeddings.embed_query_sparse("")
    assert dense == pytest.approx(empty, abs=1e-6) and sparse == {}  # no token: an empty sparse vector
    counted = MetaLMEmbeddings(model="embed_bad_sparse", base_url=url)
    assert counted.embed_documents_sparse(["", "你好"]) == ([[0.0, 1.0], [2.0, 1.0]], [{"1": 0.5}, {"1": 0.5}])


async def test_embeddings_a_very_long_chinese_text_is_sent_whole(url):
    counted = MetaLMEmbeddings(model="embed_bad_sparse", base_url=url)
    assert counted.embed_query(LONG_TEXT) == [100_000.0, 1.0]  # the model saw every character
    assert await counted.aembed_documents(["短", LONG_TEXT]) == [[1.0, 1.0], [100_000.0, 1.0]]
    embeddings = MetaLMEmbeddings(model="bge-m3-v", base_url=url)  # truncates to its window, as bge-m3 does
    dense, sparse = embeddings.embed_query_sparse(LONG_TEXT)
    assert len(dense) == 384 and np.linalg.norm(dense) == pytest.approx(1.0, abs=1e-5)
    assert sparse and all(type(weight) is float for weight in sparse.values())


@pytest.mark.parametrize(
    ("value", "given"), [*NOT_TEXT, (NOT_UTF8, "")], ids=not_text_ids(NOT_TEXT) + ["lone-surrogate"]
)
async def test_embeddings_items_that_are_not_text_are_refused_before_anything_is_sent(dead_url, value, given):
    embeddings = MetaLMEmbeddings(base_url=dead_url)
    item = refused(value, r"texts\[2\]", given)
    for method in (embeddings.embed_documents, embeddings.embed_documents_sparse):
        with pytest.raises(errors.XclientValueError, match=item):
            method(["你好", "", value])
    for amethod in (embeddings.aembed_documents, embeddings.aembed_documents_sparse):
        with pytest.raises(errors.XclientValueError, match=item):
            await amethod(["你好", "", value])
    for query in (embeddings.embed_query, embeddings.embed_query_sparse):
        with pytest.raises(errors.XclientValueError, match=refused(value, "text", given)):
            query(value)
    with pytest.raises(errors.XclientValueError, match=refused(value, "text", given)):
        await embeddings.aembed_query(value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("坏字节", r"gave b'\\xff\\xfe' \('utf-8' codec can't decode byte 0xff"),
        ("坏JSON", r"""gave b'\{"1": 0\.5' \(Expecting ',' delimiter"""),
        ("列表", r"gave b'\[1, 2\]' \(a JSON list\)"),
        ("坏权重", r"""gave b'\{"1": "\\xe9\\x87\\x8d"\}' \(could not convert string to float: '重'\)"""),
    ],
    ids=["not-utf8", "cut-json", "json-list", "bad-weight"],
)
async def test_embeddings_a_sparse_output_that_is_not_utf8_json_is_a_clear_error(url, text, problem):
    embeddings = MetaLMEmbeddings(model="embed_bad_sparse", base_url=url)  # 4 texts per request
    texts = ["好"] * 5 + [text]  # the broken one in the second request
    pattern = (
        r"^Model 'embed_bad_sparse' does not fit MetaLMEmbeddings: output 'sparse' BYTES \[1\] should hold "
        rf"a UTF-8 JSON object token -> weight per text; for text 5 it {problem}"
    )
    with pytest.raises(errors.IncompatibleModelError, match=pattern) as raised:
        embeddings.embed_documents_sparse(texts)
    assert raised.value.model == "embed_bad_sparse"
    with pytest.raises(errors.IncompatibleModelError, match=r"for text 0 it"):
        await embeddings.aembed_query_sparse(text)
    assert embeddings.embed_documents(texts)[5] == [float(len(text)), 1.0]  # the dense vectors are fine


# -- MetaLMRerank --------------------------------------------------------------------------------------

PASSAGES = ["向量检索", "", "检索增强生成", "天气很好"]


def pairs_score(query: str, passage: str) -> float:
    """rerank_pairs's score (tests/models/rerank_pairs), as float32 gives it back."""
    return float(np.float32(len(set(query) & set(passage)) - len(passage) / 1000))


async def test_rerank_an_empty_query_and_empty_passages_are_scored_like_any_other_text(url):
    pairs = MetaLMRerank(model="rerank_pairs", base_url=url)
    scores = {r.index: r.score for r in pairs.rerank("", PASSAGES)}
    assert scores == {i: pairs_score("", p) for i, p in enumerate(PASSAGES)} and scores[1] == 0.0
    docs = [Document(page_content=p, metadata={"n": i}) for i, p in enumerate(PASSAGES)]
    result = await pairs.acompress_documents(docs, "向量检索")
    assert [d.metadata["n"] for d in result] == [0, 2, 1, 3]  # the empty one is ranked, not dropped
    assert result[2].page_content == "" and result[2].metadata["relevance_score"] == 0.0
    real = MetaLMRerank(model="bge-reranker-v2-m3", base_url=url)
    for query in ("", "向量检索"):
        ranking = real.rerank(query, PASSAGES)
        assert sorted(r.index for r in ranking) == [0, 1, 2, 3] and all(math.isfinite(r.score) for r in ranking)


async def test_rerank_no_documents_give_an_empty_list_without_a_request(dead_url):
    reranker = MetaLMRerank(base_url=dead_url)
    assert reranker.compress_documents([], "向量检索") == [] and reranker.rerank("", []) == []
    assert await reranker.acompress_documents([], "") == [] and await reranker.arerank("向量检索", ()) == []


def test_rerank_a_very_long_chinese_query_or_passage_is_sent_whole(url):
    pairs = MetaLMRerank(model="rerank_pairs", base_url=url)
    ranking = pairs.rerank("向量检索", ["天气", LONG_TEXT])
    assert {r.index: r.score for r in ranking} == {
        0: pairs_score("向量检索", "天气"),
        1: pairs_score("向量检索", LONG_TEXT),
    }
    assert pairs_score("向量检索", LONG_TEXT) == pytest.approx(len(set("向量检索")) - 100.0)  # every character counted
    assert pairs.rerank(LONG_TEXT, ["向量检索", "无关"])[0].index == 0
    real = MetaLMRerank(model="bge-reranker-v2-m3", base_url=url)  # truncates to its window
    assert math.isfinite(real.rerank(LONG_TEXT, ["向量检索"])[0].score)


@pytest.mark.parametrize(
    ("value", "given"), [*NOT_TEXT, (NOT_UTF8, "")], ids=not_text_ids(NOT_TEXT) + ["lone-surrogate"]
)
async def test_rerank_a_query_or_text_that_is_not_text_is_refused_before_anything_is_sent(dead_url, value, given):
    reranker = MetaLMRerank(base_url=dead_url)
    docs = [Document(page_content=p) for p in PASSAGES]
    with pytest.raises(errors.XclientValueError, match=refused(value, "query", given)):
        reranker.compress_documents(docs, value)
    with pytest.raises(errors.XclientValueError, match=refused(value, "query", given)):
        await reranker.arerank(value, PASSAGES)
    with pytest.raises(errors.XclientValueError, match=refused(value, r"texts\[1\]", given)):
        reranker.rerank("向量检索", ["天气", value])
    content = refused(value, r"documents\[1\]\.page_content", given)
    with pytest.raises(errors.XclientValueError, match=content):  # a Document built without validation
        await reranker.acompress_documents([docs[0], Document.model_construct(page_content=value)], "向量检索")


def test_rerank_documents_that_are_not_documents_are_refused_before_anything_is_sent(dead_url):
    reranker = MetaLMRerank(base_url=dead_url)
    with pytest.raises(errors.XclientValueError, match=r"^documents\[1\]: expected a Document, got str '天气'$"):
        reranker.compress_documents([Document(page_content="向量"), "天气"], "向量检索")
    with pytest.raises(errors.XclientValueError, match="^documents: expected a list of Document, got NoneType None$"):
        reranker.compress_documents(None, "向量检索")
    with pytest.raises(errors.XclientValueError, match="^documents: expected a list of Document, got str '向量'$"):
        reranker.compress_documents("向量", "向量检索")


async def test_rerank_a_missing_or_nan_score_from_the_server_is_a_clear_error(url):
    reranker = MetaLMRerank(model="rerank_bad", base_url=url)
    assert [(r.index, r.score) for r in reranker.rerank("查询", ["一", "二二"])] == [(1, 2.0), (0, 1.0)]
    with pytest.raises(
        errors.IncompatibleModelError,
        match=r"^Model 'rerank_bad' does not fit MetaLMRerank: output 'score' FP32 \[-1\] gave NaN for passage 1; "
        "expected a number per passage$",
    ) as raised:
        reranker.rerank("查询", ["一", "非数", "二二"])
    assert raised.value.model == "rerank_bad"
    with pytest.raises(errors.IncompatibleModelError, match="gave NaN for passage 0"):
        await reranker.acompress_documents([Document(page_content="非数")], "查询")
    with pytest.raises(
        errors.IncompatibleModelError,
        match=r"output 'score' FP32 \[-1\] came back as shape \[1\]: expected one score per passage \(2\)$",
    ):
        reranker.rerank("少一个", ["一", "二二"])
