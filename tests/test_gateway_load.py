"""Load through ``xclient gateway``: 200 concurrent streaming chats with the official ``openai`` SDK, each
text checked against the stand-in's exact answer (nothing lost, nothing repeated), then the gateway's file
descriptors and asyncio tasks back where they were."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from .test_gateway import KEY, QWEN, expected_chat, gateway_process, metric

STREAMS = 200
MAX_TOKENS = 48


@pytest.mark.timeout(600)
async def test_200_concurrent_streaming_chats_lose_and_repeat_nothing_and_leave_nothing_behind(triton_server, tmp_path):
    args = ["--url", triton_server.grpc_url, "--api-key", KEY, "--log-level", "warning"]
    with gateway_process(args, tmp_path / "load.log") as gateway:
        client = openai.AsyncOpenAI(base_url=gateway.v1, api_key=KEY, max_retries=0, timeout=300)
        questions = [f"第{i}个问题：请用中文介绍一下你自己" for i in range(STREAMS)]

        async def chat(question: str) -> tuple[str, list[str]]:
            stream = await client.chat.completions.create(
                model=QWEN,
                messages=[{"role": "user", "content": question}],
                stream=True,
                max_tokens=MAX_TOKENS,
                stream_options={"include_usage": True},
            )
            pieces, reasons = [], []
            async for chunk in stream:
                for choice in chunk.choices:
                    pieces.append(choice.delta.content or "")
                    if choice.finish_reason:
                        reasons.append(choice.finish_reason)
            return "".join(pieces), reasons

        await chat("热身")  # the gateway's Triton connection is made: the baseline includes it
        await client.close()
        baseline_fds = gateway.descriptors()
        baseline_tasks = metric(gateway.metrics(), "xclient_gateway_asyncio_tasks")

        client = openai.AsyncOpenAI(base_url=gateway.v1, api_key=KEY, max_retries=0, timeout=300)
        results = await asyncio.gather(*(chat(q) for q in questions), return_exceptions=True)
        await client.close()

        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures == []
        for question, (text, reasons) in zip(questions, results, strict=True):
            assert text == expected_chat(question, max_tokens=MAX_TOKENS), question
            assert reasons == ["length"]

        deadline = time.monotonic() + 10
        while True:
            metrics = gateway.metrics()
            now = (gateway.descriptors(), metric(metrics, "xclient_gateway_asyncio_tasks"))
            in_flight = metric(metrics, "xclient_gateway_generations_in_flight")
            if now == (baseline_fds, baseline_tasks) and in_flight == 0:
                break
            assert time.monotonic() < deadline, f"(fds, tasks) {now} != baseline {(baseline_fds, baseline_tasks)}"
            await asyncio.sleep(0.1)
        assert f'xclient_gateway_requests_total{{model="{QWEN}",route="chat",status="200"}} {STREAMS + 1}.0' in metrics
