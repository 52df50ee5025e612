# Decoupled streaming test: sends n responses (i, "第{i}段"), the FINAL flag on the last; n == 0 sends only the flag.
import time

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        for req in requests:
            sender = req.get_response_sender()
            n = pb_utils.get_input_tensor_by_name(req, "n")
            if n is None:  # Triton does not enforce required inputs when the model has optional ones
                sender.send(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError("stream model: required input 'n' is missing")
                    ),
                    flags=FINAL,
                )
                continue
            n = int(n.as_numpy().reshape(-1)[0])
            d = pb_utils.get_input_tensor_by_name(req, "delay_s")
            delay = min(max(float(d.as_numpy().reshape(-1)[0]), 0.0), 30.0) if d is not None else 0.0
            if n <= 0:
                sender.send(flags=FINAL)
                continue
            for i in range(n):
                if i and delay:
                    time.sleep(delay)
                resp = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("i", np.array([i], dtype=np.int32)),
                        pb_utils.Tensor("text", np.array([f"第{i}段".encode()], dtype=object)),
                    ]
                )
                sender.send(resp, flags=FINAL if i == n - 1 else 0)
        return None
