# Seed example: upper-cases UTF-8 text (UPPER) and counts its Unicode characters (LENGTH).
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        responses = []
        for req in requests:
            texts = pb_utils.get_input_tensor_by_name(req, "INPUT_TEXT").as_numpy()  # [B, 1] of bytes
            decoded = [[v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in row] for row in texts]
            upper = np.array([[s.upper().encode("utf-8") for s in row] for row in decoded], dtype=object)
            length = np.array([[len(s) for s in row] for row in decoded], dtype=np.int32)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("UPPER", upper), pb_utils.Tensor("LENGTH", length)]
                )
            )
        return responses
