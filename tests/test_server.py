"""The local Triton server: start-up, loopback binding, PyTriton bind, failures with the log shown."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from Xclient.client import ModelClient
from Xclient.exceptions import ServerStartError, XclientValueError
from Xclient.server import LocalTritonServer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_server_listens_on_loopback_by_default(triton_server):
    assert triton_server.host == "127.0.0.1"
    assert triton_server.http_url.startswith("http://127.0.0.1:")
    assert triton_server.grpc_url.startswith("grpc://127.0.0.1:")
    assert "--http-address=127.0.0.1" in triton_server._command()
    assert "--grpc-address=127.0.0.1" in triton_server._command()
    assert triton_server.is_alive() and "running" in repr(triton_server)


def test_server_sockets_listen_on_loopback_only(triton_server):
    # What the kernel says, not what the command line asks: the server's listening TCP sockets.
    inodes = set()
    for fd in pathlib.Path(f"/proc/{triton_server.pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # LISTEN
                host, port = address.split(":")
                raw = bytes.fromhex(host)  # 32-bit words in host (little-endian) order
                ip = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
                ip = getattr(ip, "ipv4_mapped", None) or ip  # gRPC listens on ::ffff:127.0.0.1
                listening.add((str(ip), int(port, 16)))
    assert listening == {("127.0.0.1", triton_server.http_port), ("127.0.0.1", triton_server.grpc_port)}


def test_bound_python_function_is_served_on_both_protocols(triton_server):
    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor

    @batch
    def double(x):
        return {"y": x * 2}

    triton_server.bind(
        "bound_double",
        double,
        inputs=[Tensor(name="x", dtype=np.float32, shape=(-1,))],
        outputs=[Tensor(name="y", dtype=np.float32, shape=(-1,))],
        config=ModelConfig(max_batch_size=4),
    )
    for url in (triton_server.http_url, triton_server.grpc_url):
        with ModelClient(url, "bound_double") as client:
            assert client.infer_sample([1.0, 2.5])["y"].tolist() == [2.0, 5.0]


def test_start_failure_raises_with_the_server_log(tmp_path):
    broken = tmp_path / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text(
        'name: "broken"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "x" data_type: TYPE_FP32 dims: [1] }]\n'
        'output [{ name: "y" data_type: TYPE_FP32 dims: [1] }]\n'
    )
    (broken / "1" / "model.py").write_text("raise RuntimeError('模型 cannot load on purpose')\n")
    server = LocalTritonServer(model_repository=tmp_path, startup_timeout_s=60)
    with pytest.raises(ServerStartError) as info:
        server.start()
    assert "cannot load on purpose" in str(info.value)
    assert not server.is_alive()
    server.stop()


def test_repository_must_exist_and_names_must_not_clash(tmp_path):
    with pytest.raises(XclientValueError, match="is not a directory"):
        LocalTritonServer(model_repository=tmp_path / "missing")
    for repo in ("a", "b"):
        (tmp_path / repo / "same").mkdir(parents=True)
        (tmp_path / repo / "same" / "config.pbtxt").write_text('name: "same"')
    server = LocalTritonServer(model_repository=[tmp_path / "a", tmp_path / "b"])
    with pytest.raises(XclientValueError, match="'same' is in both"):
        server.start()
    server.stop()


def test_plain_script_from_the_readme_starts_the_server_and_runs_a_model():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HELLO, TRITON" in result.stdout and "你好" in result.stdout


def test_kill_and_stop_leave_no_stub_process_behind():
    server = LocalTritonServer(model_repository=ROOT / "tests" / "models", models=["text_stream", "slow"])
    server.start()
    stubs = _children(server.pid)
    assert len(stubs) >= 2  # one Python-backend stub per model instance
    server.kill()
    server.start()
    restarted = _children(server.pid)
    server.stop()
    # Killed by someone else (a test's os.kill, the OOM killer): its stubs, now children of init, go too.
    server.start()
    orphans = _children(server.pid)
    os.kill(server.pid, signal.SIGKILL)
    for _ in range(100):
        if _state(server.pid) != "alive":
            break
        time.sleep(0.05)
    assert any(_state(pid) == "alive" for pid in orphans)  # the stubs outlive their server (for good, here)
    server.kill()
    server.stop()
    deadline = time.monotonic() + 5  # SIGKILL is sent at once; the processes take a moment to go
    while any(_state(pid) == "alive" for pid in orphans) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in stubs + restarted + orphans:
        assert not pathlib.Path(f"/proc/{pid}").exists() or "zombie" in _state(pid)


def _children(pid: int) -> list[int]:
    """The direct children of ``pid`` (a live server's Python-backend stubs), from /proc."""
    children = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def _state(pid: int) -> str:
    try:
        return {"Z": "zombie"}.get(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0], "alive")
    except OSError:
        return "gone"
