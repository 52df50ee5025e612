"""What every model client shares: options, headers, the model config, readiness, request coding.

The readiness and config rules are written once, as generators of :class:`Call` and
:class:`Sleep` steps (:meth:`BaseModelClient._init_flow`, :meth:`BaseModelClient._wait_flow`);
a sync client runs them with :func:`run_flow`, an asyncio client awaits each step. So the
rules cannot drift apart between the sync, futures and asyncio clients.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from ..exceptions import (
    ClientClosedError,
    IncompatibleModelError,
    ModelUnavailableError,
    ServerUnavailableError,
    XclientError,
    XclientTimeoutError,
    XclientValueError,
)
from ._auth import build_headers, merge_headers, scoped_headers, secrets_of
from ._coding import PreparedRequest, finish_response, prepare_request
from ._config import ModelConfig
from ._observe import OnRequest, Recorder, RequestInfo, check_hook
from ._options import ClientOptions
from ._retry import DEFAULT_INITIAL_BACKOFF_S, RetryPolicy
from ._transport import AsyncTransport, CallContext, TlsOptions, Transport, make_transport, translate_error
from ._urls import DEFAULT_DNS_REFRESH_S, ServerUrl, parse_targets, serves_replicas, target_url

if TYPE_CHECKING:
    from ._fleet import FleetOptions, ReplicaState

DEFAULT_INIT_TIMEOUT_S = 30.0
DEFAULT_INFERENCE_TIMEOUT_S = 60.0
POLL_TIMEOUT_S = 1.0
_perf_ns = time.perf_counter_ns
#: Statuses of a request the server refused for its inputs (a changed config shows this way).
_REFUSED_INPUT = ("400", "StatusCode.INVALID_ARGUMENT")  # the deadline of one readiness probe while waiting


@dataclasses.dataclass(frozen=True)
class Call:
    """One transport call a flow asks for; ``action`` names it in error messages."""

    method: str
    args: tuple[Any, ...]
    timeout_s: float
    action: str
    headers: Mapping[str, str] | None = None  # None: the client's own headers
    model: str | None = None  # the model the call is about, for errors (None: the client's)


@dataclasses.dataclass(frozen=True)
class Sleep:
    seconds: float


Flow = Generator["Call | Sleep", Any, Any]


def _advance(flow: Flow, send: Any, error: XclientError | None) -> Call | Sleep:
    """The flow's next step (StopIteration carries its result)."""
    return flow.throw(error) if error is not None else flow.send(send)


def _op(transport: Any, step: Call, headers: Mapping[str, str] | None) -> Any:
    headers = step.headers if step.headers is not None else headers
    return getattr(transport.calls, step.method)(*step.args, timeout_s=step.timeout_s, headers=headers)


def _context(ctx: CallContext, step: Call) -> CallContext:
    return dataclasses.replace(ctx, model=step.model) if step.model else ctx


class _Steps:
    """What a flow asks for next, with :func:`retry_pause` applied per step for both runners; a
    failure not retried goes back into the flow."""

    def __init__(self, flow: Flow, ctx: CallContext, retries: int, backoff_s: float) -> None:
        self._flow = flow
        self._ctx = ctx
        self._retries = retries
        self._backoff_s = backoff_s
        self._attempts = 0
        self._pending: list[Call | Sleep] = []
        self.value: Any = None

    def next(self, send: Any, error: XclientError | None) -> Call | Sleep | None:
        """The next step, or None when the flow is done (its result in :attr:`value`)."""
        if self._pending:
            return self._pending.pop(0)
        if error is None:
            self._attempts = 0
        try:
            return _advance(self._flow, send, error)
        except StopIteration as stop:
            self.value = stop.value
            return None

    def failed(self, step: Call, exc: BaseException) -> XclientError | None:
        """The error to hand to the flow, or None when the step is retried."""
        error = translate_error(exc, _context(self._ctx, step), step.action, step.timeout_s)
        pause = retry_pause(error, self._attempts, self._retries, self._backoff_s)
        if pause is None:
            return error
        self._attempts += 1
        self._pending = [Sleep(pause), step]
        return None


def retry_pause(error: XclientError, attempts: int, retries: int, backoff_s: float) -> float | None:
    """The retry rule (:class:`~Xclient.client._retry.RetryPolicy`) for every call and stream: the
    pause before resending after ``attempts`` retries, up to ``retries`` times, the first one about
    ``backoff_s``; None: raise ``error``."""
    return RetryPolicy(retries, backoff_s).pause(error, attempts)


