"""The head values a transcript's sample lines carry, read as the build's outputs say (int8, or
int16 little-endian for qute's widened softmax heads): qute.expectation.HeadLayout.values."""

import numpy as np

from qute.expectation import HeadLayout


def head_values(outputs: list[dict], samples) -> np.ndarray:
    """(K, N, C): build.json's `outputs` applied to each sample line's heads, in sample order."""
    layout = HeadLayout(outputs, True, outputs[0]["size"])
    return np.stack([np.stack([layout.values(k, s.heads[k]) for s in samples]) for k in range(len(outputs))])


def int_scores(path: dict, heads: np.ndarray):
    """summarize_int with build.json's `uncertainty_path` (the heads' Q24 scale and zero point)."""
    from qute.uncertainty import summarize_int

    return summarize_int(heads, path["scale_q24"], path["zero_point"])
