# Generic text model: prompt [B, 1] -> completion [B, 1], the stand-ins' answer (Xclient/server/_demo_llm.py).
import numpy as np
import triton_python_backend_utils as pb_utils

from Xclient.server._demo_llm import answer


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            prompts = pb_utils.get_input_tensor_by_name(request, "prompt").as_numpy()
            texts = [[answer(p.decode("utf-8"), "text_llm").encode("utf-8")] for p in prompts.reshape(-1)]
            out = pb_utils.Tensor("completion", np.array(texts, dtype=object))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
