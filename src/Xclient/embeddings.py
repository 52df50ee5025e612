"""MetaLMEmbeddings: LangChain embeddings (dense and sparse) from a Triton embeddings model such as bge-m3.

Example::

    from Xclient import MetaLMEmbeddings

    embeddings = MetaLMEmbeddings(model="bge-m3-v", base_url="http://localhost:8000")
    embeddings.embed_query("什么是向量检索？")                       # [0.012, -0.034, ...]
    dense, sparse = embeddings.embed_documents_sparse(["你好", "世界"])
    sparse[0]                                                       # {'6': 0.31, '2673': 0.18}

**Sparse vectors** are ``dict[str, float]``: token -> weight, one dict per text, as the model sends
them (bge-m3's ``lexical_weights``: keys are token ids as decimal strings, weights are >= 0;
tokens the text does not contain are absent). :func:`sparse_to_indices_values` turns one into
the ``(indices, values)`` pair that vector stores take (Qdrant ``SparseVector``, Milvus, Pinecone).
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from pydantic import Field

from ._batching import CONFIG, Plan, Request, TritonAdapter, split, to_floats
from ._contract import Role, check_no_other_required_inputs, describe, find, incompatible, is_text, is_vector, pick
from ._langchain_fields import MODEL_ALIASES
from ._text import check_text, check_texts, short
from .client import ModelConfig, TensorSpec

SparseVector = dict[str, float]
_NAME = "MetaLMEmbeddings"

TEXT_INPUT = Role(
    "input", "the text input", is_text, "a BYTES input with dims [1]", "input_name", ("text", "input", "sentence")
)
DENSE_OUTPUT = Role(
    "output",
    "the dense output",
    is_vector,
    "a float output (FP16, FP32 or FP64) with dims [D]",
    "dense_output",
    ("dense", "embedding", "embed", "vec"),
)
SPARSE_OUTPUT = Role(
    "output",
    "the sparse output",
    is_text,
    "a BYTES output with dims [1] (one JSON object per text)",
    "sparse_output",
    ("sparse", "lexical"),
    named_only=True,
)


def sparse_to_indices_values(sparse: Mapping[str, float]) -> tuple[list[int], list[float]]:
    """A sparse vector as ``(indices, values)``, sorted by index: what vector stores take.

    Keys that are token ids (decimal strings, as bge-m3 sends) become those ids. Any other key
    (a deployment keyed by token text) becomes a stable 31-bit hash of its UTF-8 bytes
    (``zlib.crc32``), the same in every process. Keys that land on one index keep the largest weight.

    >>> sparse_to_indices_values({"2673": 0.25, "6": 0.5})
    ([6, 2673], [0.5, 0.25])
    >>> sparse_to_indices_values({"向量": 0.5})
    ([206041425], [0.5])
    """
    merged: dict[int, float] = {}
    for key, value in sparse.items():
        index = int(key) if key.isdecimal() and key.isascii() else zlib.crc32(key.encode("utf-8")) & 0x7FFFFFFF
        merged[index] = max(merged.get(index, float(value)), float(value))
    indices = sorted(merged)
    return indices, [merged[i] for i in indices]


@dataclasses.dataclass(frozen=True)
class EmbeddingContract:
    """Which of the model's tensors take the text and give the dense and sparse vectors."""

    config: ModelConfig
    text: TensorSpec
    dense: TensorSpec
    sparse: TensorSpec | None
    batch_size: int

    def request(self, texts: Sequence[str]) -> Request:
        args = tuple([[text] for text in texts] if spec is self.text else None for spec in self.config.inputs)
        return Request(args=args, batch=True, size=len(texts))

    def dense_rows(self, outputs: Mapping[str, np.ndarray], count: int) -> list[list[float]]:
        array = outputs[self.dense.name]
        if array.ndim != 2 or array.shape[0] != count:
            raise incompatible(
                self.config,
                _NAME,
                f"output {self.dense.describe()} came back as shape {list(array.shape)} "
                f"for {count} texts; expected [{count}, D]",
            )
        return to_floats(array)

    def sparse_rows(self, outputs: Mapping[str, np.ndarray], count: int, start: int = 0) -> list[SparseVector]:
        """The sparse vectors of ``count`` texts, the first of which is text ``start`` of the call."""
        assert self.sparse is not None
        array = outputs[self.sparse.name].reshape(-1)
        if array.shape[0] != count:
            raise incompatible(
                self.config, _NAME, f"output {self.sparse.describe()} gave {array.shape[0]} values for {count} texts"
            )
        return [self._sparse(value, start + offset) for offset, value in enumerate(array)]

    def _sparse(self, value: Any, index: int) -> SparseVector:
        assert self.sparse is not None
        try:
            weights = json.loads(value.decode("utf-8") if isinstance(value, bytes) else value)
            if not isinstance(weights, dict):
                raise ValueError(f"a JSON {type(weights).__name__}")
            return {str(token): float(weight) for token, weight in weights.items()}
        except (ValueError, TypeError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise incompatible(
                self.config,
                _NAME,
                f"output {self.sparse.describe()} should hold a UTF-8 JSON object token -> weight "
                f"per text; for text {index} it gave {short(value)} ({e})",
            ) from None


class MetaLMEmbeddings(TritonAdapter, Embeddings):
    """LangChain embeddings from a Triton embeddings model (docs/protocols.md section 4), dense and sparse.

    The contract is read from the model config: the text input is the BYTES input with dims [1]
    (the one named like ``text`` if there are several), the dense output the float output with one
    axis (FP16/FP32/FP64; named like ``dense`` or ``embedding`` if several), the sparse output a
    BYTES output named like ``sparse`` or ``lexical`` (optional). ``input_name``, ``dense_output``
    and ``sparse_output`` name them explicitly for other deployments.

    Texts are sent in batches of the model's ``max_batch_size`` (or a smaller ``max_batch_size``),
    ``max_concurrency`` batches at once; results keep the input order. Clients are made on first
    use and reused (``close()``/``aclose()`` release them). Every vector is a list of Python floats.

    Texts: ``[]`` gives ``[]`` without a request; an empty string is embedded like any other text;
    a long text is sent whole (the model truncates it: bge-m3 at 8192 tokens). Anything but a str
    that UTF-8 can encode (an int, None, bytes, a list...) is an
    :class:`~Xclient.exceptions.XclientValueError` naming it (``texts[2]: expected a str, got int 3``),
    raised before anything is sent. A sparse output that is not a UTF-8 JSON object token -> weight
    is an :class:`~Xclient.exceptions.IncompatibleModelError` naming the model, the output and the text.
    """

    model: str = Field(default="bge-m3-v", validation_alias=MODEL_ALIASES)
    """The embeddings model's name on the server."""
    input_name: str | None = None
    """The input that takes the text; None: detect from the model config."""
    dense_output: str | None = None
    """The output with the dense vectors; None: detect."""
    sparse_output: str | None = None
    """The output with the sparse vectors (JSON per text); None: detect (a model may have none)."""

    # -- LangChain's API -----------------------------------------------------------------------

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Dense vectors of ``texts``, in order."""
        return self._run(self._plan(texts, sparse=False), "Embedding")[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Dense vectors of ``texts``, in order (asyncio)."""
        return (await self._arun(self._plan(texts, sparse=False), "Embedding"))[0]

    def embed_query(self, text: str) -> list[float]:
        """The dense vector of one text."""
        return self._run(self._query_plan(text, sparse=False), "Embedding")[0][0]

    async def aembed_query(self, text: str) -> list[float]:
        """The dense vector of one text (asyncio)."""
        return (await self._arun(self._query_plan(text, sparse=False), "Embedding"))[0][0]

    # -- sparse ----------------------------------------------------------------------------------

    def embed_documents_sparse(self, texts: list[str]) -> tuple[list[list[float]], list[SparseVector]]:
        """``(dense vectors, sparse vectors)`` of ``texts``, both aligned with the input."""
        return self._run(self._plan(texts, sparse=True), "Embedding")

    async def aembed_documents_sparse(self, texts: list[str]) -> tuple[list[list[float]], list[SparseVector]]:
        """``(dense vectors, sparse vectors)`` of ``texts`` (asyncio)."""
        return await self._arun(self._plan(texts, sparse=True), "Embedding")

    def embed_query_sparse(self, text: str) -> tuple[list[float], SparseVector]:
        """``(dense vector, sparse vector)`` of one text."""
        dense, sparse = self._run(self._query_plan(text, sparse=True), "Embedding")
        return dense[0], sparse[0]

    async def aembed_query_sparse(self, text: str) -> tuple[list[float], SparseVector]:
        """``(dense vector, sparse vector)`` of one text (asyncio)."""
        dense, sparse = await self._arun(self._query_plan(text, sparse=True), "Embedding")
        return dense[0], sparse[0]

    # -- the plan, shared by sync and async ------------------------------------------------------

    def detect_contract(self, config: ModelConfig) -> EmbeddingContract:
        """The contract this instance uses with a model of that config (errors say what does not fit)."""
        if not config.batching:
            raise incompatible(
                config,
                _NAME,
                "it does not batch (max_batch_size 0); expected a batching model that takes one "
                "BYTES input sent as [batch, 1]",
            )
        text = pick(config, _NAME, TEXT_INPUT, self.input_name)
        check_no_other_required_inputs(config, _NAME, [text])
        dense = pick(config, _NAME, DENSE_OUTPUT, self.dense_output)
        sparse = find(config, _NAME, SPARSE_OUTPUT, self.sparse_output)
        batch_size = min(config.max_batch_size, self.max_batch_size or config.max_batch_size)
        return EmbeddingContract(config, text, dense, sparse, batch_size)

    def _query_plan(self, text: object, *, sparse: bool) -> Plan[tuple[list[list[float]], list[SparseVector]]]:
        return self._plan([check_text(text, "text")], sparse=sparse)

    def _plan(self, texts: object, *, sparse: bool) -> Plan[tuple[list[list[float]], list[SparseVector]]]:
        batch = check_texts(texts, "texts")
        if not batch:
            return [], []
        contract = self.detect_contract((yield CONFIG))
        if sparse and contract.sparse is None:
            raise incompatible(
                contract.config,
                _NAME,
                f"it has no sparse output (a BYTES output named like 'sparse'); its "
                f"outputs: {describe(contract.config.outputs)}. Set sparse_output=... if "
                "one holds the sparse vectors, or use the dense methods",
            )
        chunks = split(batch, contract.batch_size)
        outputs = yield [contract.request(chunk) for chunk in chunks]
        dense: list[list[float]] = []
        weights: list[SparseVector] = []
        for chunk, output in zip(chunks, outputs, strict=True):
            if sparse:
                weights += contract.sparse_rows(output, len(chunk), start=len(dense))
            dense += contract.dense_rows(output, len(chunk))
        return dense, weights
