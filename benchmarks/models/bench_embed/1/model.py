# GPU-like stand-in for bge-m3 (see config.pbtxt): the demo bge-m3-v's contract, a simulated device time
# per execution (a sleep, so the host CPU stays free, as with a GPU), and cheap deterministic outputs.
# dense_vecs: the text's SHAKE-128 hash (384 bytes) as 384 odd integers in [-255, 255], L2-normalized;
# sparse_vecs: per text, a UTF-8 JSON object {token id: weight} with one entry per distinct word (at most 16),
# the id and weight taken from the word's CRC-32 (ids below 250,002, bge-m3's vocabulary size).
import hashlib
import json
import time
import zlib

import numpy as np
import triton_python_backend_utils as pb_utils

DIM = 384
VOCAB = 250_002
MAX_SPARSE = 16
#: The simulated device time of one execution: a fixed cost plus a cost per text of the batch.
DEVICE_S, DEVICE_PER_TEXT_S = 0.010, 0.0002


def device_seconds(texts):
    return DEVICE_S + DEVICE_PER_TEXT_S * texts


def sparse_json(text):
    weights = {}
    for word in text.split()[:MAX_SPARSE]:
        crc = zlib.crc32(word)
        weights[str(crc % VOCAB)] = round(0.05 + (crc >> 24) / 255 * 0.3, 4)
    return json.dumps(weights).encode("utf-8")


class TritonPythonModel:
    def embed(self, texts):
        digests = b"".join(hashlib.shake_128(t).digest(DIM) for t in texts)
        # Odd integers, whose sums of squares float64 holds exactly: a text's vector does not depend on its batch.
        codes = np.frombuffer(digests, dtype=np.uint8).reshape(len(texts), DIM).astype(np.float64) * 2 - 255
        dense = (codes / np.sqrt((codes * codes).sum(axis=1, keepdims=True))).astype(np.float32)
        sparse = np.array([sparse_json(t) for t in texts], dtype=object).reshape(-1, 1)
        outputs = [pb_utils.Tensor("dense_vecs", dense), pb_utils.Tensor("sparse_vecs", sparse)]
        return pb_utils.InferenceResponse(outputs)

    def execute(self, requests):
        batches = [
            [bytes(t) for t in pb_utils.get_input_tensor_by_name(r, "text").as_numpy().reshape(-1)] for r in requests
        ]
        time.sleep(device_seconds(sum(len(b) for b in batches)))  # the device's time: the host CPU is free
        return [self.embed(b) for b in batches]
