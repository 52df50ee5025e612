# Timeout/concurrency test: sleeps max(delay_s) seconds (capped at 30 s), then echoes x as y (zeros [B,1] if absent).
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        responses = []
        for req in requests:
            delay = pb_utils.get_input_tensor_by_name(req, "delay_s")
            if delay is None:  # Triton does not enforce required inputs when the model has optional ones
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError("slow model: required input 'delay_s' is missing")
                    )
                )
                continue
            delay = delay.as_numpy()
            time.sleep(min(max(float(delay.max()) if delay.size else 0.0, 0.0), 30.0))
            x = pb_utils.get_input_tensor_by_name(req, "x")
            y = x.as_numpy() if x is not None else np.zeros((delay.shape[0], 1), dtype=np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("y", y)]))
        return responses
