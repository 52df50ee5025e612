"""The replica set: one client over several Triton servers (replicas), under the transports.

A client given several URLs (``ModelClient(["grpc://a:8001", "grpc://b:8001"], "m")``), or a
``dns+grpc://name:8001`` URL, gets a :class:`FleetTransport` (:class:`AsyncFleetTransport` for the
asyncio clients) instead of a single-URL transport. Each replica keeps its own single-URL transport
(:class:`~._transport.HttpTransport`, :class:`~._transport.GrpcTransport`,
:class:`~._transport.AsyncTransport`): one connection (channel, or HTTP connection per thread) per
replica, so nothing is pinned to one server. A client with one URL never comes here: its hot path
is unchanged.

Every rule lives in :class:`ReplicaSet`, without I/O: each call is a generator that yields the steps
it needs (:class:`_Run` an Op on one replica, :class:`_Resolve` a name) and gets their results back;
:func:`_drive` runs them in the caller's thread, :func:`_drive_async` awaits them. The rules:

- **Balancing**: least outstanding requests, between two replicas drawn at random among those up
  (ties broken at random).
- **Failover**: a failure that never reached the server (``error.retryable``: refused, not written)
  is sent again at once on another replica, each replica at most once per call, while the call's
  deadline lasts. A failure that may have reached the server (the connection lost under the request)
  goes to another replica only with ``retry_unsafe=True`` (for idempotent models). When every replica
  failed, the error lists each one and what it said; it is ``retryable`` when every failure was, so
  the user's ``retries`` (:class:`~._retry.RetryPolicy`, the one backoff rule) send the call again,
  over the whole set, after the policy's pause. Streams fail over the same way, before their first
  response only (:mod:`._decoupled`).
- **Health**: a replica that cannot be reached (ServerUnavailableError) is "down"; it is probed with
  its readiness endpoint (the model's, for a model client) after 0.2 s, then after twice as long each
  time it fails, up to 5 s. The **circuit breaker**: after 5 consecutive failures (unreachable or
  timed out) it is "open", and gets no request for 10 s; then one readiness probe decides (half-open).
  A probe runs on the call path, by the first call that finds it due, with a deadline of 0.5 s:
  there is no background thread, so nothing can hang the interpreter's exit or outlive the client,
  and a probe of a refused port costs the call about a millisecond. When no replica is up, a call
  tries those that are down anyway (a refused connection fails fast) rather than fail unheard.
- **Consistency**: the config a model client fetched is the fleet's reference; the first time each
  other replica serves that client (an inference or a stream), its config is fetched and compared:
  inputs (names, dtypes, shapes), outputs, ``max_batch_size`` and decoupled must agree, or the call
  raises :class:`~Xclient.exceptions.IncompatibleModelError` naming both replicas and the difference.
- **Management**: ``load_model`` and ``unload_model`` (:class:`~Xclient.client.ServerClient`) go to every
  listed replica, one after another; the other calls go to one replica, as above.
- **DNS**: a ``dns+`` URL is resolved (``getaddrinfo``, every address) on first use and again every
  ``dns_refresh_s`` (30 s) by the first call that finds it due; an address that left the name gets no
  new request, and a failed resolution keeps the last list.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, Generic, Literal, TypeVar

from ..exceptions import IncompatibleModelError, ServerUnavailableError, XclientError, XclientTimeoutError
from ._config import ModelConfig
from ._transport import (
    MODEL_INFER_OP,
    AsyncTransport,
    CallContext,
    Op,
    TlsOptions,
    Transport,
    make_transport,
    protocol_calls,
    translate_error,
)
from ._urls import DnsName, ServerUrl, Target

#: The first readiness probe of a replica that went down, after this long; then twice as long each time.
PROBE_INITIAL_BACKOFF_S = 0.2
PROBE_MAX_BACKOFF_S = 5.0
#: The deadline of one readiness probe (it runs on a call's path).
PROBE_TIMEOUT_S = 0.5
#: The deadline of a replica's config check (a unary call's own deadline, when shorter).
CONFIG_TIMEOUT_S = 5.0
#: The circuit breaker opens after this many consecutive failures, for this long.
BREAKER_FAILURES = 5
BREAKER_COOLDOWN_S = 10.0
#: The weight of the newest answer in a replica's latency average.
_LATENCY_WEIGHT = 0.2

#: What a failed step says, per Op method (the client's own translation says the same words).
_ACTIONS = {
    MODEL_INFER_OP: "inference",
    "is_server_live": "checking server liveness",
    "is_server_ready": "checking server readiness",
    "is_model_ready": "checking model readiness",
    "get_model_config": "fetching the model config",
    "get_server_metadata": "reading the server metadata",
    "get_model_repository_index": "listing the models",
    "load_model": "loading",
    "unload_model": "unloading",
    "get_inference_statistics": "reading the statistics",
}

#: The calls every replica gets (their answer is None), so that replicas keep serving the same models.
_EVERYWHERE = ("load_model", "unload_model")

T = TypeVar("T", bound="Transport | AsyncTransport")
State = Literal["up", "down", "open"]


@dataclasses.dataclass(frozen=True)
class ReplicaState:
    """What ``client.replicas`` shows of one replica."""

    url: str
    """The replica's URL, normalized (``grpc://10.0.0.7:8001``)."""
    state: State
    """``up``; ``down``: unreachable, probed again with backoff; ``open``: the circuit breaker is open."""
    outstanding: int
    """Requests of this client on it now."""
    latency_ms: float | None
    """A moving average of its recent answers (None: none yet)."""
    failures: int
    """Consecutive failures."""
    last_error: str | None
    """What its last failure said."""


