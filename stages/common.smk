# Shared names: paths below run_dir, the model and fold lists, the config slices that are
# declared as params (so a change to one slice reruns only what depends on it).
import os
import sys

import medpipe
from medpipe.config import write_yaml_atomic
from medpipe.resources import cpu_count
from medpipe.stage2 import checkpoint_for

RUN = config["run_dir"]
DATA = f"{RUN}/data"
ROOT = config["data"]["root"]
SIZE = int(config["image_size"])
STAGE = int(config["stage"])
FOLDS = list(range(int(config["folds"])))
SEG_MODELS = list(config["segmentation"]["models"])
GATE_MODELS = list((config.get("gate") or {}).get("models") or {})
PKG = Path(medpipe.__file__).resolve().parent

# Rules call `medpipe`: find it beside this Python even when the venv is not activated.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

# The merged config every command reads. Rewritten only when its content changes; it is not an
# input of any rule: reruns come from each rule's declared config slice (params).
CONFIG_FILE = f"{RUN}/config.resolved.yaml"
write_yaml_atomic(dict(config), CONFIG_FILE)

# Slices that every training-like rule depends on.
TRAIN_GLOBALS = {
    k: config.get(k)
    for k in ("seed", "image_size", "folds", "deterministic", "device", "precision", "trainer")
}
# Heavy jobs take every core they are given; torch/LightGBM threads are capped at the real cores.
HEAVY_THREADS = max(1, workflow.cores)


def code(*patterns):
    """The package files a rule's result depends on (globs allowed): editing them reruns the rule."""
    return sorted(str(p) for pattern in patterns for p in PKG.glob(pattern))


wildcard_constraints:
    fold=r"\d+",
    model=r"[A-Za-z0-9_-]+",
    stage=r"[12]",


def data_dir(stage):
    """Stage 1 reads run_dir/data; stage 2 adds the released labels and its own test set."""
    return DATA if int(stage) == 1 else f"{RUN}/stage2/data"


def training_inputs(wildcards):
    d = data_dir(wildcards.stage)
    return {"meta": f"{d}/meta.csv", "folds": f"{d}/folds.csv"}


def model_block(section):
    return lambda wildcards: config[section]["models"][wildcards.model]


