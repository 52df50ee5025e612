# Test model: answers each request with its request parameters (a JSON string), one row per batch row.
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "x").as_numpy().shape[0]
            text = request.parameters().encode("utf-8")
            out = np.array([[text]] * rows, dtype=object)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("parameters", out)]))
        return responses
