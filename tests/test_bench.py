"""``xclient bench`` and ``xclient models stats --watch`` against the session's real server (bounded: a few
requests per level), and the sans-IO arithmetic of :mod:`Xclient._bench_stats` on made-up samples.

No timing thresholds: the checks are about consistency (TTFT within the latency, TTFT + ITL x (tokens - 1)
= latency, counts that add up, goodput within throughput, two independent token counts that agree)."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest

from Xclient import _bench_stats as stats
from Xclient.cli import _models
from Xclient.exceptions import XclientValueError

from .test_cli import Xclient, xclient  # noqa: F401 - the in-process `xclient` runner fixture

LLM = "Qwen2-0.5B-Instruct"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bench(xclient: Xclient, *argv: object) -> dict[str, Any]:  # noqa: F811
    result = xclient("bench", *argv, "--json")
    assert result.code == 0, result.err
    return result.json()


def _assert_distribution(dist: dict[str, float] | None) -> None:
    assert dist is not None
    assert dist["min"] <= dist["p50"] <= dist["p90"] <= dist["p99"] <= dist["max"]
    assert dist["min"] <= dist["mean"] <= dist["max"]


def _assert_llm_level(level: dict[str, Any], requests: int, max_tokens: int) -> None:
    assert level["requests"] == level["succeeded"] == requests and level["failed"] == 0
    assert math.isclose(level["requests_per_s"] * level["duration_s"], level["succeeded"], rel_tol=1e-4)
    assert level["goodput_requests"] <= level["succeeded"]
    assert level["goodput_per_s"] <= level["requests_per_s"]
    for name in ("latency_ms", "ttft_ms", "ttst_ms", "itl_ms", "output_tokens_per_s_per_user"):
        _assert_distribution(level[name])
    samples = level["samples"]
    assert len(samples) == requests
    assert sum(s["output_tokens"] for s in samples) == level["output_tokens"]
    assert math.isclose(level["output_tokens_per_s"] * level["duration_s"], level["output_tokens"], rel_tol=1e-4)
    for s in samples:
        assert s["error"] is None
        assert 0 < s["ttft_ms"] <= s["latency_ms"]
        assert 1 < s["output_tokens"] <= max_tokens
        # the definition of ITL, checked on the numbers as reported (rounded to nanoseconds)
        rebuilt = s["ttft_ms"] + s["itl_ms"] * (s["output_tokens"] - 1)
        assert math.isclose(rebuilt, s["latency_ms"], abs_tol=1e-5 * s["output_tokens"])
        assert s["ttst_ms"] + s["ttft_ms"] <= s["latency_ms"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bench_llm_sweep_reports_consistent_ttft_itl_tokens_and_goodput(
    xclient: Xclient,  # noqa: F811
    triton_server: Any,
    protocol: str,
    tmp_path: Any,
) -> None:
    report_file, plot_file = tmp_path / "bench.md", tmp_path / "sweep.png"
    url = triton_server.url(protocol)
    argv = ["--url", url, "--concurrency", "1,2", "--requests", "4", "--warmup", "1", "--max-tokens", "12"]
    report = _bench(xclient, *argv, "--goal", "latency_ms=600000", "--report", report_file, "--plot", plot_file)
    assert (report["model"], report["kind"], report["backend"], report["protocol"]) == (LLM, "llm", "vllm", protocol)
    assert "Triton" in report["prompt"] and "推理" in report["prompt"]  # the default prompt is Chinese
    assert [level["concurrency"] for level in report["levels"]] == [1, 2]
    for level in report["levels"]:
        _assert_llm_level(level, requests=4, max_tokens=12)
        assert level["tokens_source"] == "backend"  # the demo vLLM model returns num_output_tokens
        # the backend's counts and the streamed responses are counted apart; the demo emits one token each
        assert all(s["responses"] == s["output_tokens"] for s in level["samples"])
        assert level["input_tokens"] == sum(s["input_tokens"] for s in level["samples"]) > 0
        assert level["goodput_requests"] == level["succeeded"]  # a goal of ten minutes
    assert plot_file.read_bytes()[:8] == PNG_MAGIC
    markdown = report_file.read_text("utf-8")
    assert f"# xclient bench: {LLM}" in markdown and "| concurrency 2 |" in markdown
    assert "the backend's own token counts" in markdown and "请用三句话" in markdown


def test_bench_counts_streamed_responses_when_the_backend_returns_no_counts(
    xclient: Xclient,  # noqa: F811
    triton_server: Any,
) -> None:
    """The TensorRT-LLM ensemble (v0.20 stand-in) declares no count outputs: tokens are its responses."""
    report = _bench(xclient, "ensemble", "--url", triton_server.grpc_url, "--requests", "3", "--max-tokens", "8")
    (level,) = report["levels"]
    _assert_llm_level(level, requests=3, max_tokens=8)
    assert level["tokens_source"] == "responses" and level["input_tokens"] is None
    assert all(s["responses"] == s["output_tokens"] for s in level["samples"])


def test_bench_goodput_counts_only_requests_within_the_goal(xclient: Xclient, triton_server: Any) -> None:  # noqa: F811
    """A goal no request can meet (a nanosecond to the first token) leaves no goodput; throughput stays."""
    report = _bench(
        xclient, "--url", triton_server.grpc_url, "--requests", "3", "--max-tokens", "4", "--goal", "ttft_ms=0.000001"
    )
    (level,) = report["levels"]
    assert level["goals"] == {"ttft_ms": 0.000001}
    assert level["goodput_requests"] == 0 and level["goodput_per_s"] == 0 and level["requests_per_s"] > 0


@pytest.mark.parametrize(
    ("model", "kind", "extra"),
    [
        ("bge-m3-v", "embed", ["--batch-size", "2", "--prompt", "什么是向量检索？"]),
        ("bge-reranker-v2-m3", "rerank", ["--batch-size", "3"]),
        ("identity", "tensor", ["--length", "4"]),
    ],
)
def test_bench_measures_embedding_rerank_and_tensor_models(
    xclient: Xclient,  # noqa: F811
    url: str,
    model: str,
    kind: str,
    extra: list[str],
) -> None:
    report = _bench(xclient, model, "--url", url, "--requests", "3", "--warmup", "0", *extra)
    assert report["kind"] == kind and report["backend"] is None
    (level,) = report["levels"]
    assert level["requests"] == level["succeeded"] == 3 and level["errors"] == {}
    _assert_distribution(level["latency_ms"])
    assert "ttft_ms" not in level and "itl_ms" not in level
    assert math.isclose(level["requests_per_s"] * level["duration_s"], 3, rel_tol=1e-4)
    assert all(set(s) == {"latency_ms", "error"} for s in level["samples"])


def test_bench_request_rate_sends_the_requests_asked_for(xclient: Xclient, triton_server: Any) -> None:  # noqa: F811
    report = _bench(
        xclient, "identity", "--url", triton_server.grpc_url, "--request-rate", "50", "--arrivals", "constant",
        "--requests", "5", "--warmup", "0",
    )  # fmt: skip
    (level,) = report["levels"]
    assert (level["request_rate"], level["arrivals"], level["requests"]) == (50.0, "constant", 5)
    assert report["load"]["concurrency"] is None


def test_bench_duration_runs_each_level_at_least_that_long(xclient: Xclient, triton_server: Any) -> None:  # noqa: F811
    report = _bench(xclient, "identity", "--url", triton_server.grpc_url, "--duration", "0.3", "--warmup", "0")
    (level,) = report["levels"]
    assert level["requests"] >= 1 and level["duration_s"] >= 0.3  # the loop stops starting requests at 0.3 s


def test_bench_table_on_stdout_and_json_to_a_file(xclient: Xclient, triton_server: Any, tmp_path: Any) -> None:  # noqa: F811
    out = tmp_path / "out.json"
    result = xclient("bench", "--url", triton_server.http_url, "--requests", "2", "--max-tokens", "4", "--json", out)
    assert result.code == 0, result.err
    assert result.out.splitlines()[0].split()[:3] == ["load", "ok", "failed"]
    assert "concurrency 1" in result.out and "output tokens: the backend's own token counts" in result.err
    assert out.read_text("utf-8").startswith('{"xclient"')


def test_bench_failures_are_counted_and_make_the_exit_code_1(xclient: Xclient, triton_server: Any) -> None:  # noqa: F811
    """``vllm_failing`` sends an error after three tokens: every request fails, and says why."""
    result = xclient("bench", "vllm_failing", "--url", triton_server.grpc_url, "--requests", "2", "--warmup", "0",
                     "--max-tokens", "8", "--json")  # fmt: skip
    assert result.code == 1
    (level,) = result.json()["levels"]
    assert (level["requests"], level["succeeded"], level["failed"]) == (2, 0, 2)
    assert sum(level["errors"].values()) == 2 and level["latency_ms"] is None and level["goodput_requests"] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--concurrency", "1,0"], "--concurrency: expected positive integers"),
        (["--concurrency", "2", "--request-rate", "3"], "give one"),
        (["--requests", "3", "--duration", "1"], "--requests and --duration: give one"),
        (["--goal", "tpot_ms=3"], "--goal: expected NAME=MILLISECONDS with NAME one of ttft_ms"),
        (["--goal", "ttft_ms=-1"], "ttft_ms expected a positive number"),
        (["--request-rate", "0"], "--request-rate: expected a positive number"),
        (["--warmup", "-1"], "--warmup: expected 0 or more"),
    ],
)
def test_bench_refuses_bad_options_before_sending_anything(
    xclient: Xclient,  # noqa: F811
    dead_url: str,
    argv: list[str],
    message: str,
) -> None:
    result = xclient("bench", "--url", dead_url, *argv)
    assert result.code == 2 and message in result.err, result.err


def test_bench_plot_without_matplotlib_names_the_extra(
    xclient: Xclient,  # noqa: F811
    dead_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = xclient("bench", "--url", dead_url, "--plot", "x.png")
    assert result.code == 1 and "pip install 'llmops-xclient[bench]'" in result.err


def test_bench_shows_rich_progress_on_a_terminal(
    xclient: Xclient,  # noqa: F811
    triton_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from Xclient.cli import _bench

    monkeypatch.setattr(_bench, "is_tty", lambda stream: True)
    result = xclient("bench", "identity", "--url", triton_server.grpc_url, "--requests", "3", "--concurrency", "1,2")
    assert result.code == 0, result.err
    assert "concurrency 1" in result.err and "concurrency 2" in result.err and "3/3" in result.err
    assert "req/s" not in result.err  # the plain per-level lines are for a stderr that is not a terminal


def test_bench_without_streaming_has_no_itl(xclient: Xclient, triton_server: Any) -> None:  # noqa: F811
    report = _bench(xclient, "--url", triton_server.grpc_url, "--requests", "2", "--max-tokens", "6", "--no-stream")
    (level,) = report["levels"]
    assert report["stream"] is False and level["itl_ms"] is None and level["ttst_ms"] is None
    for s in level["samples"]:
        assert s["responses"] == 1 and s["output_tokens"] > 1 and s["ttft_ms"] <= s["latency_ms"]


def test_models_stats_watch_shows_the_requests_of_each_interval(
    xclient: Xclient,  # noqa: F811
    triton_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between the two refreshes, three requests to ``text``: the second refresh shows exactly those."""
    from Xclient.client import ModelClient

    def three_requests(seconds: float) -> None:
        assert seconds == 0.25
        with ModelClient(triton_server.http_url, "text") as client:
            for text in ("统计", "队列", "时间"):
                client.infer_sample(INPUT_TEXT=text)

    monkeypatch.setattr(_models, "pause", three_requests)
    result = xclient("models", "stats", "text", "--url", triton_server.grpc_url, "--watch", "0.25", "--count", "2",
                     "--json")  # fmt: skip
    assert result.code == 0, result.err
    first, second = result.records()
    assert (first["refresh"], first["since"], first["interval_s"]) == (1, "server start", None)
    assert (second["refresh"], second["since"]) == (2, "last refresh") and second["interval_s"] > 0
    (model,) = second["models"]
    assert model["name"] == "text" and model["success"] == 3 and model["fail"] == 0 and model["inferences"] == 3
    assert model["queue"] == model["compute_infer"] == 3
    phases = [model[f"{phase}_ms"] for phase in ("queue", "compute_input", "compute_infer", "compute_output")]
    assert all(p is not None and p >= 0 for p in phases)
    assert sum(phases) <= model["request_ms"]  # Triton's request time includes the queue and the compute
    assert math.isclose(model["requests_per_s"] * second["interval_s"], 3)
    assert first["models"][0]["success"] >= 0