def run_flow(
    flow: Flow,
    transport: Transport,
    ctx: CallContext,
    headers: Mapping[str, str] | None,
    retries: int = 0,
    backoff_s: float = DEFAULT_INITIAL_BACKOFF_S,
) -> Any:
    """Run a flow synchronously: execute each step and send its result (or its error) back."""
    steps = _Steps(flow, ctx, retries, backoff_s)
    send: Any = None
    error: XclientError | None = None
    while (step := steps.next(send, error)) is not None:
        send, error = None, None
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            continue
        try:
            send = transport.run(_op(transport, step, headers), step.timeout_s)
        except Exception as e:  # every failure is translated and handed to the flow
            error = steps.failed(step, e)
    return steps.value


async def run_flow_async(
    flow: Flow,
    transport: AsyncTransport,
    ctx: CallContext,
    headers: Mapping[str, str] | None,
    retries: int = 0,
    backoff_s: float = DEFAULT_INITIAL_BACKOFF_S,
) -> Any:
    """Run a flow in asyncio: the same steps as :func:`run_flow`, awaited."""
    steps = _Steps(flow, ctx, retries, backoff_s)
    send: Any = None
    error: XclientError | None = None
    while (step := steps.next(send, error)) is not None:
        send, error = None, None
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            continue
        try:
            send = await transport.run(_op(transport, step, headers), step.timeout_s)
        except Exception as e:  # every failure is translated and handed to the flow
            error = steps.failed(step, e)
    return steps.value


def closed_error(client: str, model: str | None) -> ClientClosedError:
    """The error of a call on a closed client (``client``: its repr)."""
    return ClientClosedError(f"{client} is closed; create a new client", model=model)


