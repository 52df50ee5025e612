# Multi-version test: returns its own version number (from args["model_version"]) and echoes x as y.
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.version = int(args["model_version"])

    def execute(self, requests):
        responses = []
        for req in requests:
            x = pb_utils.get_input_tensor_by_name(req, "x").as_numpy()
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("version", np.array([self.version], dtype=np.int32)),
                        pb_utils.Tensor("y", x.astype(np.int32)),
                    ]
                )
            )
        return responses
