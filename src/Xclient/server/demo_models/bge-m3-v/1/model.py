# Stand-in for the deployed bge-m3 (docs/protocols.md section 4), backed by the real all-MiniLM-L6-v2.
# dense_vecs: the normalized mean-pooled sentence vector (384 floats);
# sparse_vecs: per text, a UTF-8 JSON object {token id: weight}, with character-level keys for the CJK
# characters MiniLM does not know (see Xclient.server._minilm.lexical_weights).
import json

import numpy as np
import triton_python_backend_utils as pb_utils

from Xclient.server._minilm import MiniLM, lexical_weights


class TritonPythonModel:
    def initialize(self, args):
        self.model = MiniLM()

    def execute(self, requests):
        texts, errors = [], []
        for req in requests:
            rows = pb_utils.get_input_tensor_by_name(req, "text").as_numpy().reshape(-1)
            try:
                texts.append([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in rows])
                errors.append(None)
            except UnicodeDecodeError as e:
                texts.append([])
                errors.append(f"input 'text' is not valid UTF-8: {e}")
        flat = [text for batch in texts for text in batch]
        encoded = self.model.encode(flat)  # every request of a dynamic batch in one go
        sparse = [json.dumps(w).encode("utf-8") for w in lexical_weights(encoded)]
        responses, start = [], 0
        for batch, error in zip(texts, errors, strict=True):
            if error is not None:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(error)))
                continue
            end = start + len(batch)
            dense = encoded.sentence[start:end]
            sparse_out = np.array(sparse[start:end], dtype=object).reshape(-1, 1)
            start = end
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("dense_vecs", dense), pb_utils.Tensor("sparse_vecs", sparse_out)]
                )
            )
        return responses
