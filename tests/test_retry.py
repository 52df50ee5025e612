"""The one retry rule (Xclient.client._retry.RetryPolicy): what is resent, after which pause, how often."""

from __future__ import annotations

import pytest

from Xclient.client import ModelClient, RetryPolicy
from Xclient.client._base import retry_pause
from Xclient.exceptions import (
    InferenceServerError,
    ServerUnavailableError,
    XclientTimeoutError,
    XclientValueError,
)

REFUSED = ServerUnavailableError("connection refused", retryable=True)


def test_the_pause_doubles_from_the_initial_backoff_and_is_capped():
    policy = RetryPolicy(max_retries=10, initial_backoff_s=0.5, max_backoff_s=8.0, jitter=0.0)
    assert [policy.backoff(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert policy.backoff(10_000) == 8.0  # no overflow, still the cap


def test_jitter_shortens_a_pause_by_at_most_its_share():
    policy = RetryPolicy(max_retries=3, jitter=0.25)
    assert policy.backoff(1, random_=lambda: 0.0) == 1.0
    assert policy.backoff(1, random_=lambda: 1.0) == 0.75
    assert all(0.75 <= policy.backoff(1) <= 1.0 for _ in range(200))
    assert all(6.0 <= policy.backoff(9) <= 8.0 for _ in range(200))  # the cap, jittered


def test_only_retryable_errors_are_resent_and_only_up_to_max_retries():
    policy = RetryPolicy(max_retries=2)
    assert policy.pause(REFUSED, 0) is not None and policy.pause(REFUSED, 1) is not None
    assert policy.pause(REFUSED, 2) is None  # out of retries
    assert RetryPolicy().pause(REFUSED, 0) is None  # off by default: nothing is resent
    lost = ServerUnavailableError("connection reset under the request")  # it may have reached the server
    for error in (InferenceServerError("bad"), XclientTimeoutError("slow"), lost):
        assert policy.pause(error, 0) is None


def test_a_request_that_got_a_response_is_never_resent():
    assert RetryPolicy(max_retries=5).pause(REFUSED, 0, responded=True) is None


def test_the_core_retry_pause_is_the_policy():
    assert 0.3 <= retry_pause(REFUSED, 1, 3, 0.2) <= 0.4  # 0.2 * 2, less up to 25 %
    assert retry_pause(REFUSED, 3, 3, 0.2) is None
    assert retry_pause(InferenceServerError("bad"), 0, 3, 0.2) is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries: expected a whole number >= 0, got -1"),
        ({"retries": True}, "retries: expected a whole number >= 0, got True"),
        ({"retry_backoff_s": 0}, "retry_backoff_s: expected a positive number of seconds, got 0"),
    ],
)
def test_bad_retry_options_are_refused_in_the_constructor(options, message):
    with pytest.raises(XclientValueError, match=message):
        ModelClient("localhost", "text", **options)


def test_a_refused_connection_is_resent_retries_times_then_raised(dead_url, monkeypatch):
    pauses: list[float] = []
    real = RetryPolicy.backoff

    def recorded(self: RetryPolicy, attempt: int, random_=None) -> float:
        pause = real(self, attempt)
        pauses.append(pause)
        return pause

    monkeypatch.setattr(RetryPolicy, "backoff", recorded)
    client = ModelClient(dead_url, "text", retries=3, retry_backoff_s=0.01)
    with pytest.raises(ServerUnavailableError) as info:
        client.infer_sample("你好")
    assert info.value.retryable and len(pauses) == 3
    assert 0.0075 <= pauses[0] <= 0.01 and 0.03 <= pauses[2] <= 0.04  # doubling, jittered
    pauses.clear()
    with pytest.raises(ServerUnavailableError):
        ModelClient(dead_url, "text").infer_sample("你好")
    assert pauses == []  # retries are opt-in
