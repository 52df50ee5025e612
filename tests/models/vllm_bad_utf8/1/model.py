# Whatever the prompt: PIECES, one response each when streaming (the final flag on the last), else
# their concatenation in one response. Decoded with errors="replace": "你\ufffd\ufffd好。\ufffd".
import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
PIECES = ["你".encode(), b"\xff\xfe", "好".encode()[:1], "好".encode()[1:] + "。".encode(), "世".encode()[:2]]


def response(data):
    return pb_utils.InferenceResponse([pb_utils.Tensor("text_output", np.array([data], dtype=object))])


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            stream = pb_utils.get_input_tensor_by_name(request, "stream")
            if stream is not None and stream.as_numpy().reshape(-1)[0]:
                for index, piece in enumerate(PIECES):
                    sender.send(response(piece), flags=FINAL if index == len(PIECES) - 1 else 0)
            else:
                sender.send(response(b"".join(PIECES)), flags=FINAL)
        return None
