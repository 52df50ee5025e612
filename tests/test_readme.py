"""The README runs: its examples are executed against the test session's server, so they cannot rot.

- Every ```` ```python ```` block runs, unless the line before its fence is ``<!-- readme: skip -->``
  (for a block that needs something the session has not: another server, a GPU, TLS files).
- A ```` ```bash ```` block runs when the line before its fence is ``<!-- readme: run -->``: as one
  ``bash -e`` script, in a temporary directory, with this environment's ``xclient`` first on PATH and
  stdin empty.
- ``localhost:8000`` and ``localhost:8001`` (HTTP and gRPC, as the README writes them) become the
  session server's ports; ``localhost:9000`` and ``localhost:9001`` (a second replica, for the
  "Fleets" section) become those of a second server with the demo models, started only when a block
  that runs names them.

State: each Python block is self-contained (it imports what it uses) and runs in a fresh namespace;
all of them run in order in one subprocess, so the imports are paid once and a crash fails this test
and not the session. A failure names the block's line in README.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from Xclient.server import DEMO_MODELS, LocalTritonServer

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SKIP, RUN = "<!-- readme: skip -->", "<!-- readme: run -->"
_FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # of the opening fence, 1-based
    marker: str | None  # the line before the fence, if it is a readme marker


def blocks(text: str) -> list[Block]:
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(match.group(1), match.group(2), line, before if before in (SKIP, RUN) else None))
    return found


#: The second replica's ports in the README, and the demo models its examples use.
SECOND_PORTS = ("localhost:9000", "localhost:9001")
SECOND_MODELS = ["text", "bge-m3-v", "bge-reranker-v2-m3", "Qwen2-0.5B-Instruct"]


def for_server(code: str, server: LocalTritonServer, second: LocalTritonServer | None = None) -> str:
    """``code`` with the README's ports replaced by the session server's (and the second server's)."""
    servers = [(("localhost:8000", "localhost:8001"), server)]
    if second is not None:
        servers.append((SECOND_PORTS, second))
    for (http_port, grpc_port), replica in servers:
        http = replica.http_url.split("://", 1)[1]
        grpc = replica.grpc_url.split("://", 1)[1]
        code = code.replace(http_port, http).replace(grpc_port, grpc)
    return code


@pytest.fixture(scope="module")
def second_server() -> Iterator[Callable[[list[Block]], LocalTritonServer | None]]:
    """The second replica for the blocks that name its ports (started once, on first need)."""
    with contextlib.ExitStack() as stack:
        started: list[LocalTritonServer] = []

        def for_blocks(found: list[Block]) -> LocalTritonServer | None:
            if not any(port in b.code for b in found for port in SECOND_PORTS):
                return None
            if not started:
                started.append(stack.enter_context(LocalTritonServer(DEMO_MODELS, models=SECOND_MODELS)))
            return started[0]

        yield for_blocks


_RUNNER = textwrap.dedent(
    """
    import json, sys, traceback

    blocks = json.load(sys.stdin)
    for line, code in blocks:
        print(f"--- README.md line {line}", flush=True)
        try:
            exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__main__"})
        except BaseException:
            traceback.print_exc()
            print(f"README.md line {line}: the block failed", file=sys.stderr)
            sys.exit(1)
    """
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCLIENT_")}
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")])
    env["NO_COLOR"] = "1"
    return env


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    found = blocks(README.read_text("utf-8"))
    python = [b for b in found if b.language == "python" and b.marker != SKIP]
    bash = [b for b in found if b.language == "bash" and b.marker == RUN]
    assert len(python) >= 6 and bash
    runnable = "\n".join(b.code for b in python)
    for name in (
        "DecoupledModelClient",
        "AsyncioDecoupledModelClient",
        "MetaLMEmbeddings",
        "MetaLMRerank",
        "ServerClient",
        "ChatMetaLM",
        "ModelClient",
    ):
        assert re.search(rf"\b{name}\(", runnable), f"no runnable README example makes a {name}"


@pytest.mark.timeout(300)
def test_every_python_block_of_the_readme_runs(triton_server: LocalTritonServer, second_server: Any) -> None:
    python = [b for b in blocks(README.read_text("utf-8")) if b.language == "python" and b.marker != SKIP]
    second = second_server(python)
    payload = json.dumps([[b.line, for_server(b.code, triton_server, second)] for b in python], ensure_ascii=False)
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER], input=payload, capture_output=True, text=True, env=_env(), timeout=280
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count("--- README.md line") == len(python)


def test_the_readme_shell_blocks_marked_run_run(
    triton_server: LocalTritonServer, second_server: Any, tmp_path: pathlib.Path
) -> None:
    bash = [b for b in blocks(README.read_text("utf-8")) if b.language == "bash" and b.marker == RUN]
    second = second_server(bash)
    for block in bash:
        script = "set -euo pipefail\n" + for_server(block.code, triton_server, second)
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=_env(),
            timeout=240,
        )
        assert done.returncode == 0, f"README.md line {block.line}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        assert "error:" not in done.stderr
