# Error test: every request gets an error response (message contains UTF-8 Chinese text).
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        responses = []
        for req in requests:
            x = pb_utils.get_input_tensor_by_name(req, "x").as_numpy()
            msg = f"failing model: this model always fails (x had shape {list(x.shape)}) 模型出错"
            responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(msg)))
        return responses
