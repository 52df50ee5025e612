# Sends N responses of one short token each, back to back; the last carries the final flag (vLLM's way).
# Each request is served on its own thread, so concurrent streams (the soak) do not queue behind each other.
import threading

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
TOKEN = np.array([b"tok"], dtype=object)


def _serve(request):
    sender = request.get_response_sender()
    n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy().reshape(-1)[0])
    if n <= 0:
        sender.send(flags=FINAL)
        return
    for i in range(n):
        sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("TOKEN", TOKEN)]), flags=FINAL if i == n - 1 else 0)


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            threading.Thread(target=_serve, args=(request,), daemon=True).start()
        return None