class Replica(Generic[T]):
    """One server of the set and its transport; its counters change under the set's lock."""

    __slots__ = (
        "url", "transport", "state", "outstanding", "latency_s", "failures", "last_error",
        "retry_at", "backoff", "probing", "checked", "listed",
    )  # fmt: skip

    def __init__(self, url: ServerUrl, transport: T) -> None:
        self.url = url
        self.transport = transport
        self.state: State = "up"
        self.outstanding = 0
        self.latency_s: float | None = None
        self.failures = 0
        self.last_error: str | None = None
        self.retry_at = 0.0  # when a replica that is not up is probed next
        self.backoff = 0  # the probes that failed since it went down
        self.probing = False  # a call is probing it now
        self.checked = False  # its model config was compared with the reference
        self.listed = True  # False: its address left the dns+ name (kept until close, then closed)

    def snapshot(self) -> ReplicaState:
        latency = None if self.latency_s is None else self.latency_s * 1000.0
        return ReplicaState(str(self.url), self.state, self.outstanding, latency, self.failures, self.last_error)


@dataclasses.dataclass(frozen=True)
class _Run(Generic[T]):
    """A step: run ``op`` on ``replica``'s transport."""

    replica: Replica[T]
    op: Op
    timeout_s: float


@dataclasses.dataclass(frozen=True)
class _Resolve:
    """A step: resolve ``host`` (every address of it)."""

    host: str
    port: int


@dataclasses.dataclass(frozen=True)
class _Failed:
    """What a step that raised sends back into its flow (not thrown in: no traceback through the flow)."""

    exc: BaseException


Step = _Run[T] | _Resolve
Flow = Generator[Step[T], Any, Any]


def fails_over(error: XclientError, retry_unsafe: bool) -> bool:
    """The failover rule: may a call that failed this way go to another replica?"""
    return error.retryable or (retry_unsafe and isinstance(error, ServerUnavailableError))


