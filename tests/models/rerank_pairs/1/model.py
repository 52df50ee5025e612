# Cheap deterministic scores: (distinct characters of the query found in the passage) - len(passage) / 1000,
# so more overlap ranks higher and, among equals, shorter passages win. Raw logits (unbounded).
import numpy as np
import triton_python_backend_utils as pb_utils


def score(query, passage):
    return len(set(query) & set(passage)) - len(passage) / 1000


def respond(request):
    pairs = pb_utils.get_input_tensor_by_name(request, "INPUT_PAIRS").as_numpy()  # [B, 2] of bytes
    scores = np.array([[score(q.decode("utf-8"), p.decode("utf-8"))] for q, p in pairs], dtype=np.float32)
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("SCORES", scores)])


class TritonPythonModel:
    def execute(self, requests):
        return [respond(request) for request in requests]
