"""From out-of-fold probabilities to the submission's masks: the post-processing decision.

- :mod:`~medpipe.decision.morphology`: 8-connected components of image stacks, small ones removed.
- :mod:`~medpipe.decision.search`: the vectorised grid search over (classification, pixel
  threshold, min area) settings on OOF.
- :mod:`~medpipe.decision.policy`: the rules (:data:`~medpipe.decision.policy.RULES`), their
  ablation and the choice of the submission's rule by nested CV.
- :mod:`~medpipe.decision.apply`: the chosen setting applied to probabilities
  (``thresholds.json`` to masks), and masks resized back to DICOM size.
- :mod:`~medpipe.decision.plots`: the heat map of the OOF metric over the grid.
"""