class ReplicaSet(Generic[T]):
    """The replicas of one client, their state, and every fleet rule (see the module docstring)."""

    def __init__(
        self,
        targets: Iterable[Target],
        make: Callable[[ServerUrl], T],
        ctx: CallContext,
        headers: Mapping[str, str] | None,
        *,
        model: tuple[str, str] | None,
        retry_unsafe: bool,
        dns_refresh_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self._targets = tuple(targets)
        self._make = make
        self._ctx = ctx
        self._headers = headers
        self._model = model
        self._retry_unsafe = retry_unsafe
        self._dns_refresh_s = dns_refresh_s
        self._random = rng or random.Random()
        self._lock = threading.Lock()
        self._all: dict[ServerUrl, Replica[T]] = {}  # every replica ever made, closed with the set
        self._static = [t for t in self._targets if isinstance(t, ServerUrl)]
        self._names = [t for t in self._targets if isinstance(t, DnsName)]
        self._resolved: dict[DnsName, list[ServerUrl]] = {}
        self._dns_error: str | None = None  # why the last resolution failed
        self._dns_due = 0.0 if self._names else float("inf")
        self._reference: tuple[Replica[T], ModelConfig] | None = None
        self.listed: list[Replica[T]] = []
        self._relist()

    # -- what the clients see ----------------------------------------------------------------------

    def states(self) -> tuple[ReplicaState, ...]:
        with self._lock:
            return tuple(r.snapshot() for r in self.listed)

    def transports(self) -> list[T]:
        """Every replica's transport, listed or not: what closing the set closes."""
        with self._lock:
            return [r.transport for r in self._all.values()]

    # -- one call ------------------------------------------------------------------------------------

    def call(self, op: Op, timeout_s: float, info: Any = None) -> Flow[T]:
        """Run ``op`` on one replica, failing over per :func:`fails_over`; returns its parsed answer.
        Loading and unloading a model go to every replica instead (:meth:`_everywhere`)."""
        yield from self._maintain()
        if op.method in _EVERYWHERE:
            return (yield from self._everywhere(op, timeout_s, info))
        deadline = time.monotonic() + timeout_s
        tried: list[tuple[Replica[T], XclientError]] = []
        while True:
            replica = self._pick(r for r, _ in tried)
            if replica is None:
                raise self.exhausted(tried, op.method)
            if op.method == MODEL_INFER_OP and not replica.checked:
                unreachable = yield from self._check_config(replica, min(timeout_s, CONFIG_TIMEOUT_S))
                if unreachable is not None:
                    tried.append((replica, unreachable))
                    continue
            if info is not None:
                info.url = str(replica.url)
            result = yield from self._attempt(replica, op, timeout_s)
            if not isinstance(result, _Failed):
                if op.method == "get_model_config" and self._model is not None and tuple(op.args) == self._model:
                    self._learn_config(replica, result)
                return result
            error = self._failed(replica, result.exc, op, timeout_s)
            if not fails_over(error, self._retry_unsafe):
                raise error
            tried.append((replica, error))
            if time.monotonic() >= deadline:
                raise self.exhausted(tried, op.method)

    def _everywhere(self, op: Op, timeout_s: float, info: Any) -> Flow[T]:
        """Run ``op`` on every listed replica (one after another: a model is loaded or unloaded on each,
        so they keep serving the same models); every failure is raised as one error naming each."""
        failures: list[tuple[Replica[T], XclientError]] = []
        with self._lock:
            replicas = list(self.listed)
        for replica in replicas:
            if info is not None:
                info.url = str(replica.url)
            result = yield from self._attempt(replica, op, timeout_s)
            if isinstance(result, _Failed):
                failures.append((replica, self._failed(replica, result.exc, op, timeout_s)))
        if not failures:
            return None
        if len(replicas) == 1:
            raise failures[0][1]
        first = failures[0][1]
        lines = "; ".join(f"{r.url}: {e.message}" for r, e in failures)
        raise type(first)(
            f"{_ACTIONS.get(op.method, op.method)[:1].upper()}{_ACTIONS.get(op.method, op.method)[1:]} failed on "
            f"{len(failures)} of {len(replicas)} replicas: {lines}",
            model=first.model,
            status=first.status,
            server_message=first.server_message,
        )

    def open_stream(self, tried: Iterable[Replica[T]]) -> Flow[T]:
        """The replica a stream goes out on (not one of ``tried``), counted as outstanding until
        :meth:`stream_ended`; its config is checked first. Raises when none is left."""
        yield from self._maintain()
        tried = list(tried)
        failures: list[tuple[Replica[T], XclientError]] = []
        while True:
            replica = self._pick([*tried, *(r for r, _ in failures)])
            if replica is None:
                raise self.exhausted(failures, "stream")
            if not replica.checked:
                unreachable = yield from self._check_config(replica, CONFIG_TIMEOUT_S)
                if unreachable is not None:
                    failures.append((replica, unreachable))
                    continue
            with self._lock:
                replica.outstanding += 1
            return replica

    def stream_ended(self, replica: Replica[T], error: XclientError | None) -> None:
        with self._lock:
            replica.outstanding -= 1
        if error is None:
            self._succeeded(replica, None)
        else:
            self._record(replica, error)

    def fails_over(self, error: XclientError) -> bool:
        return fails_over(error, self._retry_unsafe)

    def has_other(self, tried: Iterable[Replica[T]]) -> bool:
        """Is there a replica left to try, not one of ``tried``?"""
        return self._pick(tried) is not None

    def exhausted(self, tried: list[tuple[Replica[T], XclientError]], method: str) -> XclientError:
        """The error of a call that no replica served: each replica, and what it said."""
        said = {r.url: e for r, e in tried}
        lines = []
        with self._lock:
            replicas = list(dict.fromkeys([*self.listed, *(r for r, _ in tried)]))
        for replica in replicas:
            error = said.get(replica.url)
            if error is not None:
                lines.append(f"{replica.url}: {error.message}")
            elif replica.state == "open":
                lines.append(f"{replica.url}: not tried, circuit breaker open (last error: {replica.last_error})")
            elif replica.state == "down":
                lines.append(f"{replica.url}: not tried, down (last error: {replica.last_error})")
            else:
                lines.append(f"{replica.url}: not tried, the call's deadline passed")
        if not replicas:
            names = ", ".join(str(n) for n in self._names)
            lines.append(f"{names}: resolves to no address" + (f" ({self._dns_error})" if self._dns_error else ""))
        what = _ACTIONS.get(method, method)
        where = f" for model {self._ctx.model!r}" if self._ctx.model else ""
        errors = list(said.values())
        return ServerUnavailableError(
            f"Every replica failed ({what}{where}): " + "; ".join(lines),
            model=self._ctx.model,
            status=errors[-1].status if errors else None,
            server_message=errors[-1].server_message if errors else None,
            # Nothing was sent when nothing was tried (a name that did not resolve): a retry may find it.
            retryable=all(e.retryable for e in errors),
        )

    # -- the rules ------------------------------------------------------------------------------------

    def _pick(self, tried: Iterable[Replica[T]]) -> Replica[T] | None:
        """Least outstanding of two random replicas that are up; when none is up, the down one to be
        probed soonest (an open breaker gets nothing until its probe)."""
        excluded = set(map(id, tried))
        with self._lock:
            up = [r for r in self.listed if r.state == "up" and id(r) not in excluded]
            if not up:
                down = [r for r in self.listed if r.state == "down" and id(r) not in excluded]
                return min(down, key=lambda r: r.retry_at) if down else None
            if len(up) == 1:
                return up[0]
            a, b = self._random.sample(up, 2)
            return a if a.outstanding <= b.outstanding else b

    def _attempt(self, replica: Replica[T], op: Op, timeout_s: float) -> Flow[T]:
        """One Op on one replica, counted as outstanding (also when the caller leaves mid-call)."""
        with self._lock:
            replica.outstanding += 1
        started = time.perf_counter()
        try:
            result = yield _Run(replica, op, timeout_s)
        finally:
            with self._lock:
                replica.outstanding -= 1
        if not isinstance(result, _Failed):
            self._succeeded(replica, time.perf_counter() - started)
        return result

    def _failed(self, replica: Replica[T], exc: BaseException, op: Op, timeout_s: float) -> XclientError:
        model = self._ctx.model or (op.args[0] if op.args and isinstance(op.args[0], str) else None)
        ctx = dataclasses.replace(self._ctx, url=replica.url, model=model)
        error = translate_error(exc, ctx, _ACTIONS.get(op.method, op.method), timeout_s)
        self._record(replica, error)
        return error

    def _record(self, replica: Replica[T], error: XclientError) -> None:
        """A failure of ``replica``: unreachable takes it down, a timeout counts; both may open its breaker."""
        if not isinstance(error, (ServerUnavailableError, XclientTimeoutError)):
            return  # the model's or the request's fault, not the replica's
        with self._lock:
            replica.failures += 1
            replica.last_error = error.message
            now = time.monotonic()
            if replica.failures >= BREAKER_FAILURES:
                replica.state = "open"
                replica.retry_at = now + BREAKER_COOLDOWN_S
            elif isinstance(error, ServerUnavailableError):
                if replica.state == "up":
                    replica.backoff = 0
                replica.state = "down"
                replica.retry_at = now + _probe_backoff(replica.backoff)

    def _succeeded(self, replica: Replica[T], latency_s: float | None) -> None:
        with self._lock:
            replica.state = "up"
            replica.failures = 0
            replica.backoff = 0
            if latency_s is not None:
                old = replica.latency_s
                replica.latency_s = latency_s if old is None else old + _LATENCY_WEIGHT * (latency_s - old)

    def _maintain(self) -> Flow[T]:
        """What the first call to find it due does before its own request: resolve the dns+ names
        again, probe the replicas whose backoff (or breaker cool-down) has passed."""
        now = time.monotonic()
        if self._dns_due <= now or (self._names and not self._resolved):
            yield from self._resolve(now)
        for replica in self._due_probes(now):
            yield from self._probe(replica)

    def _due_probes(self, now: float) -> list[Replica[T]]:
        with self._lock:
            due = [r for r in self.listed if r.state != "up" and not r.probing and r.retry_at <= now]
            for replica in due:
                replica.probing = True
        return due

    def _probe(self, replica: Replica[T]) -> Flow[T]:
        calls: Any = replica.transport.calls
        if self._model is not None:
            op = calls.model_ready(*self._model, timeout_s=PROBE_TIMEOUT_S, headers=self._headers)
        else:
            op = calls.server_ready(timeout_s=PROBE_TIMEOUT_S, headers=self._headers)
        try:
            ready = yield _Run(replica, op, PROBE_TIMEOUT_S)
        finally:
            replica.probing = False
        if ready is True:
            self._succeeded(replica, None)
            return
        with self._lock:
            replica.backoff += 1
            if replica.state == "open":
                replica.retry_at = time.monotonic() + BREAKER_COOLDOWN_S
            else:
                replica.retry_at = time.monotonic() + _probe_backoff(replica.backoff)
            if isinstance(ready, _Failed):
                replica.last_error = f"readiness probe: {type(ready.exc).__name__}: {ready.exc}"
            else:
                replica.last_error = "readiness probe: not ready"

    def _resolve(self, now: float) -> Flow[T]:
        first = not self._resolved
        with self._lock:
            if not first and self._dns_due > now:
                return  # another call claimed it
            self._dns_due = now + self._dns_refresh_s
        for name in self._names:
            answer = yield _Resolve(name.url.host, name.url.port)
            if isinstance(answer, _Failed):
                self._dns_error = f"{type(answer.exc).__name__}: {answer.exc}"
                if first and name not in self._resolved:
                    self._dns_due = 0.0  # nothing known yet: the next call tries again
                continue  # keep the last list
            hosts = list(dict.fromkeys(info[4][0] for info in answer))
            self._resolved[name] = [dataclasses.replace(name.url, host=h) for h in hosts]
        with self._lock:
            self._relist()

    def _relist(self) -> None:
        """The listed replicas: the static URLs and the addresses of every name (under the lock)."""
        urls = list(dict.fromkeys([*self._static, *(u for n in self._names for u in self._resolved.get(n, []))]))
        for replica in self._all.values():
            replica.listed = False
        listed = []
        for url in urls:
            known = self._all.get(url)
            if known is None:
                known = self._all[url] = Replica(url, self._make(url))
            known.listed = True
            listed.append(known)
        self.listed = listed

    # -- consistency ------------------------------------------------------------------------------------

    def _check_config(self, replica: Replica[T], timeout_s: float) -> Flow[T]:
        """Fetch ``replica``'s model config and compare it with the reference (the first config seen
        becomes it). Returns the error when the replica could not be asked; raises on a mismatch."""
        if self._model is None:
            replica.checked = True
            return None
        calls: Any = replica.transport.calls
        op = calls.model_config(*self._model, timeout_s=timeout_s, headers=self._headers)
        result = yield from self._attempt(replica, op, timeout_s)
        if isinstance(result, _Failed):
            error = self._failed(replica, result.exc, op, timeout_s)
            if fails_over(error, retry_unsafe=False):
                return error
            raise error
        self._learn_config(replica, result)
        return None

    def _learn_config(self, replica: Replica[T], raw: Any) -> None:
        config = ModelConfig.from_dict(raw)
        reference = self._reference
        if reference is None or reference[0] is replica:
            self._reference = (replica, config)
            replica.checked = True
            return
        difference = config_difference(reference[1], config)
        if difference:
            raise IncompatibleModelError(
                f"Replicas {reference[0].url} and {replica.url} serve model {self._ctx.model!r} with different "
                f"configs: {difference} (on {reference[0].url} vs on {replica.url}); "
                "every replica must serve the same one",
                model=self._ctx.model,
            )
        replica.checked = True


def config_difference(a: ModelConfig, b: ModelConfig) -> str:
    """What differs between two replicas' configs of one model, in the terms a client depends on
    (``""``: nothing)."""
    if a.decoupled != b.decoupled:
        return f"decoupled {a.decoupled} vs {b.decoupled}"
    if a.max_batch_size != b.max_batch_size:
        return f"max_batch_size {a.max_batch_size} vs {b.max_batch_size}"
    for kind, left, right in (("input", a.inputs, b.inputs), ("output", a.outputs, b.outputs)):
        names_a, names_b = [t.name for t in left], [t.name for t in right]
        if names_a != names_b:
            return f"{kind}s {names_a} vs {names_b}"
        for x, y in zip(left, right, strict=True):
            if x.dtype != y.dtype or x.triton_dtype != y.triton_dtype:
                return f"{kind} {x.name!r} dtype {x.triton_dtype or x.dtype} vs {y.triton_dtype or y.dtype}"
            if x.shape != y.shape:
                return f"{kind} {x.name!r} shape {list(x.shape)} vs {list(y.shape)}"
            if x.optional != y.optional:
                return f"{kind} {x.name!r} optional {x.optional} vs {y.optional}"
    return ""


def _probe_backoff(failed_probes: int) -> float:
    return min(PROBE_INITIAL_BACKOFF_S * 2.0 ** min(failed_probes, 32), PROBE_MAX_BACKOFF_S)


# -- the I/O twins: a flow run in the caller's thread, or awaited ----------------------------------------


def _drive(flow: Flow[Transport]) -> Any:
    """Run a :class:`ReplicaSet` flow in this thread."""
    try:
        step = next(flow)
        while True:
            result: Any
            try:
                if isinstance(step, _Run):
                    result = step.replica.transport.run(step.op, step.timeout_s)
                else:
                    result = socket.getaddrinfo(step.host, step.port, type=socket.SOCK_STREAM)
            except Exception as e:  # handed to the flow, which decides
                result = _Failed(e)
            step = flow.send(result)
    except StopIteration as stop:
        return stop.value
    finally:
        flow.close()  # a caller that left mid-call (KeyboardInterrupt): its counts are given back


async def _drive_async(flow: Flow[AsyncTransport]) -> Any:
    """Await a :class:`ReplicaSet` flow (the same steps as :func:`_drive`)."""
    try:
        step = next(flow)
        while True:
            result: Any
            try:
                if isinstance(step, _Run):
                    result = await step.replica.transport.run(step.op, step.timeout_s)
                else:
                    loop = asyncio.get_running_loop()
                    result = await loop.getaddrinfo(step.host, step.port, type=socket.SOCK_STREAM)
            except Exception as e:  # handed to the flow, which decides
                result = _Failed(e)
            step = flow.send(result)
    except StopIteration as stop:
        return stop.value
    finally:
        flow.close()  # a cancelled task: its counts are given back


@dataclasses.dataclass(frozen=True)
class FleetOptions:
    """What a fleet transport needs from its client."""

    targets: tuple[Target, ...]
    tls: TlsOptions
    ctx: CallContext
    headers: Mapping[str, str] | None
    model: tuple[str, str] | None
    retry_unsafe: bool
    dns_refresh_s: float

    def replica_set(self, make: Callable[[ServerUrl], T]) -> ReplicaSet[T]:
        return ReplicaSet(
            self.targets,
            make,
            self.ctx,
            self.headers,
            model=self.model,
            retry_unsafe=self.retry_unsafe,
            dns_refresh_s=self.dns_refresh_s,
        )


_Transport = TypeVar("_Transport", Transport, AsyncTransport)


def _impatient(transport: _Transport) -> _Transport:
    """A replica's gRPC calls never wait for a lost connection to come back (a single-URL client's do,
    within their deadline, to ride out a restart): over several replicas, another one serves at once."""
    stubs = getattr(transport, "stubs", None) if isinstance(transport, Transport) else None
    if stubs is not None:
        stubs.patient = False
    if isinstance(transport, AsyncTransport):
        transport.patient = False
    return transport


class FleetTransport(Transport):
    """A sync transport over a :class:`ReplicaSet` of single-URL transports (what ``run`` and
    ``close`` mean is unchanged; ``info.url`` says which replica served the last attempt)."""

    def __init__(self, options: FleetOptions) -> None:
        self.url = options.ctx.url
        self.tls = options.tls
        self.calls = protocol_calls(self.url)
        self.fleet: ReplicaSet[Transport] = options.replica_set(
            lambda url: _impatient(make_transport(url, options.tls))
        )

    def run(self, op: Op, timeout_s: float, info: Any = None) -> Any:
        return _drive(self.fleet.call(op, timeout_s, info))

    def open_stream(self, tried: Iterable[Replica[Transport]]) -> Replica[Transport]:
        """The replica for a new stream (see :meth:`ReplicaSet.open_stream`)."""
        return _drive(self.fleet.open_stream(tried))  # type: ignore[no-any-return]

    def close(self) -> None:
        for transport in self.fleet.transports():
            transport.close()


class AsyncFleetTransport(AsyncTransport):
    """The asyncio twin of :class:`FleetTransport`, over :class:`~._transport.AsyncTransport` replicas."""

    def __init__(self, options: FleetOptions) -> None:  # noqa: D107 - no single-URL state: super() not called
        self.url = options.ctx.url
        self.tls = options.tls
        self.calls = protocol_calls(self.url)
        self.fleet: ReplicaSet[AsyncTransport] = options.replica_set(
            lambda url: _impatient(AsyncTransport(url, options.tls))
        )

    async def run(self, op: Op, timeout_s: float, info: Any = None) -> Any:
        return await _drive_async(self.fleet.call(op, timeout_s, info))

    async def open_stream(self, tried: Iterable[Replica[AsyncTransport]]) -> Replica[AsyncTransport]:
        return await _drive_async(self.fleet.open_stream(tried))  # type: ignore[no-any-return]

    async def close(self) -> None:
        for transport in self.fleet.transports():
            await transport.close()
