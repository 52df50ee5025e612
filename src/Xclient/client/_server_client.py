"""Model management: what a Triton server serves, loading and unloading models, statistics.

``ServerClient`` (blocking) and ``AsyncioServerClient`` share every rule: each operation is a flow
written once in :class:`_ServerOperations`; the two classes only run or await it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from typing_extensions import Unpack

from ..exceptions import ModelUnavailableError, XclientTimeoutError, XclientValueError
from ._asyncio import AsyncTransportMixin
from ._base import DEFAULT_INIT_TIMEOUT_S, BaseClient, Call, Flow, Sleep, check_timeout
from ._config import ModelConfig
from ._model_client import SyncTransportMixin
from ._options import ConnectionOptions, ServerClientOptions

#: Repository states of a model that is not gone yet (``unload_model(wait=True)`` waits them out).
_PRESENT = ("READY", "UNLOADING")

#: Loading a large model can take minutes: the deadline of load and unload calls.
DEFAULT_LOAD_TIMEOUT_S = 600.0


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    """One entry of the server's model repository: a model (version) and its state."""

    name: str
    version: str | None
    state: str  # READY, UNAVAILABLE, LOADING, UNLOADING, or "" for a model never loaded
    reason: str = ""

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> ModelStatus:
        return cls(
            name=str(entry.get("name", "")),
            version=str(entry["version"]) if entry.get("version") not in (None, "") else None,
            state=str(entry.get("state", "")),
            reason=str(entry.get("reason", "")),
        )

    @property
    def ready(self) -> bool:
        return self.state == "READY"


