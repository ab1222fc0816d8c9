"""A trained run as a self-contained model bundle, and prediction on any DICOM folder with it.

:mod:`.export` writes the bundle (``medpipe export``), :mod:`.infer` predicts with it
(``medpipe infer``) without Snakemake, Lightning, MONAI or Optuna, :mod:`.selftest` checks a
bundle against its SHA-256 manifest and its reference outputs. docs/bundle.md shows the commands.
"""

from __future__ import annotations

__all__ = ["BUNDLE_FORMAT", "BundleError"]

# Bumped when a bundle's files change meaning; infer refuses another format.
BUNDLE_FORMAT = 1


class BundleError(ValueError):
    """The bundle cannot be used as it is: the message (one line) names the file and what to do."""