def check_timeout(option: str, value: object) -> float:
    """A positive number of seconds, or an error naming the option."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise XclientValueError(f"{option}: expected a positive number of seconds, got {value!r}")
    return float(value)


class BaseClient:
    """The connection every client shares: the URL, TLS, headers (API key), the secrets to hide,
    the closed state, retries, and the readiness rules. Model clients and server clients build on it.

    ``retries`` (default 0: off) retries a call that failed before anything reached the server
    (connection refused, no route, DNS), after about ``retry_backoff_s``, doubling each time up to
    8 s, with jitter (:class:`~Xclient.client._retry.RetryPolicy`). A call that may have reached the
    server is never retried, nor is a stream that delivered data.

    ``url`` may be a list of URLs (replicas of one protocol), or a ``dns+grpc://name:8001`` URL (every
    address of the name): calls are balanced over them, and fail over from one that cannot be reached
    (see :mod:`Xclient.client._fleet`; ``retry_unsafe=True`` also fails over a call that may have
    reached a replica that then failed, for idempotent models; ``dns_refresh_s``: how often a ``dns+``
    name is resolved again, 30 s)."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        init_timeout_s: float = DEFAULT_INIT_TIMEOUT_S,
        api_key: str | None = None,
        api_key_header: str = "Authorization",
        headers: Mapping[str, str] | None = None,
        ca_certs: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        retries: int = 0,
        retry_backoff_s: float = DEFAULT_INITIAL_BACKOFF_S,
        retry_unsafe: bool = False,
        dns_refresh_s: float = DEFAULT_DNS_REFRESH_S,
        _model: str | None = None,
    ) -> None:
        self._targets = parse_targets(url)
        self._url: ServerUrl = target_url(self._targets[0])
        #: None: one server, a single-URL transport; otherwise the replica set's settings.
        self._fleet_settings = (
            (bool(retry_unsafe), check_timeout("dns_refresh_s", dns_refresh_s))
            if serves_replicas(self._targets)
            else None
        )
        self._init_timeout_s = check_timeout("init_timeout_s", init_timeout_s)
        self._retry_policy = RetryPolicy(retries, retry_backoff_s)  # checks both
        self._retries = retries
        self._retry_backoff_s = float(retry_backoff_s)
        self._tls = TlsOptions(ca_certs=ca_certs, client_cert=client_cert, client_key=client_key).check()
        self._headers = build_headers(api_key, api_key_header, headers, grpc=self._url.protocol == "grpc")
        self._ctx = CallContext(self._url, _model, tuple(secrets_of(self._headers, api_key)))
        self._closed = False

    @property
    def url(self) -> str:
        """The server URL, normalized (``grpc://host:8001``); the first one, for several replicas."""
        return str(self._targets[0])

    @property
    def urls(self) -> tuple[str, ...]:
        """Every URL given (replicas), normalized."""
        return tuple(str(t) for t in self._targets)

    @property
    def replicas(self) -> tuple[ReplicaState, ...]:
        """Each replica's state, outstanding requests and recent latency. Before the first call (and
        always for a client of one URL, which keeps no statistics) each URL given shows as up."""
        fleet = getattr(getattr(self, "_transport_obj", None), "fleet", None)
        if fleet is not None:
            return fleet.states()  # type: ignore[no-any-return]
        from ._fleet import ReplicaState

        return tuple(ReplicaState(url, "up", 0, None, 0, None) for url in self.urls)

    def _fleet_options(self) -> FleetOptions | None:
        """What a fleet transport needs, or None: one URL."""
        if self._fleet_settings is None:
            return None
        from ._fleet import FleetOptions

        retry_unsafe, dns_refresh_s = self._fleet_settings
        return FleetOptions(
            self._targets, self._tls, self._ctx, self._headers, self._fleet_model(), retry_unsafe, dns_refresh_s
        )

    def _fleet_model(self) -> tuple[str, str] | None:
        return None

    def _new_transport(self) -> Transport:
        options = self._fleet_options()
        if options is None:
            return make_transport(self._url, self._tls)
        from ._fleet import FleetTransport

        return FleetTransport(options)

    def _new_async_transport(self) -> AsyncTransport:
        options = self._fleet_options()
        if options is None:
            return AsyncTransport(self._url, self._tls)
        from ._fleet import AsyncFleetTransport

        return AsyncFleetTransport(options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._shown_url!r})"

    @property
    def _shown_url(self) -> str | list[str]:
        """What a repr shows: the URL, or the list of the replicas' URLs."""
        return self.url if len(self._targets) == 1 else list(self.urls)

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _closed_error(self) -> ClientClosedError:
        return closed_error(repr(self), self._ctx.model)

    def _call_headers(
        self, headers: Mapping[str, str] | None, info: RequestInfo | None = None
    ) -> dict[str, str] | None:
        scoped = scoped_headers()
        merged = merge_headers(self._headers, merge_headers(scoped, headers) if scoped else headers)
        traced = info.headers() if info is not None else None  # a traceparent, when tracing is on
        return merge_headers(merged or {}, traced) if traced else merged

    def _ready_flow(
        self, deadline: float, timeout_s: float, *, model: tuple[str, str] | None, tolerate_unreachable: bool
    ) -> Flow:
        """Poll readiness (the model's, or the server's when ``model`` is None) until the deadline.
        With ``tolerate_unreachable``, a server that is down or starting is waited for too."""
        delay = 0.02
        last_error: XclientError | None = None
        while True:
            # A fixed probe deadline (not "what is left"): HTTP clients are kept per deadline value.
            probe_timeout = min(POLL_TIMEOUT_S, timeout_s)
            try:
                if model:
                    ready = yield Call("model_ready", model, probe_timeout, "checking model readiness")
                else:
                    ready = yield Call("server_ready", (), probe_timeout, "checking server readiness")
            except (ServerUnavailableError, XclientTimeoutError) as e:
                if not tolerate_unreachable:
                    raise
                ready, last_error = False, e
            if ready:
                return
            if time.monotonic() >= deadline:
                what = f"Model {model[0]!r}" + (f" version {model[1]}" if model[1] else "") if model else "The server"
                reason = f" (last error: {last_error.message})" if last_error else ""
                error = ModelUnavailableError if model else ServerUnavailableError
                raise error(
                    f"{what} on {self._url} is not ready after {timeout_s:g} s{reason}",
                    model=model[0] if model else None,
                )
            yield Sleep(min(delay, max(_remaining(deadline), 0.0)))
            delay = min(delay * 2, 0.5)


