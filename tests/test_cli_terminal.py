"""The real ``xclient`` process as a user meets it: ``xclient chat`` on a terminal (a pty, Ctrl-C typed as
the terminal sends it), and the commands on a Python where the ``langchain`` extra is missing."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from Xclient.server import LocalTritonServer

#: The first test of a session also waits for the session's server (90 s on a busy 2-core machine).
pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="a pty is POSIX"), pytest.mark.timeout(300)]

#: Runs the command with the pty as its controlling terminal, so that ^C reaches it as SIGINT.
_ON_A_TERMINAL = (
    "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, '-m', 'Xclient', *sys.argv[1:]])"
)


class Terminal:
    """``xclient ARGS`` on a pseudo-terminal: type into it, wait for what it shows."""

    def __init__(self, *argv: str) -> None:
        self.master, slave = os.openpty()
        env = {k: v for k, v in os.environ.items() if not k.startswith("XCLIENT_")}
        env.update(TERM="dumb", NO_COLOR="1", PYTHONUTF8="1")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ON_A_TERMINAL, *argv], stdin=slave, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        self.shown = ""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode("utf-8"))

    def wait_for(self, pattern: str, timeout: float = 30.0) -> str:
        """Read until ``pattern`` (a regex) shows up after what was already matched; what came, up to it."""
        deadline = time.monotonic() + timeout
        while (match := re.search(pattern, self.shown)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} never showed; the terminal shows:\n{self.shown}")
            if select.select([self.master], [], [], min(left, 0.5))[0]:
                try:
                    self.shown += os.read(self.master, 4096).decode("utf-8", errors="replace")
                except OSError:  # the process left and closed the terminal
                    raise AssertionError(f"{pattern!r} never showed; the terminal shows:\n{self.shown}") from None
        before, self.shown = self.shown[: match.end()], self.shown[match.end() :]
        return before

    def exit_code(self, timeout: float = 30.0) -> int:
        code = self.process.wait(timeout)
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def terminal():
    started: list[Terminal] = []

    def start(*argv: str) -> Terminal:
        started.append(Terminal(*argv))
        return started[-1]

    yield start
    for term in started:
        term.kill()


def test_chat_ctrl_c_stops_the_answer_cancels_it_and_keeps_the_history(
    terminal, triton_server: LocalTritonServer
) -> None:
    cancelled = triton_server.logs().count("request cancelled")
    chat = terminal("chat", "vllm_slow", "--url", triton_server.grpc_url, "--max-tokens", "300")
    chat.wait_for(">>> ")
    chat.type("你好\n")
    chat.wait_for("第1轮.*\n.*>>> ")  # the first answer, whole, then the prompt again
    chat.type("讲一个很长的故事\n")
    chat.wait_for("演示替身")  # the second answer is streaming
    chat.type("\x03")  # Ctrl-C, as the terminal sends it
    stopped = chat.wait_for(r"\(stopped\)\s*\r?\n>>> ")
    assert "第2轮" not in stopped and "Traceback" not in stopped  # it did not finish
    deadline = time.monotonic() + 10
    while triton_server.logs().count("request cancelled") == cancelled and time.monotonic() < deadline:
        time.sleep(0.1)
    assert triton_server.logs().count("request cancelled") > cancelled  # cancelled on the server
    chat.type("还在吗\n")
    assert "第3轮" in chat.wait_for(r"第\d轮")  # both earlier turns are in the history
    chat.wait_for(">>> ")
    chat.type("\x03")  # Ctrl-C at an empty prompt leaves
    assert chat.exit_code() == 0


def test_chat_commands_help_clear_system_exit_and_unknown_ones_not_sent(
    terminal, triton_server: LocalTritonServer
) -> None:
    chat = terminal("chat", "--url", triton_server.grpc_url, "--max-tokens", "300")
    chat.wait_for(">>> ")
    chat.type("/help\n")
    shown = chat.wait_for(">>> ")
    for command in ("/help", "/clear", "/system TEXT", "/exit"):
        assert command in shown
    chat.type("你好\n")
    assert "第1轮" in chat.wait_for(r"第\d轮")
    chat.wait_for(">>> ")
    chat.type("/unknown 你好\n")
    shown = chat.wait_for(">>> ")
    assert "unknown command /unknown" in shown and "演示替身" not in shown  # nothing was sent
    chat.type("再说一遍\n")
    assert "第2轮" in chat.wait_for(r"第\d轮")  # /unknown did not count as a turn
    chat.wait_for(">>> ")
    chat.type("/clear\n")
    chat.wait_for("conversation cleared.*\n.*>>> ")
    chat.type("/system 你是一个简洁的助手\n")
    chat.wait_for("system message set.*\n.*>>> ")
    chat.type("清空以后\n")
    assert "第1轮" in chat.wait_for(r"第\d轮")  # the history was cleared
    chat.wait_for(">>> ")
    chat.type("/exit\n")
    assert chat.exit_code() == 0


def test_chat_ctrl_d_at_an_empty_prompt_leaves(terminal, triton_server: LocalTritonServer) -> None:
    chat = terminal("chat", "--url", triton_server.grpc_url)
    chat.wait_for(">>> ")
    chat.type("\x04")
    assert chat.exit_code() == 0


# -- without the langchain extra ----------------------------------------------------------------------


def _without_langchain(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import the ``langchain`` extra's packages (a sitecustomize
    that refuses them, as a Python without the extra would)."""
    (tmp_path / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import sys

            class _Missing:
                BLOCKED = {"langchain_core", "httpx", "jinja2"}

                def find_spec(self, name, path=None, target=None):
                    if name.partition(".")[0] in self.BLOCKED:
                        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                    return None

            sys.meta_path.insert(0, _Missing())
            """
        ),
        "utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCLIENT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(argv: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "Xclient", *argv], capture_output=True, text=True, env=env, timeout=60, input=stdin
    )


def test_without_the_langchain_extra_the_commands_name_it(tmp_path: Path, triton_server: LocalTritonServer) -> None:
    env = _without_langchain(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import langchain_core"], capture_output=True, text=True, env=env)
    assert probe.returncode == 1 and "ModuleNotFoundError" in probe.stderr  # the shim works
    http = triton_server.http_url
    for argv in (
        ["embed", "你好", "--url", http],
        ["rerank", "-q", "什么是向量检索", "向量检索", "--url", http],
        ["generate", "你好", "--chat-template", "{{ messages[0]['content'] }}", "--url", triton_server.grpc_url],
    ):
        done = _run(argv, env, stdin="你好\n")
        assert done.returncode == 1, (argv, done.stderr)
        assert "pip install 'llmops-xclient[langchain]'" in done.stderr and len(done.stderr.splitlines()) == 1
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_generate_needs_no_langchain(tmp_path: Path, triton_server: LocalTritonServer, protocol: str) -> None:
    """The LLM commands run on the engine, not on LangChain: with a built-in template they work without
    the extra over both protocols (HTTP streams on Xclient's own wire), and so start fast
    (``benchmarks/cli_start.py``)."""
    url = triton_server.url(protocol)
    done = _run(["generate", "你好", "--max-tokens", "5", "--url", url], _without_langchain(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "你好！我是\n"  # five tokens
