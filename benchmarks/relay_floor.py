"""The floor of benchmark group 7: the least a streamed-chat relay on the gateway's stack can do.

``python -m benchmarks.relay_floor GRPC_URL PORT`` serves ``POST /v1/chat/completions`` (streamed) and
``GET /health`` on uvicorn, with the gateway's loop and HTTP parser, as a bare ASGI app (no Starlette):
it parses the body, renders Qwen2's template, runs the same LLM engine as the gateway and writes each
text as an SSE event as it comes. Nothing else: no validation, no ids, no metrics, no disconnect watch, no
usage. Its added time is what the stack (an HTTP hop through uvicorn, one more busy process on the same
cores) costs on this machine, whatever the gateway does on top: the gateway's rows are read against it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import uvicorn

from Xclient.llms._backends import Sampling
from Xclient.llms._engine import Call, Engine, Settings, arun
from Xclient.llms._streaming import Ending
from Xclient.llms._templates import BUILTIN_TEMPLATES

TEMPLATE = BUILTIN_TEMPLATES["qwen"]
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")]


def event(text: str, finish: bool = False) -> bytes:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": "stop" if finish else None}
    return b"data: " + json.dumps({"choices": [choice]}, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def make_app(engine: Engine) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/health":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        prompt = TEMPLATE.render([(m["role"], m["content"]) for m in request["messages"]])
        sampling = Sampling(max_tokens=request["max_tokens"], stop=TEMPLATE.stop)
        started = False
        async for item in arun(engine, Call(request["model"], prompt, sampling, stream=True)):
            if not started:
                started = True
                await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            if isinstance(item, Ending):
                last = event(item.text, finish=True) + b"data: [DONE]\n\n"
                await send({"type": "http.response.body", "body": last, "more_body": False})
                return
            await send({"type": "http.response.body", "body": event(item), "more_body": True})

    return app


def main() -> None:
    grpc_url, port = sys.argv[1], int(sys.argv[2])
    app = make_app(Engine(Settings(server_url=grpc_url)))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", http="httptools", lifespan="off")


if __name__ == "__main__":
    main()