def test_models_stats_watch_table_and_bad_period(xclient: Xclient, triton_server: Any) -> None:  # noqa: F811
    table = xclient("models", "stats", "text", "--url", triton_server.http_url, "--watch", "0.05", "--count", "2")
    assert table.code == 0
    assert "since the server started" in table.out and "in the last" in table.out
    assert table.out.count("queue ms  input ms  infer ms  output ms  request ms") == 2
    bad = xclient("models", "stats", "--url", triton_server.http_url, "--watch", "0")
    assert bad.code == 2 and "--watch: expected a positive number of seconds" in bad.err


# -- the arithmetic, on made-up samples ---------------------------------------------------------------


def test_sample_itl_is_the_decode_time_per_token_after_the_first() -> None:
    sample = stats.Sample(start=10.0, end=10.5, token_times=(10.1, 10.2, 10.3, 10.5))
    assert sample.tokens == 4 and sample.tokens_source == "responses"
    assert math.isclose(sample.ttft, 0.1) and math.isclose(sample.ttst, 0.1)
    assert math.isclose(sample.itl, 0.4 / 3)
    counted = stats.Sample(start=0.0, end=1.0, token_times=(0.2, 1.0), output_tokens=9)
    assert counted.tokens_source == "backend" and math.isclose(counted.itl, 0.8 / 8)
    assert stats.Sample(0.0, 1.0, (0.5,)).itl is None  # one token: no ITL
    assert stats.Sample(0.0, 1.0, (1.0,), output_tokens=9).itl is None  # one response: no time between tokens


