# Decoupled error test: sends k responses (i), then an error response flagged FINAL whose message
# contains UTF-8 Chinese text; k == 0 fails at once.
import numpy as np
import triton_python_backend_utils as pb_utils


def fail_after(k, sender):
    for i in range(k):
        sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("i", np.array([i], dtype=np.int32))]))
    error = pb_utils.TritonError(f"stream_failing model: failed after {k} responses 生成失败")
    sender.send(pb_utils.InferenceResponse(error=error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            k = pb_utils.get_input_tensor_by_name(request, "k").as_numpy()
            fail_after(int(k.reshape(-1)[0]), request.get_response_sender())
