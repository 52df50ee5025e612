"""LocalTritonServer: start and stop the ``tritonserver`` binary shipped in the ``nvidia-pytriton`` wheel.

It serves a standard model repository: Python-backend models and ensembles as they are, TorchScript
and ONNX models through Xclient's Python-backend runners (:mod:`Xclient.server._repository`), and
Python functions bound with PyTriton's ``bind``. Models of other backends are refused, one line each.
It sets up the environment the Python backend needs on its own (see ``_environment``), so a
fresh machine needs no manual step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..exceptions import ServerStartError, XclientValueError
from . import _repository

LOGGER = logging.getLogger("Xclient.server")

_LOG_TAIL_CHARS = 6000


def _pytriton_root() -> pathlib.Path:
    try:
        import pytriton
    except ImportError:
        raise ServerStartError(
            "The local Triton server needs the 'server' extra: pip install 'llmops-xclient[server]' (nvidia-pytriton)"
        ) from None
    return pathlib.Path(pytriton.__file__).parent


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _environment(libs: pathlib.Path) -> dict[str, str]:
    """The server's environment: the Python-backend stub must load this interpreter's libpython
    (not the system's) and this environment's packages (not the base interpreter's numpy 2)."""
    env = dict(os.environ)

    def prepend(name: str, *paths: str) -> None:
        parts = [p for p in paths if p] + [p for p in env.get(name, "").split(os.pathsep) if p]
        env[name] = os.pathsep.join(dict.fromkeys(parts))

    prepend("LD_LIBRARY_PATH", sysconfig.get_config_var("LIBDIR") or "", str(libs))
    prepend("PATH", str(pathlib.Path(sys.executable).parent))
    package_parent = str(pathlib.Path(__file__).resolve().parents[2])
    prepend("PYTHONPATH", package_parent, *site.getsitepackages(), sysconfig.get_paths()["purelib"])
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    return env


def _stubs(prefix: str | None) -> list[int]:
    """The Python-backend stubs of the server whose shared-memory regions start with ``prefix`` (their third
    argument), found by command line: they outlive a server killed by someone else, reparented away."""
    if not prefix:
        return []
    found, region = [], prefix.encode()
    for cmdline in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if len(args) > 2 and args[0].endswith(b"triton_python_backend_stub") and args[2].startswith(region):
                found.append(int(cmdline.parent.name))
    return found


def _kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _dying_with_parent(command: list[str]) -> list[str]:
    """``command`` run so that it gets SIGKILL when the thread that starts it ends (PR_SET_PDEATHSIG), through
    util-linux's ``setpriv`` when it is there (best effort).

    Not with a ``preexec_fn``: that makes subprocess fork() where it would otherwise vfork(), and a fork in
    a process that has gRPC clients runs gRPC's fork handlers, which restart gRPC's poller thread in the
    child; closing the child's descriptors before exec then makes it abort (exit -6, "epoll_wait error:
    Bad file descriptor" in the log) now and then, so that a restart fails."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *command] if setpriv else command


class LocalTritonServer:
    """A real Triton server on this machine, on free ports, bound to 127.0.0.1 by default.

    Args:
        model_repository: one directory or several of models (Python backend, ensembles, TorchScript
            ``model.pt`` and ONNX ``model.onnx`` on CPU); their models are merged (a name in two of them
            is an error). Other models are left out, each with a line in :attr:`refused`; when every
            model is refused, :meth:`start` raises. None: start with no models.
        host: the address both endpoints listen on.
        http_port, grpc_port: 0 (default) picks free ports.
        models: the names of the models to serve from the repositories (default: all of them).
        startup_timeout_s: how long to wait for the server and its models to be ready.
        log_verbose: Triton's ``--log-verbose`` level.
        api_key: when set, Triton itself refuses every request but health checks that lacks
            ``Authorization: Bearer <api_key>`` (its restricted-API settings, on both protocols;
            Xclient's clients send it with ``api_key=``). Python functions cannot be bound then.
            Triton 2.51 takes the key on its command line only (no file or environment form), so
            other users of this machine can read it in ``/proc/<pid>/cmdline`` (``ps``) unless
            ``/proc`` is mounted with ``hidepid=2``; the workspace (generated repository, log) is
            private to its owner (mode 0700, files 0600).
        extra_args: more ``tritonserver`` command-line arguments.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. The log is kept in
    :attr:`log_path` and quoted in the error when start-up fails.
    """

    def __init__(
        self,
        model_repository: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        *,
        host: str = "127.0.0.1",
        http_port: int = 0,
        grpc_port: int = 0,
        models: Iterable[str] | None = None,
        startup_timeout_s: float = 120.0,
        log_verbose: int = 0,
        api_key: str | None = None,
        extra_args: Iterable[str] = (),
    ) -> None:
        if model_repository is None:
            repositories: list[pathlib.Path] = []
        elif isinstance(model_repository, (str, os.PathLike)):
            repositories = [pathlib.Path(model_repository)]
        else:
            repositories = [pathlib.Path(p) for p in model_repository]
        for repository in repositories:
            if not repository.is_dir():
                raise XclientValueError(f"model_repository: {str(repository)!r} is not a directory")
        self._repositories = repositories
        self._models = None if models is None else list(models)
        self._plan: _repository.Plan | None = None
        self.host = host
        self.http_port = http_port or _free_port(host)
        self.grpc_port = grpc_port or _free_port(host)
        self._startup_timeout_s = startup_timeout_s
        self._log_verbose = log_verbose
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip() or "," in api_key):
            raise XclientValueError("api_key: expected a non-empty str without commas")
        self._api_key = api_key
        self._extra_args = list(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._workspace: pathlib.Path | None = None
        self._log_file: Any = None
        self._remote: Any = None  # PyTriton's RemoteTriton, made on the first bind
        self._lock = threading.RLock()

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else ("127.0.0.1" if self.host == "0.0.0.0" else self.host)

    @property
    def http_url(self) -> str:
        return f"http://{self._url_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self._url_host}:{self.grpc_port}"

    def url(self, protocol: str) -> str:
        """``http_url`` or ``grpc_url`` by protocol name."""
        return {"http": self.http_url, "grpc": self.grpc_url}[protocol]

    @property
    def refused(self) -> list[str]:
        """One line for each model of the repositories that this server cannot run (and leaves out).

        Raises XclientValueError when the repositories cannot be served at all (a name in two of them,
        a wanted model in none, every model refused)."""
        return list(self._planned().refused)

    def _planned(self) -> _repository.Plan:
        if self._plan is None:
            plan = _repository.plan(self._repositories, self._models)
            if plan.refused and not plan.models:
                raise XclientValueError("; ".join(plan.refused))
            for line in plan.refused:
                LOGGER.warning("%s", line)
            self._plan = plan
        return self._plan

    @property
    def log_path(self) -> pathlib.Path | None:
        return self._workspace / "tritonserver.log" if self._workspace else None

    def logs(self) -> str:
        """The server's log so far."""
        path = self.log_path
        return path.read_text(errors="replace") if path and path.exists() else ""

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.is_alive() else "stopped"
        return f"LocalTritonServer(http={self.http_url!r}, grpc={self.grpc_url!r}, {state})"

    # -- life cycle --------------------------------------------------------------------------------

    def __enter__(self) -> LocalTritonServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> LocalTritonServer:
        """Start the server and wait until it and every model in the repositories are ready."""
        with self._lock:
            if self.is_alive():
                return self
            if self._workspace is None:
                self._workspace = pathlib.Path(tempfile.mkdtemp(prefix="xclient-triton-"))
                self._prepare_workspace(self._workspace)
            self._launch()
            self._wait_until_ready()
            LOGGER.info("Triton started: %s, %s", self.http_url, self.grpc_url)
            return self

    def restart(self) -> LocalTritonServer:
        """Stop the server process and start it again on the same ports and models."""
        with self._lock:
            self._stop_process()
            return self.start()

    def kill(self) -> None:
        """Kill the server process at once (SIGKILL), as a crash would; :meth:`start` brings it back."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.kill()
                self._process.wait()
            self._clean_up_after_server()

    def stop(self) -> None:
        """Stop the server and remove its workspace. Stopping twice is fine."""
        with self._lock:
            if self._remote is not None:
                try:
                    self._remote.__exit__(None, None, None)
                except Exception as e:  # the server goes down anyway
                    LOGGER.debug("PyTriton's RemoteTriton did not stop cleanly: %s", e)
                self._remote = None
            self._stop_process()
            if self._workspace is not None:
                shutil.rmtree(self._workspace, ignore_errors=True)
                self._workspace = None

    # -- binding Python functions --------------------------------------------------------------------

    def bind(self, model_name: str, infer_func: Callable[..., Any], inputs: Any, outputs: Any, **kwargs: Any) -> None:
        """Serve a Python function as a model, with PyTriton's ``bind`` (same arguments:
        ``inputs``/``outputs`` are ``pytriton.model_config.Tensor`` lists, ``config`` a
        ``pytriton.model_config.ModelConfig``). The function runs in this process."""
        with self._lock:
            if not self.is_alive():
                raise ServerStartError("bind() needs a running server: call start() first")
            if self._api_key:
                raise ServerStartError("bind() is not available on a server started with api_key")
            if self._remote is None:
                from pytriton.triton import RemoteTriton

                assert self._workspace is not None
                self._remote = RemoteTriton(url=self.http_url, workspace=self._workspace / "pytriton")
                self._remote.__enter__()
            self._remote.bind(model_name, infer_func, inputs=inputs, outputs=outputs, **kwargs)

    # -- internals ---------------------------------------------------------------------------------

    def _prepare_workspace(self, workspace: pathlib.Path) -> None:
        dist = _pytriton_root() / "tritonserver"
        server_dir = workspace / "tritonserver"
        shutil.copytree(dist, server_dir, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.exists():
            raise ServerStartError(f"nvidia-pytriton ships no Python-backend stub for Python {version}")
        shutil.copy(stub, server_dir / "backends" / "python" / "triton_python_backend_stub")
        models = workspace / "models"
        models.mkdir(mode=0o700)
        _repository.write(self._planned().models, models)
        self._shm_prefix = f"xclient{os.getpid()}-{os.urandom(3).hex()}"

    def _command(self) -> list[str]:
        assert self._workspace is not None
        server_dir = self._workspace / "tritonserver"
        return [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={self._workspace / 'models'}",
            f"--backend-directory={server_dir / 'backends'}",
            f"--cache-directory={server_dir / 'caches'}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            "--model-control-mode=explicit",
            "--load-model=*",
            "--exit-timeout-secs=5",
            f"--log-verbose={self._log_verbose}",
            *self._restriction_args(),
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            "--backend-config=python,shm-default-byte-size=4194304",
            "--backend-config=python,shm-growth-byte-size=1048576",
            *self._extra_args,
        ]

    def _restriction_args(self) -> list[str]:
        """Triton's own API-key check: every API but health needs the key (readiness stays open)."""
        if not self._api_key:
            return []
        apis = "metadata,inference,shared-memory,model-config,model-repository,statistics,trace,logging"
        rule = f"{apis}:authorization=Bearer {self._api_key}"
        return [f"--http-restricted-api={rule}", f"--grpc-restricted-protocol={rule}"]

    def _launch(self) -> None:
        assert self._workspace is not None
        libs = _pytriton_root().parent / "nvidia_pytriton.libs"
        if self._log_file is None:
            fd = os.open(self._workspace / "tritonserver.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._log_file = os.fdopen(fd, "ab")  # kept open while running
        on_main_thread = threading.current_thread() is threading.main_thread()
        self._process = subprocess.Popen(
            _dying_with_parent(self._command()) if on_main_thread else self._command(),  # the signal follows the thread
            env=_environment(libs),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        url = f"{self.http_url}/v2/health/ready"
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                code = self._process.returncode
                self._stop_process()
                raise ServerStartError(
                    f"tritonserver exited with code {code} during start-up. Its log:\n{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:  # our own loopback server
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self._stop_process()
                raise ServerStartError(
                    f"tritonserver was not ready after {self._startup_timeout_s:g} s. Its log:\n{self._log_tail()}"
                )
            time.sleep(0.1)

    def _log_tail(self) -> str:
        """The log's error lines (a failed model's reason) first, then its end."""
        text = self.logs()
        errors = [line for line in text.splitlines() if line.startswith("E") or "UNAVAILABLE:" in line]
        tail = text if len(text) <= _LOG_TAIL_CHARS else "...\n" + text[-_LOG_TAIL_CHARS:]
        return ("Errors:\n" + "\n".join(errors[-20:]) + "\n\nLog:\n" if errors else "") + tail

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._clean_up_after_server()

    def _clean_up_after_server(self) -> None:
        """Once the server is gone (stopped, killed, or killed by someone else): its Python-backend stubs, which
        can outlive it (one stuck in a model's execute(), or all of them, reparented, when it was killed), then
        its shared-memory regions."""
        prefix = getattr(self, "_shm_prefix", None)
        _kill_all(_stubs(prefix))
        shm = pathlib.Path("/dev/shm")
        if prefix and shm.is_dir():
            for region in shm.glob(f"{prefix}*"):
                region.unlink(missing_ok=True)
