# Shared names: paths below run_dir, the model and fold lists, the config slices that are
# declared as params (so a change to one slice reruns only what depends on it).
import hashlib
import os
import sys

import medpipe
from medpipe.config import configfiles_as_typed, trained_folds, write_yaml_atomic
from medpipe.guards import redact_config
from medpipe.resources import cpu_count
from medpipe.stage2 import checkpoint_for

RUN = config["run_dir"]
DATA = f"{RUN}/data"
ROOT = config["data"]["root"]
SIZE = int(config["image_size"])
STAGE = int(config["stage"])
FOLDS = trained_folds(config)  # all folds, or train_folds for quick iteration
SEG_MODELS = list(config["segmentation"]["models"])
GATE_MODELS = list((config.get("gate") or {}).get("models") or {})
PKG = Path(medpipe.__file__).resolve().parent

# Rules call `medpipe`: find it beside this Python even when the venv is not activated.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

# The merged config every command reads. Rewritten only when its content changes; it is not an
# input of any rule: reruns come from each rule's declared config slice (params). The salt is
# redacted: only ingest needs it, and it gets it as a flag.
CONFIG_FILE = f"{RUN}/config.resolved.yaml"
write_yaml_atomic(redact_config(config), CONFIG_FILE)

# Ingest gets the salt through the environment, never on a command line (which Snakemake prints,
# stores in .snakemake/ and shows in `ps`). Its rules declare only a digest as params, so a new
# salt still re-ingests. Every job inherits this (a SLURM job re-reads this file).
os.environ["MEDPIPE_SALT"] = str(config["data"].get("salt", "medpipe"))
SALT_DIGEST = hashlib.sha256(os.environ["MEDPIPE_SALT"].encode()).hexdigest()[:12]



# What this run was started with, so REPRODUCE.md can give the exact command (not a guess).
USER_CONFIGFILES = configfiles_as_typed(workflow.config_settings.configfiles, workflow.basedir)
USER_CONFIG_ARGS = list(workflow.config_settings.config_args or [])

# Slices that every training-like rule depends on.
TRAIN_GLOBALS = {
    k: config.get(k)
    for k in ("seed", "image_size", "folds", "deterministic", "device", "precision", "trainer")
}
# Heavy jobs take every core they are given; torch/LightGBM threads are capped at the real cores.
HEAVY_THREADS = max(1, workflow.cores)

# Model jobs (train, predict) sharing this machine at once: performance.parallel_jobs. On a
# 2-core CPU, two one-thread jobs train 1.5x faster together than one two-thread job, and each
# one's single-threaded start-up (imports, ~10 s) overlaps the other's work. Locally the
# `model_jobs` resource caps how many run at once, and each gets its share of the real cores as
# torch threads (`--threads`): more threads than cores would oversubscribe. On a cluster every
# job has its own allocation, so nothing caps their number; each still gets 1/parallel_jobs of
# --cores, as the submitting and the remote side both compute it, so its arithmetic (and its
# weights) match a local run with the same --cores. Both are functions: the executor is known
# only when the jobs are made, not while this file is read.
MODEL_JOBS = max(1, int((config.get("performance") or {}).get("parallel_jobs", 1)))
if "model_jobs" not in workflow.global_resources:
    workflow.register_resource("model_jobs", MODEL_JOBS)


def _runs_here():
    return workflow.local_exec and not workflow.remote_exec


def model_threads(wildcards):
    cores = min(workflow.cores, cpu_count()) if _runs_here() else workflow.cores
    return max(1, cores // MODEL_JOBS)


def model_job_slot(wildcards):
    return 1 if _runs_here() else 0


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


