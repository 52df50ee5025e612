# Generic echo model: for each output OUT_<X> in the config, returns input <X> unchanged if present.
import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        self.pairs = [(o["name"][4:], o["name"]) for o in cfg["output"] if o["name"].startswith("OUT_")]

    def execute(self, requests):
        responses = []
        for req in requests:
            outs = []
            for src, dst in self.pairs:
                t = pb_utils.get_input_tensor_by_name(req, src)
                if t is not None:
                    outs.append(pb_utils.Tensor(dst, t.as_numpy()))
            responses.append(pb_utils.InferenceResponse(output_tensors=outs))
        return responses