def test_summarize_counts_goodput_and_errors() -> None:
    samples = [
        stats.Sample(0.0, 1.0, (0.1, 0.2, 1.0)),
        stats.Sample(0.0, 2.0, (0.5, 1.0, 2.0)),
        stats.Sample(0.0, 0.3, error="InferenceError: boom"),
    ]
    level = stats.summarize(samples, duration_s=2.0, goals={"ttft_ms": 200}, llm=True, load={"concurrency": 2})
    assert (level["requests"], level["succeeded"], level["failed"]) == (3, 2, 1)
    assert level["errors"] == {"InferenceError: boom": 1}
    assert level["requests_per_s"] == 1.0 and level["goodput_requests"] == 1 and level["goodput_per_s"] == 0.5
    assert level["output_tokens"] == 6 and level["output_tokens_per_s"] == 3.0 and level["tokens_source"] == "responses"
    assert level["latency_ms"]["p50"] == 1500.0 and level["ttft_ms"]["min"] == 100.0
    assert level["input_tokens"] is None and level["concurrency"] == 2


def test_distribution_interpolates_like_numpy() -> None:
    import numpy as np

    values = [0.003, 0.001, 0.010, 0.002, 0.007]
    dist = stats.distribution(values)
    assert dist is not None
    for q in stats.PERCENTILES:
        assert math.isclose(dist[f"p{q}"], float(np.percentile(np.array(values) * 1000, q)))
    assert stats.distribution([]) is None


def test_poisson_arrivals_are_seeded_and_have_the_rate_on_average() -> None:
    times = stats.arrivals(10.0, 2000, seed=1)
    assert times == stats.arrivals(10.0, 2000, seed=1) and times[0] == 0.0
    assert all(b >= a for a, b in zip(times, times[1:], strict=False))
    assert math.isclose(times[-1] / (len(times) - 1), 0.1, rel_tol=0.1)  # the mean gap of 1999 draws


def test_parse_goals_refuses_what_it_cannot_use() -> None:
    assert stats.parse_goals(None) == {} and stats.parse_goals("") == {}
    with pytest.raises(XclientValueError, match="got 'ttft'"):
        stats.parse_goals("ttft")
    with pytest.raises(XclientValueError, match="itl_ms expected a positive number"):
        stats.parse_goals("itl_ms=abc")
