"""Open file descriptors and threads of this process, to prove that a test leaves none behind (Linux)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import threading
import time


@dataclasses.dataclass(frozen=True)
class Resources:
    """The process's open descriptors (number -> what it points to) and live threads, at one moment."""

    fds: dict[str, str]
    threads: frozenset[threading.Thread]

    @classmethod
    def now(cls) -> Resources:
        gc.collect()  # what only garbage holds is released, as it would be soon anyway
        fds = {}
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the descriptor of the listing itself, closed by now
                fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        return cls(fds, frozenset(thread for thread in threading.enumerate() if thread.is_alive()))


def assert_released(baseline: Resources, timeout_s: float = 10.0) -> None:
    """Every descriptor and thread opened since ``baseline`` is closed again. Waits up to ``timeout_s`` for
    what closes in the background (gRPC closes its sockets on its own threads), then fails with the list."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = Resources.now()
        threads = now.threads - baseline.threads
        if (len(now.fds) <= len(baseline.fds) and not threads) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    opened = {fd: target for fd, target in now.fds.items() if baseline.fds.get(fd) != target}
    left = f"{len(now.fds) - len(baseline.fds)} more descriptors ({opened}), threads {sorted(t.name for t in threads)}"
    assert len(now.fds) <= len(baseline.fds) and not threads, f"left behind: {left}"
