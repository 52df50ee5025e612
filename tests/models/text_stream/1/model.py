# vLLM-style decoupled test: streams text_input back one character per response (UTF-8, Chinese
# included), the FINAL flag on the last response that still carries text; "" sends only the flag.
# Optional delay_s: the gap between responses, spent checking request.is_cancelled(); a cancelled
# request stops at once (a final CANCELLED error, like vLLM), so its instance is free again.
import time

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def cancelled_while_waiting(request, seconds):
    """Wait ``seconds`` in small steps; True as soon as the request is cancelled."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if request.is_cancelled():
            return True
        time.sleep(min(0.02, max(deadline - time.monotonic(), 0.0)))
    return request.is_cancelled()


def stream_text(request, send):
    tensor = pb_utils.get_input_tensor_by_name(request, "text_input")
    if tensor is None:  # not enforced by Triton: the model has an optional input
        return send(pb_utils.InferenceResponse(error=pb_utils.TritonError("text_input is missing")), flags=FINAL)
    chars = tensor.as_numpy().reshape(-1)[0].decode("utf-8")
    delay = pb_utils.get_input_tensor_by_name(request, "delay_s")
    delay = min(max(float(delay.as_numpy().reshape(-1)[0]), 0.0), 30.0) if delay is not None else 0.0
    if not chars:
        return send(flags=FINAL)
    for index, char in enumerate(chars):
        if index and cancelled_while_waiting(request, delay):
            error = pb_utils.TritonError("request cancelled", pb_utils.TritonError.CANCELLED)
            return send(pb_utils.InferenceResponse(error=error), flags=FINAL)
        out = pb_utils.Tensor("text_output", np.array([char.encode("utf-8")], dtype=object))
        send(pb_utils.InferenceResponse([out]), flags=FINAL if index == len(chars) - 1 else 0)


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            stream_text(request, request.get_response_sender().send)
