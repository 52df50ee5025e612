"""What :class:`~Xclient.MetaLMEmbeddings` and :class:`~Xclient.MetaLMRerank` share: the connection
settings (pydantic fields with env-var defaults), clients made on first use and reused, and the
batching plan, written once and run by threads (sync) or tasks (asyncio).

A plan is a generator (like the base clients' readiness flows): it yields :data:`CONFIG` to get the
model config, then a list of :class:`Request`\\ s, and gets back their outputs in the same order.
:meth:`TritonAdapter._run` answers with one :class:`~Xclient.client.ModelClient` and a thread pool,
:meth:`TritonAdapter._arun` with an :class:`~Xclient.client.AsyncioModelClient` on the running loop;
so contract detection, splitting, decoding and merging cannot differ between sync and async.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import weakref
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

import numpy as np
from typing_extensions import Self

try:
    from pydantic import ConfigDict, Field, PrivateAttr, field_validator
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "MetaLMEmbeddings and MetaLMRerank need the 'langchain' extra: pip install 'llmops-xclient[langchain]'"
    ) from None

from ._langchain_fields import ConnectionFields
from .client import AsyncioModelClient, ModelClient, ModelConfig

T = TypeVar("T")

#: Yielded by a plan to get the model config.
CONFIG = object()

#: A plan: yields CONFIG (sent a ModelConfig) or a list of Requests (sent their outputs, in order).
Plan = Generator[Any, Any, T]

#: The default of ``max_concurrency``: requests in flight at once per instance (and event loop).
DEFAULT_MAX_CONCURRENCY = 4


@dataclasses.dataclass(frozen=True)
class Request:
    """One inference a plan needs: the model's inputs in config order (None: left out), sent with
    ``infer_batch`` (``batch``, the first axis is the batch) or ``infer_sample``; ``size`` is how many
    texts it carries, for the progress bar."""

    args: tuple[Any, ...]
    batch: bool
    size: int


def send(client: ModelClient | AsyncioModelClient, request: Request) -> Any:
    """Start ``request`` on ``client``: its outputs (sync) or an awaitable of them (asyncio).

    Inputs go positionally: an input named ``headers`` or ``parameters`` would clash with the
    clients' keyword arguments."""
    call = client.infer_batch if request.batch else client.infer_sample
    return call(*request.args)


