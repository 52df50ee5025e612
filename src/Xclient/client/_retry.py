"""The one retry rule of every Xclient class (base clients, streams, LangChain classes, CLI).

A failed request is sent again only when the error is ``retryable`` (it surely never reached the
server: connection refused, name not resolved), and only as many times as the user's retry setting
(``retries`` on the clients, ``max_retries`` on the LangChain classes; 0 by default: nothing is
resent). Before retry ``n`` (0-based) it waits ``min(initial_backoff_s * 2**n, max_backoff_s)``, less a
random share of at most ``jitter`` of it, so that clients that failed together do not come back
together. A stream is never retried once a response came (the caller decides that; see
:meth:`RetryPolicy.pause`).

>>> policy = RetryPolicy(max_retries=5, jitter=0.0)
>>> [policy.backoff(n) for n in range(6)]
[0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from ..exceptions import XclientError, XclientValueError

#: The first pause; each next one twice as long, at most DEFAULT_MAX_BACKOFF_S.
DEFAULT_INITIAL_BACKOFF_S = 0.5
DEFAULT_MAX_BACKOFF_S = 8.0
#: A pause is shortened by a random share of at most this much of it.
DEFAULT_JITTER = 0.25


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and after which pause a request that never reached the server is sent again."""

    max_retries: int = 0
    initial_backoff_s: float = DEFAULT_INITIAL_BACKOFF_S
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S
    jitter: float = DEFAULT_JITTER

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or isinstance(self.max_retries, bool) or self.max_retries < 0:
            raise XclientValueError(f"retries: expected a whole number >= 0, got {self.max_retries!r}")
        for name in ("initial_backoff_s", "max_backoff_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                option = "retry_backoff_s" if name == "initial_backoff_s" else name
                raise XclientValueError(f"{option}: expected a positive number of seconds, got {value!r}")
        if not isinstance(self.jitter, (int, float)) or not 0 <= self.jitter < 1:
            raise XclientValueError(f"jitter: expected a number in [0, 1), got {self.jitter!r}")

    def backoff(self, attempt: int, random_: Callable[[], float] = random.random) -> float:
        """The pause before retry ``attempt`` (0-based): doubling from ``initial_backoff_s``, capped at
        ``max_backoff_s``, then shortened by up to ``jitter`` of itself."""
        pause = min(self.initial_backoff_s * 2.0 ** min(attempt, 64), self.max_backoff_s)
        return pause * (1.0 - self.jitter * random_())

    def pause(self, error: XclientError, attempts: int, *, responded: bool = False) -> float | None:
        """The pause before sending again after ``attempts`` retries, or None: raise ``error``.
        ``responded``: a response of this request (a stream's first) already came; never retried."""
        if responded or not error.retryable or attempts >= self.max_retries:
            return None
        return self.backoff(attempts)
