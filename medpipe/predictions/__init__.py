"""Stored fold predictions, torch-free: the OOF and test tables (:mod:`.stored`), the blend and
its weight search (:mod:`.blend`), and which fold folders a stage reads (:mod:`.sources`).

The decision steps, the report and the offline bundle read predictions here, without the
training stack; the torch side that makes them is :mod:`medpipe.inference`.
"""
