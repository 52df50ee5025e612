"""The bridge from blocking code to the asyncio clients: an event loop in a private daemon thread.

:class:`~Xclient.client.FuturesModelClient` runs its calls there (each caller schedules with
:meth:`_LoopThread.call_soon` and goes on). The owner stops it with :meth:`_LoopThread.stop`, from
``close()`` or from a ``weakref.finalize`` (garbage collection, exit).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from ..exceptions import XclientError

#: The threads of every _LoopThread: none of them ever waits for another (see _LoopThread.join).
_LOOP_THREADS: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


class _LoopThread:
    """An event loop in a daemon thread, for the sync bridge: other threads schedule work on it."""

    def __init__(self, name: str, closed_error: Callable[[], XclientError]) -> None:
        self.loop = asyncio.new_event_loop()
        self.closed_error = closed_error
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        _LOOP_THREADS.add(self._thread)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            # Threads of the loop's default executor (host names are resolved there) end with it.
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Have the loop call ``callback(*args)`` soon, in order of calls (from any thread); no waiting."""
        with self._lock:
            if self._stopped:
                raise self.closed_error()
            self.loop.call_soon_threadsafe(callback, *args)

    def stop(self, cleanup: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Await ``cleanup()`` on the loop, cancel what still runs there, stop the loop, join the thread.

        What was scheduled before (:meth:`call_soon`) starts before ``cleanup``."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        asyncio.run_coroutine_threadsafe(self._finish(cleanup), self.loop)
        self.join()

    def join(self) -> None:
        """Wait for the thread to end (after :meth:`stop`); at once on any loop thread, where a finalizer
        (garbage collection runs them on whichever thread it happens) or a future's done-callback may run:
        a loop thread that blocks can hold up the others (gRPC's asyncio events of every loop may be
        delivered through one of them), so it never waits for one."""
        if threading.current_thread() not in _LOOP_THREADS:
            self._thread.join()

    async def _finish(self, cleanup: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await cleanup()
        finally:
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            asyncio.get_running_loop().stop()