class _ServerOperations(BaseClient):
    """Each server operation as a flow (see :mod:`Xclient.client._base`), for both clients."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        timeout_s: float = DEFAULT_INIT_TIMEOUT_S,
        load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
        **connection: Unpack[ConnectionOptions],
    ) -> None:
        """``timeout_s``: the deadline of every call but load/unload (``load_timeout_s``).
        ``connection``: ``api_key``, ``api_key_header``, ``headers``, ``ca_certs``, ``client_cert``, ``client_key``."""
        super().__init__(url, init_timeout_s=timeout_s, **connection)
        self._timeout_s = self._init_timeout_s
        self._load_timeout_s = check_timeout("load_timeout_s", load_timeout_s)

    def _one(self, method: str, args: tuple[Any, ...], action: str, timeout_s: float | None = None) -> Flow:
        self._check_open()
        model = args[0] if args and isinstance(args[0], str) and args[0] else None  # the model it is about
        return (yield Call(method, args, timeout_s or self._timeout_s, action, model=model))

    def _is_live(self) -> Flow:
        return self._one("server_live", (), "checking server liveness")

    def _is_ready(self) -> Flow:
        return self._one("server_ready", (), "checking server readiness")

    def _metadata(self) -> Flow:
        return self._one("server_metadata", (), "reading the server metadata")

    def _models(self) -> Flow:
        entries = yield from self._one("repository_index", (), "listing the models")
        return sorted((ModelStatus.from_dict(e) for e in entries), key=lambda m: (m.name, m.version or ""))

    def _model_ready(self, name: str, version: str | int | None) -> Flow:
        return self._one("model_ready", (_name(name), _version(version)), "checking model readiness")

    def _model_config(self, name: str, version: str | int | None) -> Flow:
        raw = yield from self._one("model_config", (_name(name), _version(version)), "fetching the model config")
        return ModelConfig.from_dict(raw, version=_version(version) or None)

    def _load(self, name: str, config: Mapping[str, Any] | str | None) -> Flow:
        if config is not None and not isinstance(config, (str, Mapping)):
            raise XclientValueError(
                f"config: expected a dict (Triton's JSON model config) or a JSON str, got {config!r}"
            )
        text = json.dumps(config, ensure_ascii=False) if isinstance(config, Mapping) else config
        return self._one("load_model", (_name(name), text), "loading", self._load_timeout_s)

    def _unload(self, name: str, unload_dependents: bool, wait: bool) -> Flow:
        # Triton answers "unloaded" for a name it does not know: that is a mistake worth saying.
        models = yield from self._models()
        if not any(m.name == name for m in models):
            raise ModelUnavailableError(
                f"cannot unload {name!r}: the server's repository has no such model", model=name
            )
        yield from self._one("unload_model", (_name(name), unload_dependents), "unloading", self._load_timeout_s)
        # Triton answers before the model is gone; with wait, poll until it is neither ready nor unloading.
        deadline = time.monotonic() + self._load_timeout_s
        while wait:
            models = yield from self._models()
            if not any(m.name == name and m.state in _PRESENT for m in models):
                return
            if time.monotonic() > deadline:
                raise XclientTimeoutError(
                    f"unloading {name!r}: still there after {self._load_timeout_s:g} s", model=name
                )
            yield Sleep(0.05)

    def _statistics(self, name: str | None, version: str | int | None) -> Flow:
        stats = yield from self._one(
            "statistics", (name or "", _version(version)), f"reading statistics{f' of {name!r}' if name else ''}"
        )
        return list(stats.get("model_stats", []))

    def _wait_for_server(self, timeout_s: float) -> Flow:
        timeout_s = check_timeout("timeout_s", timeout_s)
        yield from self._ready_flow(time.monotonic() + timeout_s, timeout_s, model=None, tolerate_unreachable=True)


def _name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise XclientValueError(f"model name: expected a non-empty str, got {name!r}")
    return name


def _version(version: str | int | None) -> str:
    return "" if version is None else str(version)


class ServerClient(SyncTransportMixin, _ServerOperations):
    """Manage a Triton server: its health, metadata, models (list, load, unload, config) and statistics.

    Example::

        with ServerClient("grpc://localhost:8001") as server:
            for model in server.models():
                print(model.name, model.version, model.state)
            server.unload_model("text")
            server.load_model("text")

    Loading and unloading need Triton's explicit model-control mode (``--model-control-mode=explicit``,
    as the local server runs). Safe to share between threads.
    """

    def __init__(self, url: str | Sequence[str], **options: Unpack[ServerClientOptions]) -> None:
        super().__init__(url, **options)
        self._sync_setup()

    def __enter__(self) -> ServerClient:
        return self

    def is_live(self) -> bool:
        return bool(self._run(self._is_live()))

    def is_ready(self) -> bool:
        return bool(self._run(self._is_ready()))

    def metadata(self) -> dict[str, Any]:
        """Server name, version and extensions."""
        return dict(self._run(self._metadata()))

    def models(self) -> list[ModelStatus]:
        """Every model in the repository, loaded or not, with its versions and state."""
        return list(self._run(self._models()))

    def is_model_ready(self, name: str, version: str | int | None = None) -> bool:
        return bool(self._run(self._model_ready(name, version)))

    def model_config(self, name: str, version: str | int | None = None) -> ModelConfig:
        return cast("ModelConfig", self._run(self._model_config(name, version)))  # a Flow's result is untyped

    def load_model(self, name: str, config: Mapping[str, Any] | str | None = None) -> None:
        """Load (or reload) a model; ``config`` overrides its config.pbtxt (Triton's JSON form)."""
        self._run(self._load(name, config))

    def unload_model(self, name: str, *, unload_dependents: bool = False, wait: bool = True) -> None:
        """Unload a model (a name the repository does not have: ModelUnavailableError); with ``wait``,
        return once the repository no longer lists it as READY or UNLOADING."""
        self._run(self._unload(name, unload_dependents, wait))

    def statistics(self, name: str | None = None, version: str | int | None = None) -> list[dict[str, Any]]:
        """Inference statistics (Triton's ``model_stats``), of one model or of all."""
        return list(self._run(self._statistics(name, version)))

    def wait_for_server(self, timeout_s: float) -> None:
        """Block until the server is ready (riding out a server that is down or starting)."""
        self._run(self._wait_for_server(timeout_s))


class AsyncioServerClient(AsyncTransportMixin, _ServerOperations):
    """The asyncio twin of :class:`ServerClient`: the same methods, awaited."""

    def __init__(self, url: str | Sequence[str], **options: Unpack[ServerClientOptions]) -> None:
        super().__init__(url, **options)
        self._async_setup()

    async def __aenter__(self) -> AsyncioServerClient:
        return self

    async def is_live(self) -> bool:
        return bool(await self._run(self._is_live()))

    async def is_ready(self) -> bool:
        return bool(await self._run(self._is_ready()))

    async def metadata(self) -> dict[str, Any]:
        return dict(await self._run(self._metadata()))

    async def models(self) -> list[ModelStatus]:
        return list(await self._run(self._models()))

    async def is_model_ready(self, name: str, version: str | int | None = None) -> bool:
        return bool(await self._run(self._model_ready(name, version)))

    async def model_config(self, name: str, version: str | int | None = None) -> ModelConfig:
        return cast("ModelConfig", await self._run(self._model_config(name, version)))  # a Flow's result is untyped

    async def load_model(self, name: str, config: Mapping[str, Any] | str | None = None) -> None:
        await self._run(self._load(name, config))

    async def unload_model(self, name: str, *, unload_dependents: bool = False, wait: bool = True) -> None:
        await self._run(self._unload(name, unload_dependents, wait))

    async def statistics(self, name: str | None = None, version: str | int | None = None) -> list[dict[str, Any]]:
        return list(await self._run(self._statistics(name, version)))

    async def wait_for_server(self, timeout_s: float) -> None:
        await self._run(self._wait_for_server(timeout_s))
