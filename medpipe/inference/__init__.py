"""Inference: out-of-fold and test probabilities of trained fold models, with TTA, and the ensemble.

Imports are lazy: the ensemble and threshold steps need numpy only, not torch's start-up cost.
"""

from __future__ import annotations

__all__ = ["hflip_tta", "predict_fold"]


def __getattr__(name: str):
    if name == "predict_fold":
        from medpipe.inference.predict import predict_fold

        return predict_fold
    if name == "hflip_tta":
        from medpipe.inference.tta import hflip_tta

        return hflip_tta
    raise AttributeError(name)