class BaseModelClient(BaseClient):
    """Options and rules shared by every model client; subclasses only choose how to wait."""

    #: True for the streaming clients, False for the others: a model of the other kind is refused.
    _for_decoupled: bool = False

    def __init__(
        self,
        url: str | Sequence[str],
        model_name: str,
        model_version: str | int | None = None,
        *,
        lazy_init: bool = True,
        inference_timeout_s: float = DEFAULT_INFERENCE_TIMEOUT_S,
        model_config: ModelConfig | Mapping[str, Any] | None = None,
        ensure_model_is_ready: bool = True,
        wait_for_server_on_first_call: bool = False,
        on_request: OnRequest | None = None,
        **connection: Unpack[ClientOptions],
    ) -> None:
        """``connection``: ``init_timeout_s``, ``api_key``, ``api_key_header``, ``headers``,
        ``ca_certs``, ``client_cert``, ``client_key``, ``retries``, ``retry_backoff_s`` (see
        :class:`BaseClient`). ``wait_for_server_on_first_call``: the first call rides out a server
        that is down or still starting (connection refused, not ready), polling with backoff until
        ``init_timeout_s``; an unknown model still fails at once, once the server answers.
        ``on_request``: called with the :class:`~Xclient.client.RequestInfo` of every finished request."""
        if not isinstance(model_name, str) or not model_name:
            raise XclientValueError(f"model_name: expected a non-empty str, got {model_name!r}")
        if model_version is not None and not isinstance(model_version, (str, int)):
            raise XclientValueError(f"model_version: expected a str or int such as '2', got {model_version!r}")
        super().__init__(url, **connection, _model=model_name)
        self._model_name = model_name
        self._model_version: str | None = None if model_version in (None, "") else str(model_version)
        self._lazy_init = lazy_init
        self._inference_timeout_s = check_timeout("inference_timeout_s", inference_timeout_s)
        self._ensure_model_is_ready = ensure_model_is_ready
        self._wait_for_server = bool(wait_for_server_on_first_call)  # until the first call saw it ready
        self._config: ModelConfig | None = None
        self._given_config = model_config is not None
        if model_config is not None:
            self._config = self._check_kind(_as_config(model_config))
        self._ready = False
        self._recorder = Recorder(self.url, self._url.protocol, model_name, self._model_version, check_hook(on_request))

    # -- public, read-only -------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def model_version(self) -> str | None:
        """The version asked for (``"2"``), or None: the server's choice."""
        return self._model_version

    @property
    def last_request_info(self) -> RequestInfo | None:
        """The last request this thread (sync clients) or asyncio task finished on this client, or None."""
        return self._recorder.last()

    def __repr__(self) -> str:
        version = f", model_version={self._model_version!r}" if self._model_version else ""
        return f"{type(self).__name__}({self._shown_url!r}, {self._model_name!r}{version})"

    def _fleet_model(self) -> tuple[str, str] | None:
        return self._model_args()

    # -- shared rules --------------------------------------------------------------------------

    def _check_kind(self, config: ModelConfig) -> ModelConfig:
        if config.decoupled and not self._for_decoupled:
            raise IncompatibleModelError(
                f"Model {self._model_name!r} is decoupled (it streams responses): "
                "use DecoupledModelClient or AsyncioDecoupledModelClient",
                model=self._model_name,
            )
        if self._for_decoupled and not config.decoupled:
            raise IncompatibleModelError(
                f"Model {self._model_name!r} is not decoupled (one response per request): "
                "use ModelClient, FuturesModelClient or AsyncioModelClient",
                model=self._model_name,
            )
        return config

    def _prepare(
        self, config: ModelConfig, args: tuple[Any, ...], kwargs: dict[str, Any], batch: bool
    ) -> PreparedRequest:
        self._check_open()
        return prepare_request(config, args, kwargs, batch=batch)

    def _forget_config(self, error: XclientError) -> None:
        """After the model went away or refused our inputs, fetch its config again on the next
        call (it may have been reloaded with another one): never keep sending a stale mapping.
        A config the user gave is kept: it is never fetched."""
        if not self._given_config and (isinstance(error, ModelUnavailableError) or error.status in _REFUSED_INPUT):
            self._config = None
            self._ready = False

    def _infer_failed(self, error: BaseException) -> XclientError:
        return translate_error(error, self._ctx, "inference", self._inference_timeout_s)

    def _model_args(self) -> tuple[str, str]:
        """The model as the transports take it: the one place where "no version" becomes ``""``."""
        return (self._model_name, self._model_version or "")

    # -- flows ---------------------------------------------------------------------------------

    def _init_flow(self) -> Flow:
        """Fetch the config (once; never when one was given) and check readiness. Fails fast on an
        unknown model or version: the server says so at once, so nothing waits for the timeout."""
        deadline = time.monotonic() + self._init_timeout_s
        if self._wait_for_server:
            yield from self._ready_flow(deadline, self._init_timeout_s, model=None, tolerate_unreachable=True)
            self._wait_for_server = False
        config = self._config
        if config is None:
            raw = yield Call("model_config", self._model_args(), self._init_timeout_s, "fetching the model config")
            config = self._check_kind(ModelConfig.from_dict(raw, version=self.model_version))
        if self._ensure_model_is_ready and not self._ready:
            yield from self._ready_flow(
                deadline, self._init_timeout_s, model=self._model_args(), tolerate_unreachable=False
            )
            self._ready = True
        return config

    def _wait_flow(self, timeout_s: float, *, model: bool) -> Flow:
        """Wait until the server (and, with ``model``, the model) is ready, riding out a server
        that is down or starting. Then fetch the config if it is still missing."""
        deadline = time.monotonic() + timeout_s
        model_args = self._model_args() if model else None
        yield from self._ready_flow(deadline, timeout_s, model=model_args, tolerate_unreachable=True)
        self._ready = self._ready or model
        if model and self._config is None:
            raw = yield Call("model_config", self._model_args(), self._init_timeout_s, "fetching the model config")
            return self._check_kind(ModelConfig.from_dict(raw, version=self.model_version))
        return self._config


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.001)


