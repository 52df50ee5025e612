# score: len(passage) per passage, NaN for a passage "非数"; for the query "少一个" the last score is left out.
import numpy as np
import triton_python_backend_utils as pb_utils


def respond(request):
    query = pb_utils.get_input_tensor_by_name(request, "query").as_numpy().reshape(-1)[0].decode("utf-8")
    passages = [p.decode("utf-8") for p in pb_utils.get_input_tensor_by_name(request, "passages").as_numpy()]
    scores = [float("nan") if p == "非数" else float(len(p)) for p in passages]
    if query == "少一个":
        scores = scores[:-1]
    return pb_utils.InferenceResponse([pb_utils.Tensor("score", np.array(scores, dtype=np.float32))])


class TritonPythonModel:
    def execute(self, requests):
        return [respond(request) for request in requests]
