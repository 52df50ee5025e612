# Returns its input as its output: the cheapest response a Python-backend model can give.
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("ECHO", pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy())]
            )
            for r in requests
        ]
