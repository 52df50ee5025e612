# dense: [len(text), 1.0]; sparse: BROKEN[text] when the text is one of its keys, else {"1": 0.5}.
import numpy as np
import triton_python_backend_utils as pb_utils

BROKEN = {
    "坏字节": b"\xff\xfe",  # not UTF-8
    "坏JSON": b'{"1": 0.5',  # cut JSON
    "列表": b"[1, 2]",  # JSON, not an object
    "坏权重": '{"1": "重"}'.encode(),  # a weight that is not a number
}


def respond(request):
    texts = [t.decode("utf-8") for t in pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)]
    dense = np.array([[len(t), 1.0] for t in texts], dtype=np.float32)
    sparse = np.array([[BROKEN.get(t, b'{"1": 0.5}')] for t in texts], dtype=object)
    return pb_utils.InferenceResponse([pb_utils.Tensor("dense", dense), pb_utils.Tensor("sparse", sparse)])


class TritonPythonModel:
    def execute(self, requests):
        return [respond(request) for request in requests]
