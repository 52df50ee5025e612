"""Bulk inference on Ray Data: callable classes for ``Dataset.map_batches`` (extra ``ray``).

Example::

    import ray
    from Xclient.ray import Embedder

    ds = ray.data.read_json("docs.jsonl")                       # a "text" column
    ds = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"url": ["grpc://a:8001", "grpc://b:8001"], "model": "bge-m3-v"},
        concurrency=4,                                          # 4 actors, one client each
        batch_size=256,
    )
    ds.write_parquet("vectors/")

Ray constructs each class once per actor and calls it once per batch. Every instance holds one
Xclient client (made on first use, never in the constructor) and keeps at most ``max_concurrency``
requests in flight; the actor count (``concurrency=`` of ``map_batches``) multiplies that.

- :class:`Embedder`: a text column -> dense vectors (and sparse, for bge-m3-style models), with
  :class:`~Xclient.MetaLMEmbeddings`' batching (split by the model's ``max_batch_size``, in order).
- :class:`Reranker`: a query column and a documents column (a list of texts per row) -> one score per
  document, in the documents' order, with :class:`~Xclient.MetaLMRerank`.
- :class:`TextGenerator`: a prompt column -> text, and token usage when the model reports it, with
  :class:`~Xclient.llms.ChatMetaLM` (the prompt is a user message) or :class:`~Xclient.llms.MetaLM`
  (``chat=False``: the prompt goes as it is).
- :class:`ModelCaller`: any model: columns -> its named inputs, its outputs -> columns, with
  :class:`~Xclient.client.ModelClient`.

**Failed rows are reported, never dropped.** ``on_error="raise"`` (default) raises the first error,
which fails the Ray task (Ray's own retries apply). ``on_error="column"`` keeps every row: a failed
row gets its message in ``error_column`` (``"error"``; None on the rows that succeeded) and null
outputs. A request that fails takes its rows with it, so failed batches are split in halves and
resent until the rows that fail are alone: one bad text costs about log2(batch) more requests,
and the others still get their vectors.

Batches are what ``map_batches`` gives: ``batch_format="numpy"`` (Ray's default, a dict of arrays)
or ``"pandas"``; the result has the same format, with the input columns and the new ones. Vectors
are list columns (``list<float>`` in Parquet, nullable: a failed row's is null).

``url`` is one URL or several (a replica set: every URL goes to the client as given).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from ._text import check_text
from .exceptions import XclientValueError

if TYPE_CHECKING:
    import pandas as pd

    from .client import TensorSpec

__all__ = ["Embedder", "ModelCaller", "OnError", "Reranker", "TextGenerator"]

T = TypeVar("T")
R = TypeVar("R")

#: What to do with a row whose inference failed: raise, or write its message in the error column.
OnError = Literal["raise", "column"]

#: Requests in flight per instance (per Ray actor), unless ``max_concurrency`` says otherwise.
DEFAULT_MAX_CONCURRENCY = 4

Batch = Any  # dict[str, np.ndarray] (batch_format="numpy") or pandas.DataFrame (batch_format="pandas")


# -- batches in, batches out -------------------------------------------------------------------------


def _column(batch: Batch, name: str) -> list[Any]:
    """Column ``name`` of the batch as a list of Python values, or an error naming the columns there are."""
    columns = list(batch.keys())
    if name not in columns:
        raise XclientValueError(f"column {name!r}: not in the batch; its columns: {columns}")
    values = batch[name]
    return values.tolist() if isinstance(values, np.ndarray) and values.dtype != object else list(values)


def _rows(batch: Batch) -> int:
    if isinstance(batch, Mapping):
        return len(next(iter(batch.values()))) if batch else 0
    return len(batch)


def _as_array(values: list[Any]) -> np.ndarray:
    """A column Ray stores as one Arrow column: a 1-D object array (lists stay lists: ``list<...>``)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _with_columns(batch: Batch, columns: Mapping[str, list[Any]]) -> Batch:
    """The batch (same format) with ``columns`` added or replaced; the input is not changed."""
    if isinstance(batch, Mapping):
        out = dict(batch)
        for name, values in columns.items():
            out[name] = _as_array(values)
        return out
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas comes with ray[data]
        pd = None
    if pd is not None and isinstance(batch, pd.DataFrame):
        frame: pd.DataFrame = batch.copy(deep=False)
        for name, values in columns.items():
            frame[name] = pd.Series(_as_array(values), index=frame.index, dtype=object)
        return frame
    raise XclientValueError(
        f"batch: expected a dict of numpy arrays (batch_format='numpy') or a pandas DataFrame "
        f"(batch_format='pandas'), got {type(batch).__name__}"
    )