def _as_config(config: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, Mapping):
        return ModelConfig.from_dict(config)
    raise XclientValueError(
        f"model_config: expected a ModelConfig or Triton's config dict, got {type(config).__name__}"
    )


class Inference:
    """One inference of a model client, coded once (errors before anything is sent); the sync and
    asyncio clients only send :attr:`op` and hand back what came of it. Inference runs without
    flows: once the config is known, a request is one call, plus the retries :func:`retry_pause` allows.
    """

    __slots__ = ("_client", "_request", "op", "timeout_s", "_attempts", "info")

    def __init__(
        self,
        client: BaseModelClient,
        config: ModelConfig,
        call: tuple[tuple[Any, ...], dict[str, Any], bool, Mapping[str, Any] | None, Mapping[str, str] | None],
        calls: Any,
    ) -> None:
        args, kwargs, batch, parameters, headers = call
        self._client = client
        self.info = info = client._recorder.start(False)
        try:
            self._request = client._prepare(config, args, kwargs, batch)
            self.timeout_s = client._inference_timeout_s
            inputs = self._request.inputs
            model = client._model_args()
            self.op = calls.infer(
                *model, inputs, parameters, timeout_s=self.timeout_s, headers=client._call_headers(headers, info),
                request_id=info.request_id,
            )  # fmt: skip
        except BaseException as e:  # refused before anything was sent: still a finished request
            client._recorder.finish(info, e)
            raise
        info.built_ns = _perf_ns()
        self._attempts = 0

    def sent(self) -> RequestInfo:
        """Mark an attempt as sent now; the transport adds the replica's URL to what this returns."""
        info = self.info
        info.sent_ns = _perf_ns()
        info.attempts += 1
        return info

    def done(self, outputs: dict[str, Any]) -> dict[str, Any]:
        info = self.info
        info.responded()
        result = finish_response(outputs, self._request)  # a failure here is reported by failed()
        self._client._recorder.finish(info)
        return result

    def failed(self, exc: Exception) -> float:
        """The pause before sending the request again, or raise the translated error. It is raised
        from None, and ``exc``'s tracebacks are dropped: the error must not keep tritonclient's frames
        (hence its client) alive for as long as the caller keeps it."""
        client = self._client
        error = client._infer_failed(exc)
        pause = retry_pause(error, self._attempts, client._retries, client._retry_backoff_s)
        if pause is None:
            client._forget_config(error)
            client._recorder.finish(self.info, error)
            cause: BaseException | None = exc
            while cause is not None:
                cause.__traceback__ = None
                cause = cause.__context__
            raise error from None
        self._attempts += 1
        return pause


class ClientWrapper:
    """A client that serves through an inner model client (the futures client)."""

    _client: BaseModelClient

    @property
    def url(self) -> str:
        """The server URL, normalized (``grpc://host:8001``); the first one, for several replicas."""
        return self._client.url

    @property
    def urls(self) -> tuple[str, ...]:
        """Every URL given (replicas), normalized."""
        return self._client.urls

    @property
    def replicas(self) -> tuple[ReplicaState, ...]:
        """Each replica's state (see :attr:`Xclient.client.ModelClient.replicas`)."""
        return self._client.replicas

    @property
    def model_name(self) -> str:
        return self._client.model_name

    @property
    def model_version(self) -> str | None:
        return self._client.model_version

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError
