# PyTriton-style decoupled test (a batching model, like PyTriton's): n content responses, then a
# separate empty response that carries only the FINAL flag. n is the largest of the batch's rows;
# response i holds i and the request's parameters (JSON) in every row. Optional delay_s: the gap
# between responses.
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def largest(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return default if tensor is None else tensor.as_numpy().max()


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            rows = pb_utils.get_input_tensor_by_name(request, "n").as_numpy().shape[0]
            parameters = np.array([[request.parameters().encode("utf-8")]] * rows, dtype=object)
            for i in range(int(largest(request, "n", 0))):
                time.sleep(min(max(float(largest(request, "delay_s", 0.0)), 0.0), 30.0) if i else 0.0)
                index = pb_utils.Tensor("i", np.full((rows, 1), i, dtype=np.int32))
                sender.send(pb_utils.InferenceResponse([index, pb_utils.Tensor("parameters", parameters)]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
