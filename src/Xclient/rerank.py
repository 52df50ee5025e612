"""MetaLMRerank: a LangChain document compressor that reranks with a Triton reranker such as bge-reranker-v2-m3.

Example::

    from langchain_core.documents import Document
    from Xclient import MetaLMRerank

    reranker = MetaLMRerank(model="bge-reranker-v2-m3", base_url="http://localhost:8000", top_n=3)
    reranker.compress_documents([Document(page_content="向量检索"), ...], query="什么是向量检索")
    reranker.rerank("什么是向量检索", ["向量检索", "天气"])      # [RerankResult(index=0, score=3.1), ...]

Two contracts are read from the model config (docs/protocols.md section 5):

- **query/passages** (the deployed bge-reranker-v2-m3): inputs query BYTES [1] and passages BYTES
  [-1], sent as one sample per request (passages ride the -1 axis); output score [-1].
- **pairs**: an input BYTES [2] (``INPUT_PAIRS``), one ``[query, passage]`` pair per batch row;
  output ``SCORES`` or ``logits``, one per pair.

Scores are the model's raw logits (higher is more relevant); ``normalize=True`` maps them
through a sigmoid to [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import Field

from ._batching import CONFIG, Plan, Request, TritonAdapter, split
from ._contract import Role, check_no_other_required_inputs, describe, find, incompatible, is_scalar_or_list, pick
from ._langchain_fields import MODEL_ALIASES
from ._text import check_list, check_text, check_texts, refuse
from .client import ModelConfig, TensorSpec

_NAME = "MetaLMRerank"

#: Passages per request for the query/passages form, where the model's max_batch_size counts
#: queries, not passages.
DEFAULT_PASSAGES_PER_REQUEST = 32


def _is_pair(spec: TensorSpec) -> bool:
    return spec.is_bytes and spec.shape == (2,)


def _is_one(spec: TensorSpec) -> bool:
    return spec.is_bytes and spec.shape == (1,)


def _is_list(spec: TensorSpec) -> bool:
    return spec.is_bytes and spec.shape == (-1,)


PAIRS_INPUT = Role("input", "the pairs input", _is_pair, "a BYTES input with dims [2]", "pairs_input", ("pair",))
QUERY_INPUT = Role("input", "the query input", _is_one, "a BYTES input with dims [1]", "query_input", ("query",))
PASSAGES_INPUT = Role(
    "input",
    "the passages input",
    _is_list,
    "a BYTES input with dims [-1]",
    "passages_input",
    ("passage", "doc", "text", "context"),
)
SCORE_OUTPUT = Role(
    "output",
    "the score output",
    is_scalar_or_list,
    "a float output with dims [-1] or [1]",
    "score_output",
    ("score", "logit", "relevance"),
)


@dataclasses.dataclass(frozen=True)
class RerankResult:
    """One text's place in a ranking: its index in the input and its score."""

    index: int
    score: float


@dataclasses.dataclass(frozen=True)
class RerankContract:
    """Which of the model's tensors take the query and passages (or the pairs) and give the scores."""

    config: ModelConfig
    form: Literal["query_passages", "pairs"]
    inputs: tuple[TensorSpec, ...]  # (query, passages) or (pairs,)
    score: TensorSpec
    batch_size: int

    def request(self, query: str, passages: Sequence[str]) -> Request:
        if self.form == "pairs":
            values: dict[str, Any] = {self.inputs[0].name: [[query, passage] for passage in passages]}
        else:
            values = {self.inputs[0].name: [query], self.inputs[1].name: list(passages)}
        args = tuple(values.get(spec.name) for spec in self.config.inputs)
        return Request(args=args, batch=self.form == "pairs", size=len(passages))

    def scores(self, outputs: Mapping[str, np.ndarray], count: int) -> list[float]:
        array = outputs[self.score.name]
        if array.size != count:
            raise incompatible(
                self.config,
                _NAME,
                f"output {self.score.describe()} came back as shape {list(array.shape)}: "
                f"expected one score per passage ({count})",
            )
        return np.asarray(array, dtype=np.float64).reshape(-1).tolist()


def _page_contents(documents: object) -> list[str]:
    """The documents' texts, or an error naming the first bad one (``documents[2].page_content``)."""
    texts = []
    for index, document in enumerate(check_list(documents, "documents", "a list of Document")):
        if not isinstance(document, Document):
            raise refuse(f"documents[{index}]", "a Document", document)
        texts.append(check_text(document.page_content, f"documents[{index}].page_content"))
    return texts


def rank(scores: Sequence[float], top_n: int | None) -> list[RerankResult]:
    """Indices by score, best first (ties keep input order), at most ``top_n`` (None: all).

    >>> rank([0.1, 2.0, 0.5], top_n=2)
    [RerankResult(index=1, score=2.0), RerankResult(index=2, score=0.5)]
    """
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [RerankResult(i, scores[i]) for i in order[: None if top_n is None else max(top_n, 0)]]


