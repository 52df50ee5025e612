"""A stand-in for an LLM served by PaddlePaddle FastDeploy's LLM serving inside Triton: the Python-backend
code behind the demo model ``model`` (FastDeploy's default name). It reproduces the serving contract of
FastDeploy's ``llm/server/server/triton_server.py`` and ``checker.py`` (docs/protocols.md, section 8), not
a language model: the answer is the demo LLM's deterministic one (:func:`Xclient.server._demo_llm.answer`),
one token at a time.

The contract, as the upstream server speaks it:

- one decoupled model, ``max_batch_size`` 0, input ``IN`` BYTES [1] holding a JSON list of one task dict,
  output ``OUT`` BYTES [1] holding JSON. ``execute`` returns at once; a thread per request sends the
  responses ("push mode").
- The task is checked as ``check_basic_params`` checks it (``text`` / ``messages`` / ``input_ids``,
  ``req_id``, integer lengths, ``topp`` in [0, 1], ``temperature`` >= 0, ``eos_token_ids``, ...); a
  ``req_id`` already in flight is refused; defaults are added (``topp`` 0.7, ``temperature`` 0.95, ...).
  The chat template is the server's own: ``messages`` (and ``text``) are rendered server-side.
- The prompt is truncated to fit (``enable_text_truncate``, default 1); with ``enable_text_truncate``
  0, a prompt that leaves no room for ``min_dec_len`` is refused. ``max_dec_len`` above the limit is
  refused.
- Each token is one response: ``[{"req_id", "is_end": 0, "token_ids": [id], "send_idx", "token",
  "usage": {"completion_tokens", "prompt_tokens"}, ...}]``; the end is one more response with
  ``is_end`` 1, no token ids, ``tokens_all`` (all the text) and the final flag. ``return_all_tokens``
  sends only that last response (here with all the text in ``token`` and ``token_ids``).
- An error is one dict (not a list) ``{"req_id", "error_msg", "error_code": 200, ...}`` on a final
  response. The engine does not watch for cancellation: a cancelled request generates to its end (its
  ``req_id`` stays in flight until then), and sends to the gone client are dropped.

Config ``parameters``: ``MAX_SEQ_LEN`` (default 2048), ``MAX_DEC_LEN`` (1024), ``token_delay_s`` (0).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from ._demo_llm import _parameter, answer, tokenize

#: Token ids of the stand-in: a stable number per token text (it has no vocabulary).
_FIRST_ID = 1000


def render(task: dict[str, Any]) -> str:
    """The server-side chat template (ChatML, as a Qwen2-family tokenizer renders it), over ``messages``
    or ``text`` (one user turn), with ``system`` when given."""
    turns = task["messages"] if "messages" in task else [{"role": "user", "content": task["text"]}]
    system = task.get("system")
    parts = [f"<|im_start|>system\n{system}<|im_end|>\n"] if system else []
    parts += [f"<|im_start|>{turn.get('role', 'user')}\n{turn['content']}<|im_end|>\n" for turn in turns]
    return "".join(parts) + "<|im_start|>assistant\n"


def check_basic_params(task: dict[str, Any]) -> list[str]:
    """The upstream checker's errors for ``task`` (it also fills ``max_dec_len`` and ``topp`` from their
    aliases, as the upstream one does)."""
    errors = []
    if not any(key in task for key in ("text", "input_ids", "messages")):
        errors.append("The input parameters should contain either `text`, `input_ids` or `messages`")
    else:
        if "text" in task:
            if not isinstance(task["text"], str):
                errors.append("The `text` in input parameters must be a string")
            elif task["text"] == "":
                errors.append("The `text` in input parameters cannot be empty")
        if "system" in task and not isinstance(task["system"], str):
            errors.append("The `system` in input parameters must be a string")
        if "messages" in task:
            if len(task["messages"]) % 2 == 0:
                errors.append(f"The number of the message {len(task['messages'])} must be odd")
            if not all("content" in item for item in task["messages"]):
                errors.append("The item in messages must include `content`")
    if "req_id" not in task:
        errors.append("The input parameters should contain `req_id`.")
    if "min_dec_len" in task and (not isinstance(task["min_dec_len"], int) or task["min_dec_len"] < 1):
        errors.append("The `min_dec_len` must be an integer and greater than 0")
    for key in ("max_dec_len", "seq_len", "max_tokens"):
        if key in task and (not isinstance(task[key], int) or task[key] < 1):
            errors.append(f"The `{key}` must be an integer and greater than 0")
    for alias in ("seq_len", "max_tokens"):
        if alias in task and "max_dec_len" not in task:
            task["max_dec_len"] = task[alias]
    if "topp" in task and "top_p" in task:
        errors.append("Only one of ('topp', 'top_p') should be set")
    else:
        for key in ("topp", "top_p"):
            if key in task and not 0 <= task[key] <= 1:
                errors.append(f"The `{key}` must be in [0, 1]")
        if "top_p" in task:
            task["topp"] = task["top_p"]
    if "temperature" in task and task["temperature"] < 0:
        errors.append("The `temperature` must be >= 0")
    if "eos_token_ids" in task:
        if isinstance(task["eos_token_ids"], int):
            task["eos_token_ids"] = [task["eos_token_ids"]]
        if not isinstance(task["eos_token_ids"], (list, tuple)):
            errors.append("The `eos_token_ids` must be an list")
        elif len(task["eos_token_ids"]) > 1:
            errors.append("The length of `eos_token_ids` must be 1 if you set it")
    if "seed" in task and "infer_seed" in task:
        errors.append("Only one of ('infer_seed', 'seed') should be set")
    if "stream" in task and not isinstance(task["stream"], bool):
        errors.append("The `stream` must be a boolean")
    return errors


_DEFAULTS = {
    "min_dec_len": 1,
    "topp": 0.7,
    "temperature": 0.95,
    "penalty_score": 1.0,
    "frequency_score": 0.0,
    "presence_score": 0.0,
}


class FastDeployStandIn:
    """FastDeploy's ``TritonServer`` model, with the engine replaced by the demo's deterministic answer."""

    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(f"the model `{args['model_name']}` must be decoupled")
        self.model_name = args["model_name"]
        self.max_seq_len = int(_parameter(config, "MAX_SEQ_LEN", 2048))
        self.dec_len_limit = int(_parameter(config, "MAX_DEC_LEN", 1024))
        self.token_delay_s = _parameter(config, "token_delay_s", 0.0)
        self.lock = threading.Lock()
        self.in_flight: set[str] = set()
        self.ids: dict[str, int] = {}

    def execute(self, requests: list[Any]) -> None:
        if len(requests) != 1:
            raise self.pb.TritonModelException(f"Only support batch=1, but now it's {len(requests)}.")
        request = requests[0]
        sender = request.get_response_sender()
        raw = self.pb.get_input_tensor_by_name(request, "IN").as_numpy()[0]
        threading.Thread(target=self._serve, args=(raw, sender), daemon=True).start()
        return None

    def finalize(self) -> None:
        pass

    # -- one task --------------------------------------------------------------------------------

    def _serve(self, raw: bytes, sender: Any) -> None:
        req_id = None
        try:
            tasks = json.loads(raw)
            req_id = tasks[0]["req_id"]
            if not tasks or len(tasks) != 1 or not tasks[0]:
                self._error(sender, f"request data should not be empty and query num {len(tasks)} should be 1", req_id)
                return
            task = tasks[0]
            errors = check_basic_params(task)
            if errors:
                self._error(sender, errors, req_id)
                return
            with self.lock:
                if req_id in self.in_flight:
                    message = (
                        f"The req_id {req_id} already exists in the current batch, the current request will be ignored."
                    )
                    self._error(sender, message, req_id)
                    return
            task = {**_DEFAULTS, **task}
            prompt_tokens = tokenize(render(task))
            if int(task.get("enable_text_truncate", 1)):
                room = self.max_seq_len - task.get("max_dec_len", 800)
                prompt_tokens = prompt_tokens[: max(room - 1, 0)]
            prompt_len = len(prompt_tokens)
            max_dec_len = task.get("max_dec_len", min(self.max_seq_len - prompt_len, self.dec_len_limit))
            if prompt_len + task["min_dec_len"] >= self.max_seq_len:
                message = (
                    f"Input text is too long, input_ids_len ({prompt_len}) + min_dec_len ({task['min_dec_len']}) "
                    ">= max_seq_len "
                )
                self._error(sender, message, req_id)
                return
            if max_dec_len > self.dec_len_limit:
                message = (
                    f"The parameter max_dec_len({max_dec_len}) exceeds the limit MAX_DEC_LEN({self.dec_len_limit})."
                )
                self._error(sender, message, req_id)
                return
            with self.lock:
                self.in_flight.add(req_id)
            try:
                self._generate(task, render(task), prompt_len, max_dec_len, sender)
            finally:
                with self.lock:
                    self.in_flight.discard(req_id)
        except Exception as e:  # the upstream server answers every failure with an error
            message = f"Unexcepted promblem happend while insert new task to server task queue: {e}"
            self._error(sender, message, req_id)

    def _generate(self, task: dict[str, Any], prompt: str, prompt_len: int, max_dec_len: int, sender: Any) -> None:
        req_id = task["req_id"]
        # The engine stops at an end token or at max_dec_len; min_dec_len holds the end back.
        tokens = tokenize(answer(prompt, self.model_name))[:max_dec_len]
        all_tokens = task.get("return_all_tokens", False)
        base = {
            "req_id": req_id,
            "infer_seed": task.get("infer_seed", task.get("seed", 0)),
            "return_all_tokens": all_tokens,
        }
        ids = []
        for index, token in enumerate(tokens):
            time.sleep(self.token_delay_s)
            token_id = self._id(token)
            ids.append(token_id)
            if all_tokens:
                continue
            usage = {"completion_tokens": index + 1, "prompt_tokens": prompt_len}
            step = {**base, "is_end": 0, "token_ids": [token_id], "send_idx": index, "token": token, "usage": usage}
            self._send(sender, [step], final=False)
        text = "".join(tokens)
        last = {
            **base,
            "is_end": 1,
            "token_ids": ids if all_tokens else [],
            "send_idx": len(tokens),
            "token": text if all_tokens else "",
            "tokens_all": text,
            "tokens_all_num": len(tokens) + 1,
            "tokens_all_ids": ids,
            "usage": {"completion_tokens": len(tokens) + 1, "prompt_tokens": prompt_len},
        }
        self._send(sender, [last], final=True)

    def _id(self, token: str) -> int:
        with self.lock:
            return self.ids.setdefault(token, _FIRST_ID + len(self.ids))

    def _send(self, sender: Any, result: Any, *, final: bool) -> None:
        import numpy as np

        tensor = self.pb.Tensor("OUT", np.array([json.dumps(result)], dtype=np.object_))
        flags = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        try:
            sender.send(self.pb.InferenceResponse(output_tensors=[tensor]), flags=flags)
        except Exception as e:  # a cancelled request: the upstream engine logs and goes on
            self.pb.Logger.log_info(f"[demo fastdeploy] dropped a response for a gone client: {e}")

    def _error(self, sender: Any, message: Any, req_id: str | None) -> None:
        error = {
            "req_id": req_id,
            "error_msg": str(message),
            "error_code": 200,
            "version": "4.6",
            "timestamp": time.time(),
        }
        self._send(sender, error, final=True)
