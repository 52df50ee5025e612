# Optional-input test: sum = a + b if optional input b is given else a; b_given says which.
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        responses = []
        for req in requests:
            a = pb_utils.get_input_tensor_by_name(req, "a")
            b = pb_utils.get_input_tensor_by_name(req, "b")
            if a is None:  # Triton does not enforce required inputs when the model has optional ones
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError("optional model: required input 'a' is missing")
                    )
                )
                continue
            a = a.as_numpy()
            if b is not None and b.as_numpy().shape != a.shape:
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(
                            f"optional model: shape of b {b.as_numpy().shape} != shape of a {a.shape}"
                        )
                    )
                )
                continue
            s = a + b.as_numpy() if b is not None else a
            given = np.full((a.shape[0], 1), b is not None, dtype=bool)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("sum", s.astype(np.float32)), pb_utils.Tensor("b_given", given)]
                )
            )
        return responses
