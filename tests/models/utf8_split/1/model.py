# Streams TEXT * 3 as raw UTF-8 bytes, 2 bytes per response (5 ms apart, watching for cancellation),
# the final flag on the last. A cancelled request logs "[utf8_split] request cancelled" and stops.
import time

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
TEXT = "你好😀，这是按字节切开的流：中文、emoji 🎉 和 English 混在一起。"


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            data = (TEXT * 3).encode("utf-8")
            pieces = [data[i : i + 2] for i in range(0, len(data), 2)]
            for index, piece in enumerate(pieces):
                time.sleep(0.005)
                if request.is_cancelled():
                    pb_utils.Logger.log_info(f"[utf8_split] request cancelled after {index} responses")
                    error = pb_utils.TritonError("request cancelled", pb_utils.TritonError.CANCELLED)
                    sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
                    break
                out = pb_utils.Tensor("text", np.array([piece], dtype=object))
                sender.send(pb_utils.InferenceResponse([out]), flags=FINAL if index == len(pieces) - 1 else 0)
        return None
