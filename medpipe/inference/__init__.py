"""Inference: out-of-fold and test probabilities of trained fold models, with TTA (torch).

The stored predictions, the blend and what a stage reads are torch-free: :mod:`medpipe.predictions`.
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
