"""The multi-label task's library code (Human Protein Atlas shape: K classes per image, macro F1).

``metric`` (macro F1 and its trivial baselines), ``submission`` (the ``Id,Predicted`` writer,
validator and score breakdown), ``decision`` (thresholds chosen by nested CV on OOF) and
``folds`` (multi-label stratified, group-aware folds). :mod:`medpipe.tasks` calls them; this
file imports none of them, so importing one stays as light as that one module.
"""