def _message(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


# -- failed rows -------------------------------------------------------------------------------------


class _Failed:
    """A row's failure: the message goes in the error column."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def isolate(items: Sequence[T], run: Callable[[Sequence[T]], list[R]]) -> list[R | _Failed]:
    """``run(items)``, and when it raises, ``run`` on each half, down to single items: every item gets
    its result or the error that its smallest failing slice raised. Results keep the input order.

    >>> isolate([1, 0, 2], lambda xs: [10 // x for x in xs])[0::2]
    [10, 5]
    >>> type(isolate([1, 0, 2], lambda xs: [10 // x for x in xs])[1].error).__name__
    'ZeroDivisionError'
    """
    if not items:
        return []
    try:
        return list(run(items))
    except Exception as e:
        if len(items) == 1:
            return [_Failed(e)]
    middle = len(items) // 2
    return [*isolate(items[:middle], run), *isolate(items[middle:], run)]


class _Rows:
    """The shared frame of every class: ``on_error``, the error column, the thread pool that keeps
    ``max_concurrency`` rows in flight for the per-row classes, and the result of a batch."""

    def __init__(self, *, on_error: OnError, error_column: str, max_concurrency: int) -> None:
        if on_error not in ("raise", "column"):
            raise XclientValueError(f"on_error: expected 'raise' or 'column', got {on_error!r}")
        if not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool) or max_concurrency < 1:
            raise XclientValueError(f"max_concurrency: expected an int >= 1, got {max_concurrency!r}")
        self.on_error: OnError = on_error
        self.error_column = error_column
        self.max_concurrency = max_concurrency
        self._pool: ThreadPoolExecutor | None = None

    def run(self, items: Sequence[T], run: Callable[[Sequence[T]], list[R]]) -> list[R | _Failed]:
        """``run`` over the items: at once when errors raise, else with failed rows isolated."""
        if self.on_error == "raise":
            return list(run(items))
        return isolate(items, run)

    def each(self, items: Sequence[T], one: Callable[[T], R]) -> list[R | _Failed]:
        """``one`` on every item, ``max_concurrency`` at a time, in order; a failure is that row's."""

        def guarded(item: T) -> R | _Failed:
            try:
                return one(item)
            except Exception as e:
                if self.on_error == "raise":
                    raise
                return _Failed(e)

        return list(self.pool().map(guarded, items))

    def texts(self, values: list[Any], column: str, run: Callable[[list[str]], list[R | _Failed]]) -> list[R | _Failed]:
        """``run`` over the values that are text; the others fail their row before anything is sent
        (or raise, with ``on_error="raise"``). Results keep the input order."""
        checked = _checked_texts(values, column)
        if self.on_error == "raise":
            _first_failure(checked)
        return _fill(checked, run([t for t in checked if not isinstance(t, _Failed)]))

    def pool(self) -> ThreadPoolExecutor:
        """``max_concurrency`` threads, made on first use."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="Xclient.ray")
        return self._pool

    def finish(
        self, batch: Batch, results: Sequence[Any], columns: Callable[[list[Any]], dict[str, list[Any]]]
    ) -> Batch:
        """The output batch: ``columns`` of the successful results, None in a failed row's cells and
        its message in the error column (``on_error="column"``)."""
        failed = [isinstance(r, _Failed) for r in results]
        ok = [r for r, bad in zip(results, failed, strict=True) if not bad]
        made = columns(ok)
        out: dict[str, list[Any]] = {}
        for name, values in made.items():
            cells = iter(values)
            out[name] = [None if bad else next(cells) for bad in failed]
        if self.on_error == "column":
            out[self.error_column] = [_message(r.error) if isinstance(r, _Failed) else None for r in results]
        return _with_columns(batch, out)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _checked_texts(values: list[Any], column: str) -> list[str | _Failed]:
    """Each value as a str, or the error that says what is wrong with it (before anything is sent)."""
    out: list[str | _Failed] = []
    for index, value in enumerate(values):
        try:
            out.append(check_text(value, f"{column}[{index}]"))
        except XclientValueError as e:
            out.append(_Failed(e))
    return out


def _fill(checked: list[Any], results: list[Any]) -> list[Any]:
    """The failures found before sending, in place, and the results of the rest, in order."""
    found = iter(results)
    return [value if isinstance(value, _Failed) else next(found) for value in checked]


def _first_failure(values: Sequence[Any]) -> None:
    failure = next((v for v in values if isinstance(v, _Failed)), None)
    if failure is not None:
        raise failure.error


def _urls(url: str | Sequence[str]) -> Any:
    """The URL(s) as the clients take them: one as a str, several as a list."""
    if isinstance(url, str):
        return url
    urls = list(url)
    if not urls or not all(isinstance(u, str) for u in urls):
        raise XclientValueError(f"url: expected a URL or a non-empty sequence of URLs, got {url!r}")
    return urls[0] if len(urls) == 1 else urls


@functools.cache
def _resending(adapter: type[Any]) -> type[Any]:
    """``adapter`` (MetaLMEmbeddings or MetaLMRerank) whose clients also send to another replica a call
    that may have reached one that then failed (the clients' ``retry_unsafe``): embedding and scoring
    are idempotent, so losing a replica mid-job costs no row."""

    def _client_options(self: Any) -> dict[str, Any]:
        return {**adapter._client_options(self), "retry_unsafe": True}

    return type(adapter.__name__, (adapter,), {"_client_options": _client_options, "__module__": __name__})


# -- the classes -----------------------------------------------------------------------------------


class Embedder:
    """Embeds ``text_column`` into ``dense_column`` (a list of floats per row) and, with ``sparse_column``,
    sparse vectors as ``<sparse_column>_indices`` (token ids) and ``<sparse_column>_values`` (weights),
    sorted by index (:func:`~Xclient.embeddings.sparse_to_indices_values`): what vector stores take.

    A Ray batch is one :meth:`~Xclient.MetaLMEmbeddings.embed_documents` call: sent in slices of the
    model's ``max_batch_size``, ``max_concurrency`` at once, results in input order. A value that is not
    a str fails its row before anything is sent. ``embeddings_options`` are more
    :class:`~Xclient.MetaLMEmbeddings` fields (``timeout``, ``max_retries``, ``input_name``...).

    ``retry_unsafe=True`` (default): over several URLs, a call that a replica may have received before it
    failed (the connection lost under the request) is sent again to another replica, as embedding is
    idempotent; so a server lost mid-job costs no row. False: only calls that never reached one.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        model: str = "bge-m3-v",
        *,
        text_column: str = "text",
        dense_column: str = "embedding",
        sparse_column: str | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_batch_size: int | None = None,
        on_error: OnError = "raise",
        error_column: str = "error",
        retry_unsafe: bool = True,
        embeddings_options: Mapping[str, Any] | None = None,
    ) -> None:
        from .embeddings import MetaLMEmbeddings

        self._rows = _Rows(on_error=on_error, error_column=error_column, max_concurrency=max_concurrency)
        self.text_column, self.dense_column, self.sparse_column = text_column, dense_column, sparse_column
        self.embeddings = (_resending(MetaLMEmbeddings) if retry_unsafe else MetaLMEmbeddings)(
            base_url=_urls(url),
            model=model,
            max_concurrency=max_concurrency,
            max_batch_size=max_batch_size,
            **dict(embeddings_options or {}),
        )

    def _embed(self, texts: Sequence[str]) -> list[tuple[list[float], tuple[list[int], list[float]] | None]]:
        from .embeddings import sparse_to_indices_values

        if self.sparse_column is None:
            return [(dense, None) for dense in self.embeddings.embed_documents(list(texts))]
        dense, sparse = self.embeddings.embed_documents_sparse(list(texts))
        return [(d, sparse_to_indices_values(s)) for d, s in zip(dense, sparse, strict=True)]

    def __call__(self, batch: Batch) -> Batch:
        texts = _column(batch, self.text_column)
        results = self._rows.texts(texts, self.text_column, lambda ok: self._rows.run(ok, self._embed))
        return self._rows.finish(batch, results, self._columns)

    def _columns(self, results: list[tuple[list[float], tuple[list[int], list[float]] | None]]) -> dict[str, list[Any]]:
        columns: dict[str, list[Any]] = {self.dense_column: [dense for dense, _ in results]}
        if self.sparse_column is not None:
            columns[f"{self.sparse_column}_indices"] = [s[0] for _, s in results if s is not None]
            columns[f"{self.sparse_column}_values"] = [s[1] for _, s in results if s is not None]
        return columns

    def close(self) -> None:
        """Close the client (Ray ends the actor's process anyway)."""
        self.embeddings.close()
        self._rows.close()


class Reranker:
    """Scores each row's ``documents_column`` (a list of texts) against its ``query_column``:
    ``score_column`` holds one float per document, in the documents' order (raw logits; sigmoid with
    ``reranker_options={"normalize": True}``). One :meth:`~Xclient.MetaLMRerank.rerank` call per row,
    ``max_concurrency`` rows at once. ``retry_unsafe``: as for :class:`Embedder` (scoring is idempotent)."""

    def __init__(
        self,
        url: str | Sequence[str],
        model: str = "bge-reranker-v2-m3",
        *,
        query_column: str = "query",
        documents_column: str = "documents",
        score_column: str = "scores",
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        on_error: OnError = "raise",
        error_column: str = "error",
        retry_unsafe: bool = True,
        reranker_options: Mapping[str, Any] | None = None,
    ) -> None:
        from .rerank import MetaLMRerank

        self._rows = _Rows(on_error=on_error, error_column=error_column, max_concurrency=max_concurrency)
        self.query_column, self.documents_column, self.score_column = query_column, documents_column, score_column
        self.reranker = (_resending(MetaLMRerank) if retry_unsafe else MetaLMRerank)(
            base_url=_urls(url), model=model, **dict(reranker_options or {})
        )

    def _score(self, row: tuple[Any, Any]) -> list[float]:
        query, documents = row
        if isinstance(documents, np.ndarray):  # Ray hands list cells over as arrays
            documents = documents.tolist()
        results = self.reranker.rerank(query, documents)
        scores = [0.0] * len(results)
        for result in results:
            scores[result.index] = result.score
        return scores

    def __call__(self, batch: Batch) -> Batch:
        rows = list(zip(_column(batch, self.query_column), _column(batch, self.documents_column), strict=True))
        results = self._rows.each(rows, self._score)
        return self._rows.finish(batch, results, lambda ok: {self.score_column: ok})

    def close(self) -> None:
        self.reranker.close()
        self._rows.close()


_USAGE = ("input_tokens", "output_tokens", "total_tokens")


class TextGenerator:
    """Generates from each row's ``prompt_column`` into ``output_column``; when the model reports token
    usage, also ``input_tokens``, ``output_tokens`` and ``total_tokens`` (ints; None on failed rows).

    ``chat=True`` (default): :class:`~Xclient.llms.ChatMetaLM`, the prompt is one user message rendered
    with the model's chat template. ``chat=False``: :class:`~Xclient.llms.MetaLM`, the prompt goes as it
    is. ``llm_options`` are their fields (``max_tokens``, ``temperature``, ``stop``...). One call per
    row, ``max_concurrency`` rows at once."""

    def __init__(
        self,
        url: str | Sequence[str],
        model: str = "Qwen2-0.5B-Instruct",
        *,
        prompt_column: str = "prompt",
        output_column: str = "text",
        chat: bool = True,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        on_error: OnError = "raise",
        error_column: str = "error",
        llm_options: Mapping[str, Any] | None = None,
    ) -> None:
        from .llms import ChatMetaLM, MetaLM

        self._rows = _Rows(on_error=on_error, error_column=error_column, max_concurrency=max_concurrency)
        self.prompt_column, self.output_column, self.chat = prompt_column, output_column, chat
        kind = ChatMetaLM if chat else MetaLM
        self.llm: Any = kind(base_url=_urls(url), model=model, **dict(llm_options or {}))

    def _generate(self, prompt: str) -> tuple[str, Mapping[str, int] | None]:
        if self.chat:
            message = self.llm.invoke(prompt)
            return message.content, message.usage_metadata
        generation = self.llm.generate([prompt]).generations[0][0]
        return generation.text, (generation.generation_info or {}).get("usage")

    def __call__(self, batch: Batch) -> Batch:
        prompts = _column(batch, self.prompt_column)
        results = self._rows.texts(prompts, self.prompt_column, lambda ok: self._rows.each(ok, self._generate))
        return self._rows.finish(batch, results, self._columns)

    def _columns(self, results: list[tuple[str, Mapping[str, int] | None]]) -> dict[str, list[Any]]:
        columns: dict[str, list[Any]] = {self.output_column: [text for text, _ in results]}
        if any(usage for _, usage in results):
            for key in _USAGE:
                columns[key] = [int(usage[key]) if usage and key in usage else None for _, usage in results]
        return columns

    def close(self) -> None:
        self.llm.close()
        self._rows.close()


class ModelCaller:
    """Calls any model: ``inputs`` maps each model input to the column that feeds it, ``outputs`` each
    model output to the column that receives it (None: every output, under its own name).

    A batching model gets the rows in slices of its ``max_batch_size`` (``infer_batch``), a non-batching
    one a request per row (``infer_sample``), ``max_concurrency`` requests at once, in order. An input
    whose dims are ``[1]`` takes a scalar per row; an output whose dims are ``[1]`` gives one. BYTES
    outputs are decoded as UTF-8 (``decode_bytes=False``: bytes); other arrays become lists.
    ``client_options`` are :class:`~Xclient.client.ModelClient` keywords (``inference_timeout_s``...).
    """

    def __init__(
        self,
        url: str | Sequence[str],
        model: str,
        inputs: Mapping[str, str] | Sequence[str],
        outputs: Mapping[str, str] | Sequence[str] | None = None,
        *,
        model_version: str | int | None = None,
        decode_bytes: bool = True,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        on_error: OnError = "raise",
        error_column: str = "error",
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        from .client import ModelClient

        self._rows = _Rows(on_error=on_error, error_column=error_column, max_concurrency=max_concurrency)
        self.inputs = _names(inputs, "inputs")
        self.outputs = None if outputs is None else _names(outputs, "outputs")
        self.decode_bytes = decode_bytes
        self.client = ModelClient(_urls(url), model, model_version, **dict(client_options or {}))

    def _infer(self, rows: Sequence[int], columns: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
        """The outputs of ``rows`` (indices into ``columns``), one dict per row."""
        config = self.client.model_config
        specs = {spec.name: spec for spec in config.inputs}
        chunks = [rows[i : i + config.max_batch_size] for i in range(0, len(rows), config.max_batch_size)]

        def one(chunk: Sequence[int]) -> list[dict[str, Any]]:
            named = {name: _input(specs.get(name), [columns[name][i] for i in chunk]) for name in self.inputs}
            return _split_outputs(self.client.infer_batch(**named), len(chunk))

        def sample(row: int) -> list[dict[str, Any]]:
            named = {name: _input(specs.get(name), [columns[name][row]])[0] for name in self.inputs}
            return _split_outputs({k: v[None] for k, v in self.client.infer_sample(**named).items()}, 1)

        if not config.batching:
            pieces = [sample(row) for row in rows] if len(rows) == 1 else list(self._rows.pool().map(sample, rows))
        elif len(chunks) == 1:
            pieces = [one(chunks[0])]
        else:
            pieces = list(self._rows.pool().map(one, chunks))
        return [row for piece in pieces for row in piece]

    def __call__(self, batch: Batch) -> Batch:
        columns = {name: _column(batch, column) for name, column in self.inputs.items()}
        results = self._rows.run(list(range(_rows(batch))), lambda rows: self._infer(rows, columns))
        return self._rows.finish(batch, results, self._columns)

    def _columns(self, results: list[dict[str, Any]]) -> dict[str, list[Any]]:
        names = self.outputs or {name: name for name in (results[0] if results else {})}
        if not results and self.outputs is None:
            names = {spec.name: spec.name for spec in self.client.model_config.outputs}
        return {column: [_cell(row[output], self.decode_bytes) for row in results] for output, column in names.items()}

    def close(self) -> None:
        self._rows.close()
        self.client.close()


def _names(value: Mapping[str, str] | Sequence[str], what: str) -> dict[str, str]:
    """A tensor -> column mapping; a list of names maps each to itself."""
    if isinstance(value, Mapping):
        names = dict(value)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        names = {name: name for name in value}
    else:
        raise XclientValueError(f"{what}: expected a mapping tensor -> column or a list of names, got {value!r}")
    if not names or not all(isinstance(k, str) and isinstance(v, str) for k, v in names.items()):
        raise XclientValueError(f"{what}: expected a non-empty mapping of str to str, got {value!r}")
    return names


def _input(spec: TensorSpec | None, values: list[Any]) -> Any:
    """A column's values as one batched input: a scalar per row gets the ``[1]`` axis its dims ask for;
    text stays Python values (the client codes str as UTF-8), numbers take the input's dtype."""
    values = [v.tolist() if isinstance(v, np.ndarray) else v for v in values]
    if spec is not None and spec.shape == (1,) and not any(isinstance(v, list) for v in values):
        values = [[v] for v in values]
    if spec is None or spec.is_bytes:
        return values
    return np.asarray(values, dtype=spec.dtype)


def _split_outputs(outputs: Mapping[str, np.ndarray], count: int) -> list[dict[str, Any]]:
    return [{name: array[i] for name, array in outputs.items()} for i in range(count)]


def _cell(value: Any, decode: bool) -> Any:
    """One output row as a column cell: ``[1]`` becomes its scalar, bytes text (``decode``), arrays lists."""
    array = np.asarray(value)
    if array.shape == (1,):
        array = array.reshape(())
    if array.dtype == object or array.dtype.kind == "S":
        items = array.tolist()
        convert = (lambda b: b.decode("utf-8", errors="replace") if isinstance(b, bytes) else b) if decode else None
        return _map_nested(items, convert) if convert else items
    return array.tolist()


def _map_nested(value: Any, convert: Callable[[Any], Any]) -> Any:
    if isinstance(value, list):
        return [_map_nested(v, convert) for v in value]
    return convert(value)
