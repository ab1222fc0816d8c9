"""The offline bundle needs no training stack: importing medpipe.bundle.infer loads neither
medpipe.training nor medpipe.steps, Lightning or MONAI. (Running infer end to end, which also
loads what its functions import: tests/bundle/test_infer_run.py::test_infer_imports_no_training_stack.)"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = {"medpipe.training", "medpipe.steps", "lightning", "pytorch_lightning", "monai", "optuna"}


def _loaded_after(statement: str) -> set[str]:
    code = (
        "import json, sys\n"
        f"{statement}\n"
        "names = {m.split('.')[0] for m in sys.modules}\n"
        "names |= {'.'.join(m.split('.')[:2]) for m in sys.modules if m.startswith('medpipe.')}\n"
        "print(json.dumps(sorted(names)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_bundle_infer_loads_no_training_stack():
    loaded = _loaded_after("import medpipe.bundle.infer, medpipe.bundle.formats")
    assert not loaded & HEAVY, sorted(loaded & HEAVY)


def test_importing_the_multilabel_bundle_infer_loads_no_training_stack():
    # the multi-label bundle's infer path (running it end to end:
    # tests/bundle/test_multilabel_bundle.py::test_infer_loads_no_training_stack)
    loaded = _loaded_after("import medpipe.bundle.multilabel, medpipe.cli.bundle")
    assert "medpipe.bundle" in loaded
    assert not loaded & HEAVY, sorted(loaded & HEAVY)


def test_the_probe_sees_the_training_stack_when_it_is_there():
    loaded = _loaded_after("import medpipe.training.fit")
    assert {"medpipe.training", "lightning"} <= loaded