def split(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``, in order."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def to_floats(array: np.ndarray) -> list[Any]:
    """Python floats (LangChain checks ``isinstance(x, float)``; np.float32 fails), FP16 included."""
    return np.asarray(array, dtype=np.float64).tolist()


class _Progress:
    """A tqdm bar over the texts of a plan's requests, or nothing when ``show_progress`` is off."""

    def __init__(self, enabled: bool, requests: Sequence[Request], description: str) -> None:
        self._bar = None
        if enabled and requests:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=sum(r.size for r in requests), desc=description, unit="text")

    def update(self, request: Request) -> None:
        if self._bar is not None:
            self._bar.update(request.size)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _Connections:
    """An adapter's clients, made on first use: one sync client and its thread pool, one async client
    (and concurrency limit) per event loop, and the model config once known. Copies start empty."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client: ModelClient | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.aclients: weakref.WeakKeyDictionary[Any, tuple[AsyncioModelClient, asyncio.Semaphore]] = (
            weakref.WeakKeyDictionary()
        )
        self.config: ModelConfig | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> _Connections:
        return _Connections()


def _advance(plan: Plan[T], value: Any) -> tuple[bool, Any]:
    """Send ``value`` into the plan: (False, its next step) or (True, its result)."""
    try:
        return False, plan.send(value)
    except StopIteration as stop:
        return True, stop.value


class TritonAdapter(ConnectionFields):
    """Connection settings and the plan runners; MetaLMEmbeddings and MetaLMRerank add their contract.

    The connection fields are every LangChain class's (:class:`~Xclient._langchain_fields.ConnectionFields`:
    ``base_url``/``server_url``, ``model``/``model_name``, ``model_version``, ``timeout`` (also
    ``inference_timeout_s``), ``init_timeout_s``, ``max_retries``, ``api_key``...).

    Clients are made on first use (never in the constructor), with the settings of that moment, and
    reused: one thread-safe ModelClient for the sync methods, whose concurrent batches run on a pool
    of ``max_concurrency`` threads, and one AsyncioModelClient per event loop for the async methods.
    The model config is fetched once and handed to every later client.
    """

    model_config = ConfigDict(populate_by_name=True, extra="forbid", protected_namespaces=())

    max_batch_size: int | None = Field(default=None, gt=0)
    """Texts per request; None: the model's ``max_batch_size`` (see each class for details)."""
    max_concurrency: int = Field(default=DEFAULT_MAX_CONCURRENCY, gt=0)
    """Requests in flight at once, so the server's dynamic batcher stays busy; input order is kept."""
    show_progress: bool = False
    """A tqdm progress bar over the texts (needs ``tqdm``); for long runs."""

    _conn: _Connections = PrivateAttr(default_factory=lambda: _Connections())

    @field_validator("show_progress")
    @classmethod
    def _tqdm_installed(cls, value: bool) -> bool:
        if value:
            try:
                import tqdm  # noqa: F401
            except ImportError:
                raise ImportError("show_progress=True needs tqdm: pip install tqdm") from None
        return value

    # -- clients ---------------------------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        return {**self.client_options(), "model_config": self._conn.config}

    def _sync_client(self) -> tuple[ModelClient, ThreadPoolExecutor]:
        conn = self._conn
        with conn.lock:
            if conn.client is None:
                conn.client = ModelClient(self.client_url, self.model, **self._client_options())
            if conn.pool is None:
                conn.pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix=type(self).__name__)
            return conn.client, conn.pool

    def _async_client(self) -> tuple[AsyncioModelClient, asyncio.Semaphore]:
        """This event loop's client: asyncio connections belong to the loop that made them."""
        loop = asyncio.get_running_loop()
        entry = self._conn.aclients.get(loop)
        if entry is None:
            client = AsyncioModelClient(self.client_url, self.model, **self._client_options())
            entry = self._conn.aclients[loop] = (client, asyncio.Semaphore(self.max_concurrency))
        return entry

    def __copy__(self) -> Self:
        """A copy (``model_copy``) makes its own clients: its settings may differ."""
        copied = super().__copy__()
        copied._conn = _Connections()
        return copied

    def close(self) -> None:
        """Close the sync client and its threads. Async clients: :meth:`aclose`. Later calls reconnect."""
        conn = self._conn
        with conn.lock:
            client, pool, conn.client, conn.pool = conn.client, conn.pool, None, None
        if pool is not None:
            pool.shutdown(wait=True)
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close this event loop's async client, and the sync client."""
        entry = self._conn.aclients.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[0].close()
        self.close()

    # -- running a plan ---------------------------------------------------------------------------

    def _run(self, plan: Plan[T], description: str) -> T:
        """Run a plan with the sync client: its requests concurrently on the thread pool."""
        done, step = _advance(plan, None)
        while not done:
            client, pool = self._sync_client()
            if step is CONFIG:
                reply: Any = self._remember(client.model_config)
            else:
                reply = self._infer_all(client, pool, step, description)
            done, step = _advance(plan, reply)
        return step

    async def _arun(self, plan: Plan[T], description: str) -> T:
        """Run a plan with this loop's async client: its requests concurrently as tasks."""
        done, step = _advance(plan, None)
        while not done:
            client, slots = self._async_client()
            if step is CONFIG:
                reply: Any = self._remember(await client.model_config)
            else:
                reply = await self._ainfer_all(client, slots, step, description)
            done, step = _advance(plan, reply)
        return step

    def _remember(self, config: ModelConfig) -> ModelConfig:
        self._conn.config = config
        return config

    def _infer_all(
        self, client: ModelClient, pool: ThreadPoolExecutor, requests: list[Request], description: str
    ) -> list[dict[str, np.ndarray]]:
        progress = _Progress(self.show_progress, requests, description)
        try:
            if len(requests) == 1:  # no thread hop for the common small call
                outputs = send(client, requests[0])
                progress.update(requests[0])
                return [outputs]
            futures: dict[Future[dict[str, np.ndarray]], Request] = {
                pool.submit(send, client, request): request for request in requests
            }
            try:
                for future in as_completed(futures):
                    future.result()  # the first failure stops the run
                    progress.update(futures[future])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            return [future.result() for future in futures]
        finally:
            progress.close()

    async def _ainfer_all(
        self, client: AsyncioModelClient, slots: asyncio.Semaphore, requests: list[Request], description: str
    ) -> list[dict[str, np.ndarray]]:
        progress = _Progress(self.show_progress, requests, description)

        async def one(request: Request) -> dict[str, np.ndarray]:
            async with slots:
                outputs = await send(client, request)
            progress.update(request)
            return outputs

        tasks = [asyncio.ensure_future(one(request)) for request in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            progress.close()
