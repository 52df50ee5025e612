# Fleet benchmark: each request takes 20 ms of the instance's time (a sleep: the service time of a
# GPU-bound model, without using the CPU the clients need), then echoes its TEXT as ECHO.
import time

import triton_python_backend_utils as pb_utils

SERVICE_TIME_S = 0.02


class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        responses = []
        for request in requests:
            time.sleep(SERVICE_TIME_S)
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("ECHO", text)]))
        return responses
