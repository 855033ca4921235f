"""The measured harm of a model change: the logit error onnxruntime shows on calibration text.

Twice the mean squared logit error per row is the quantity HAWQ's omega estimates for a weight
change (twice the loss rise of its squared-logit loss, `edgesim.llm.sensitivity`), so a change
no weight format expresses -- the KV-cache dtype (`kv_choice`), the embedding table's format
(`embed_choice`) -- is priced on the same scale as the linears.
"""

from __future__ import annotations

import numpy as np

HARM_SEQ = 64   # tokens per window, as the HAWQ calibration windows


def logit_harm(reference: bytes, variant: bytes, calib: np.ndarray,
               seq: int = HARM_SEQ) -> float:
    """2 x mean over rows of ||logits(variant) - logits(reference)||^2 on `seq`-token windows
    of `calib`, both models run in onnxruntime (the scale of HAWQ's omega, module docstring)."""
    from edgesim.evaluate import session  # onnxruntime loads here
    from edgesim.llm.generate import empty_past, step

    n = len(calib) // seq
    ids = np.asarray(calib[: n * seq], np.int64).reshape(n, seq)
    logits = []
    for model in (reference, variant):
        sess = session(model)
        logits.append(np.concatenate([step(sess, w[None], empty_past(sess))[0] for w in ids]))
    diff = logits[1].astype(np.float64) - logits[0]
    return float(2.0 * (diff ** 2).sum(-1).mean())
