"""FastDeploy's ``ChatBot`` interface, on Xclient: a FastDeploy user's script runs by changing its import.

.. code-block:: python

    # from fastdeploy_client.chatbot import ChatBot
    from Xclient.fastdeploy import ChatBot

    chatbot = ChatBot(hostname="127.0.0.1", port=8001)
    for res in chatbot.stream_generate("你好", topp=0.8):
        print(res)        # {'req_id': ..., 'token': '你', 'token_ids': [...], 'is_end': 0}
    print(chatbot.generate("你好，你是谁?", topp=0.8))   # {'req_id': ..., 'results': ..., 'token_ids': [...]}

The parameters, defaults and returned dicts are those of FastDeploy's ``fastdeploy_client.chatbot``
(``llm/client`` in PaddlePaddle/FastDeploy): errors are returned as ``{"req_id", "error_msg"}`` dicts,
not raised, as there. Underneath it is the engine ChatMetaLM uses (:mod:`Xclient.llms._engine`, the
FastDeploy contract of :mod:`Xclient.llms._backends`): as there, each call opens a gRPC connection and
closes it when it ends; a per-response deadline of ``timeout`` seconds; leaving a stream early cancels
the request. Needs no
LangChain.

Differences from FastDeploy's client, on purpose: ``return_all_tokens`` is passed on to the server (the
original drops it); a message list that is not user/assistant turns ending with a user turn is returned
as an ``error_msg`` before anything is sent, as the original's assertions are.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from .exceptions import InferenceServerError, XclientError, XclientTimeoutError
from .llms._backends import FastDeployBackend
from .llms._engine import Engine, Settings

#: FastDeploy's default model name.
DEFAULT_MODEL = "model"


class ChatBot:
    """A FastDeploy LLM service on Triton, over gRPC (``hostname:port``), as ``fastdeploy_client``'s
    ``ChatBot(hostname, port, timeout=120)``; ``model`` (``"model"``) and ``api_key`` are Xclient's."""

    def __init__(
        self, hostname: str, port: int, timeout: float = 120, *, model: str = DEFAULT_MODEL, api_key: str | None = None
    ) -> None:
        if not isinstance(hostname, str) or not hostname:
            raise ValueError("Invalid hostname")
        if not isinstance(port, int) or isinstance(port, bool) or port <= 0 or port > 65535:
            raise ValueError("Invalid port number")
        self.url = f"{hostname}:{port}"
        self.timeout = timeout
        self.model = model
        self._api_key = api_key

    def __repr__(self) -> str:
        return f"ChatBot({self.url!r}, model={self.model!r})"

    def __enter__(self) -> ChatBot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to close: each call opens its connection and closes it when it ends (as FastDeploy's
        client does), so a script that never closes a ChatBot leaves nothing open."""

    def stream_generate(
        self,
        message: Any,
        max_dec_len: int = 1024,
        min_dec_len: int = 1,
        topp: float = 0.7,
        temperature: float = 0.95,
        frequency_score: float = 0.0,
        penalty_score: float = 1.0,
        presence_score: float = 0.0,
        system: str | None = None,
        **kwargs: Any,
    ) -> Iterator[dict[str, Any]]:
        """Yield one dict per response: ``{"req_id", "token", "token_ids", "is_end"}``; on a failure, one
        ``{"req_id", "error_msg"}`` and the end. ``message``: a str, a list of ``{"role", "content"}`` turns
        (user and assistant in turn, ending with a user turn), or a ``ChatMessage`` (an object with a
        ``message`` list, which gets the answer appended). ``kwargs``: ``req_id``, ``eos_token_ids``,
        ``timeout`` (seconds per response), ``return_all_tokens``."""
        timeout = kwargs.get("timeout", self.timeout)
        req_id = str(kwargs.get("req_id") or uuid.uuid4())
        turns = message.message if hasattr(message, "message") else message
        try:
            task = self._task(turns, req_id, timeout, system, kwargs)
            task.update(
                max_dec_len=max_dec_len,
                min_dec_len=min_dec_len,
                topp=topp,
                temperature=temperature,
                frequency_score=frequency_score,
                penalty_score=penalty_score,
                presence_score=presence_score,
            )
            engine = self._engine(timeout)
            try:
                connection = engine.connection(self.model)
                backend = connection.backend
                if not isinstance(backend, FastDeployBackend):
                    raise XclientError(f"Model {self.model!r} on {self.url} is not a FastDeploy model ({backend.name})")
                answer = []
                with connection.open(backend.task_request(task)) as responses:
                    for outputs in responses:
                        result = backend.result(outputs)
                        token = result.get("token", "")
                        answer.append("".join(token) if isinstance(token, list) else str(token))
                        yield _response(result, req_id)
                        if result.get("is_end") == 1:
                            break
            finally:
                engine.close()
        except XclientTimeoutError:
            yield {"req_id": req_id, "error_msg": f"Fetch response from server timeout ({timeout}s)"}
            return
        except InferenceServerError as e:
            yield {"req_id": req_id, "error_msg": e.server_message or e.message}
            return
        except (XclientError, ValueError) as e:
            yield {"req_id": req_id, "error_msg": str(e)}
            return
        if hasattr(message, "message"):
            message.message.append({"role": "assistant", "content": "".join(answer)})

    def generate(
        self,
        message: Any,
        max_dec_len: int = 1024,
        min_dec_len: int = 1,
        topp: float = 0.7,
        temperature: float = 0.95,
        frequency_score: float = 0.0,
        penalty_score: float = 1.0,
        presence_score: float = 0.0,
        system: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The whole answer: ``{"req_id", "results", "token_ids"}``, or on a failure ``{"req_id",
        "error_msg": {"error_msg": "response error, please check the info: ..."}}`` (FastDeploy's form)."""
        results = ""
        token_ids: list[int] = []
        error: dict[str, str] | None = None
        res: dict[str, Any] = {"req_id": kwargs.get("req_id")}
        for res in self.stream_generate(
            message,
            max_dec_len,
            min_dec_len,
            topp,
            temperature,
            frequency_score,
            penalty_score,
            presence_score,
            system,
            **kwargs,
        ):
            if "token" not in res or "error_msg" in res:
                error = {"error_msg": f"response error, please check the info: {res}"}
            elif isinstance(res["token"], list):
                results, token_ids = "".join(res["token"]), list(res["token_ids"])
            else:
                results += res["token"]
                token_ids += res["token_ids"]
        if error:
            return {"req_id": res.get("req_id"), "error_msg": error}
        return {"req_id": res.get("req_id"), "results": results, "token_ids": token_ids}

    # -- internals ---------------------------------------------------------------------------------

    def _engine(self, timeout: float) -> Engine:
        """The connection of one call (its per-response deadline: ``timeout``)."""
        options = {"inference_timeout_s": timeout, "api_key": self._api_key}
        return Engine(Settings(server_url=f"grpc://{self.url}", options=options, backend="fastdeploy"))

    def _task(
        self, turns: Any, req_id: str, timeout: float, system: str | None, kwargs: Mapping[str, Any]
    ) -> dict[str, Any]:
        task: dict[str, Any] = {"req_id": req_id, "response_timeout": timeout}
        if system is not None:
            task["system"] = system
        for name in ("eos_token_ids", "return_all_tokens"):
            if kwargs.get(name) is not None:
                task[name] = kwargs[name]
        if isinstance(turns, str):
            task["text"] = turns
        elif isinstance(turns, list):
            task["messages"] = _checked_turns(turns)
        else:
            raise ValueError(
                "The message should be string or list of dict like "
                "[{'role': 'user', 'content': 'Hello, what's your name?''}]"
            )
        return task


def _checked_turns(turns: list[Any]) -> list[Any]:
    """A message list as FastDeploy's ChatBot accepts it: odd, user and assistant in turn, ending with a user."""
    if len(turns) % 2 != 1:
        raise ValueError("The length of message should be odd while it's a list.")
    for index, turn in enumerate(turns):
        role = turn.get("role") if isinstance(turn, Mapping) else None
        expected = "user" if index % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"The {index}-th element key should be '{expected}'")
    return turns


def _response(result: Mapping[str, Any], req_id: str) -> dict[str, Any]:
    """A result as FastDeploy's ChatBot formats it."""
    if "choices" in result:
        return {
            "req_id": req_id,
            "token": [choice["token"] for choice in result["choices"]],
            "token_ids": [choice["token_ids"] for choice in result["choices"]],
            "is_end": 1,
        }
    token = result["result"] if "result" in result else result.get("token", "")
    return {
        "req_id": req_id,
        "token": token,
        "token_ids": result.get("token_ids", []),
        "is_end": result.get("is_end", False),
    }


__all__ = ["DEFAULT_MODEL", "ChatBot"]
