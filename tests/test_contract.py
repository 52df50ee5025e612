"""Contract detection of MetaLMEmbeddings and MetaLMRerank from model configs (no server): which tensor
plays which part, overrides, and errors that say what was expected and what the model has."""

from __future__ import annotations

import pytest

from Xclient import MetaLMEmbeddings, MetaLMRerank
from Xclient.client import ModelConfig
from Xclient.exceptions import IncompatibleModelError


def config(inputs, outputs, max_batch_size=8):
    """A model config from (name, Triton type, dims) triples."""
    return ModelConfig.from_dict(
        {
            "name": "m",
            "max_batch_size": max_batch_size,
            "input": [{"name": n, "data_type": f"TYPE_{t}", "dims": d} for n, t, d in inputs],
            "output": [{"name": n, "data_type": f"TYPE_{t}", "dims": d} for n, t, d in outputs],
        }
    )


def test_embeddings_contract_detection():
    model = MetaLMEmbeddings()
    both = config([("input_text", "STRING", [1])], [("embeddings", "FP32", [8]), ("lexical_weights", "STRING", [1])])
    found = model.detect_contract(both)
    assert (found.text.name, found.dense.name, found.sparse.name) == ("input_text", "embeddings", "lexical_weights")
    two_floats = config([("TEXT", "STRING", [1])], [("pooled", "FP32", [8]), ("dense_vecs", "FP16", [8])])
    assert model.detect_contract(two_floats).dense.name == "dense_vecs"
    with pytest.raises(IncompatibleModelError, match="cannot tell which output.*'a' FP32 \\[8\\], 'b' FP32 \\[8\\]"):
        model.detect_contract(config([("TEXT", "STRING", [1])], [("a", "FP32", [8]), ("b", "FP32", [8])]))
    with pytest.raises(IncompatibleModelError, match="does not batch"):
        model.detect_contract(config([("TEXT", "STRING", [1])], [("e", "FP32", [8])], max_batch_size=0))
    with pytest.raises(IncompatibleModelError, match="requires inputs.*'mode' INT32 \\[1\\]"):
        model.detect_contract(config([("TEXT", "STRING", [1]), ("mode", "INT32", [1])], [("e", "FP32", [8])]))
    with pytest.raises(IncompatibleModelError, match="'e' BYTES \\[1\\] \\(dense_output\\) is not a float output"):
        MetaLMEmbeddings(dense_output="e").detect_contract(config([("TEXT", "STRING", [1])], [("e", "STRING", [1])]))


def test_embeddings_sparse_output_is_only_taken_when_named_or_overridden():
    weights = config([("text", "STRING", [1])], [("dense", "FP32", [8]), ("weights", "STRING", [1])])
    assert MetaLMEmbeddings().detect_contract(weights).sparse is None
    assert MetaLMEmbeddings(sparse_output="weights").detect_contract(weights).sparse.name == "weights"


def test_rerank_contract_detection():
    reranker = MetaLMRerank()
    logits = reranker.detect_contract(config([("INPUT_PAIRS", "STRING", [2])], [("logits", "FP32", [1])]))
    assert (logits.form, logits.inputs[0].name, logits.score.name, logits.batch_size) == (
        "pairs",
        "INPUT_PAIRS",
        "logits",
        8,
    )
    qp = reranker.detect_contract(
        config([("passages", "STRING", [-1]), ("query", "STRING", [1])], [("score", "FP32", [-1])])
    )
    assert (qp.form, [s.name for s in qp.inputs], qp.batch_size) == ("query_passages", ["query", "passages"], 32)
    named = MetaLMRerank(query_input="q", passages_input="p").detect_contract(
        config([("q", "STRING", [1]), ("p", "STRING", [-1])], [("out", "FP16", [-1])])
    )
    assert [s.name for s in named.inputs] == ["q", "p"] and named.score.name == "out"


@pytest.mark.parametrize(
    ("inputs", "outputs", "max_batch_size", "message"),
    [
        ([("x", "FP32", [4])], [("score", "FP32", [-1])], 8, "expected query BYTES.*its inputs: 'x' FP32 \\[4\\]"),
        ([("INPUT_PAIRS", "STRING", [2])], [("SCORES", "FP32", [1])], 0, "needs a batching model"),
        ([("INPUT_PAIRS", "STRING", [2])], [("text", "STRING", [1])], 8, "expected the score output.*'text' BYTES"),
        ([("query", "STRING", [1])], [("score", "FP32", [-1])], 8, "the passages input.*its inputs: 'query' BYTES"),
    ],
)
def test_rerank_contract_errors_say_what_was_expected_and_found(inputs, outputs, max_batch_size, message):
    with pytest.raises(IncompatibleModelError, match=message):
        MetaLMRerank().detect_contract(config(inputs, outputs, max_batch_size))


def test_top_level_names_are_imported_on_first_use():
    import Xclient
    from Xclient.embeddings import MetaLMEmbeddings as embeddings_class
    from Xclient.rerank import MetaLMRerank as rerank_class

    assert Xclient.MetaLMEmbeddings is embeddings_class and Xclient.MetaLMRerank is rerank_class
    with pytest.raises(AttributeError, match="no attribute 'MetaLMNothing'"):
        Xclient.MetaLMNothing  # noqa: B018