class MetaLMRerank(TritonAdapter, BaseDocumentCompressor):
    """LangChain document compressor over a Triton reranker (bge-reranker-v2-m3 or a pairs-form model).

    :meth:`compress_documents` returns copies of the ``top_n`` best documents (inputs are not
    mutated), each with ``metadata["relevance_score"]`` (a float), sorted by score, best first.
    Empty documents or ``top_n < 1`` give ``[]`` without a request. :meth:`rerank` is the same
    for plain texts.

    Texts: an empty query or an empty ``page_content`` is scored like any other text; long texts are
    sent whole (the model truncates them). A query, text or ``page_content`` that is not a str (or
    that UTF-8 cannot encode), or a document that is not a ``Document``, is an
    :class:`~Xclient.exceptions.XclientValueError` naming it (``documents[1].page_content: expected a
    str, got NoneType None``), raised before anything is sent. A model that answers the wrong number
    of scores, or NaN, raises :class:`~Xclient.exceptions.IncompatibleModelError` naming it and its output.

    Passages are sent ``max_batch_size`` per request (default: the model's ``max_batch_size`` for
    the pairs form, 32 for the query/passages form), ``max_concurrency`` requests at once, and
    ranked together at the end. ``query_input``, ``passages_input``, ``pairs_input`` and
    ``score_output`` name the tensors for deployments the detection does not recognize.
    """

    model: str = Field(default="bge-reranker-v2-m3", validation_alias=MODEL_ALIASES)
    """The reranker's name on the server."""
    top_n: int = 5
    """How many documents :meth:`compress_documents` returns; below 1: none."""
    normalize: bool = False
    """Map the raw logits through a sigmoid to [0, 1] (like FlagEmbedding's ``normalize=True``)."""
    query_input: str | None = None
    """The query input (query/passages form); None: detect."""
    passages_input: str | None = None
    """The passages input (query/passages form); None: detect."""
    pairs_input: str | None = None
    """The pairs input (pairs form: BYTES [2] per pair); None: detect."""
    score_output: str | None = None
    """The scores output; None: detect (``score``, ``SCORES``, ``logits``...)."""

    # -- LangChain's API -----------------------------------------------------------------------

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The ``top_n`` documents most relevant to ``query``, best first, as scored copies."""
        return self._run(self._compress_plan(documents, query), "Reranking")

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The ``top_n`` documents most relevant to ``query``, best first, as scored copies (asyncio)."""
        return await self._arun(self._compress_plan(documents, query), "Reranking")

    # -- plain texts -----------------------------------------------------------------------------

    def rerank(self, query: str, texts: Sequence[str], top_n: int | None = None) -> list[RerankResult]:
        """Every text's index and score, best first; at most ``top_n`` (None: all, below 1: none)."""
        return self._run(self._rerank_plan(query, texts, top_n), "Reranking")

    async def arerank(self, query: str, texts: Sequence[str], top_n: int | None = None) -> list[RerankResult]:
        """Every text's index and score, best first; at most ``top_n`` (asyncio)."""
        return await self._arun(self._rerank_plan(query, texts, top_n), "Reranking")

    # -- the plan, shared by sync and async ------------------------------------------------------

    def detect_contract(self, config: ModelConfig) -> RerankContract:
        """The contract this instance uses with a model of that config (errors say what does not fit)."""
        overrides_qp = self.query_input is not None or self.passages_input is not None
        pairs = None
        if not overrides_qp:
            pairs = find(config, _NAME, PAIRS_INPUT, self.pairs_input)
        if pairs is not None:
            if not config.batching:
                raise incompatible(
                    config,
                    _NAME,
                    f"pairs input {pairs.describe()} needs a batching model (one pair per batch "
                    "row), but max_batch_size is 0",
                )
            inputs: tuple[TensorSpec, ...] = (pairs,)
            form: Literal["query_passages", "pairs"] = "pairs"
            batch_size = min(config.max_batch_size, self.max_batch_size or config.max_batch_size)
        else:
            inputs = self._query_passages_inputs(config)
            form = "query_passages"
            batch_size = self.max_batch_size or DEFAULT_PASSAGES_PER_REQUEST
        check_no_other_required_inputs(config, _NAME, inputs)
        score = pick(config, _NAME, SCORE_OUTPUT, self.score_output)
        return RerankContract(config, form, inputs, score, batch_size)

    def _query_passages_inputs(self, config: ModelConfig) -> tuple[TensorSpec, TensorSpec]:
        bytes_inputs = [s for s in config.inputs if s.is_bytes]
        if not bytes_inputs:
            raise incompatible(
                config,
                _NAME,
                "expected query BYTES [1] + passages BYTES [-1], or pairs BYTES [2]; its inputs: "
                + describe(config.inputs),
            )
        query = pick(config, _NAME, QUERY_INPUT, self.query_input)
        passages = pick(config, _NAME, PASSAGES_INPUT, self.passages_input, exclude=[query])
        return query, passages

    def _rerank_plan(self, query: object, texts: object, top_n: int | None) -> Plan[list[RerankResult]]:
        scores = yield from self._score_plan(query, check_texts(texts, "texts"), top_n)
        return rank(scores, top_n)

    def _compress_plan(self, documents: Sequence[Document], query: object) -> Plan[list[Document]]:
        scores = yield from self._score_plan(query, _page_contents(documents), self.top_n)
        return [
            documents[r.index].model_copy(
                update={"metadata": {**documents[r.index].metadata, "relevance_score": r.score}}
            )
            for r in rank(scores, self.top_n)
        ]

    def _score_plan(self, query: object, texts: list[str], top_n: int | None) -> Plan[list[float]]:
        """Scores of ``texts`` against ``query``, in input order (none when nothing is asked for)."""
        query = check_text(query, "query")
        if not texts or (top_n is not None and top_n < 1):
            return []
        contract = self.detect_contract((yield CONFIG))
        chunks = split(texts, contract.batch_size)
        outputs = yield [contract.request(query, chunk) for chunk in chunks]
        scores = [s for chunk, out in zip(chunks, outputs, strict=True) for s in contract.scores(out, len(chunk))]
        nan = next((index for index, score in enumerate(scores) if math.isnan(score)), None)
        if nan is not None:  # NaN cannot be ranked: sorting by it would scramble the whole order
            raise incompatible(
                contract.config,
                _NAME,
                f"output {contract.score.describe()} gave NaN for passage {nan}; expected a number per passage",
            )
        if self.normalize:
            scores = (1.0 / (1.0 + np.exp(-np.asarray(scores, dtype=np.float64)))).tolist()
        return scores
