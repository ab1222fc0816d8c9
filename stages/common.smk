# Shared names: every rule path comes from medpipe.layout (the one owner of the run tree), the
# model and fold lists from the typed config view, and each rule's code inputs are computed from
# the imports of the module its command runs. Config slices are declared as params, so a change
# to one slice reruns only what depends on it.
import hashlib
import os
import sys

from medpipe import runlock
from medpipe.code_inputs import code_inputs
from medpipe.synthetic.folder import check_demo_folder
from medpipe.tasks import get_task
from medpipe.config import (
    KEPT,
    RunConfig,
    base_model,
    configfiles_as_typed,
    pseudo_round,
    test_labels,
    write_yaml_atomic,
)
from medpipe.guards import redact_config
from medpipe.layout import CLASSIFY, GATE, PSEUDO_SPLIT, SEGMENT, FoldDir, HpaInputLayout, target_file, test_split
from medpipe.plan import data_size, step_needs
from medpipe.predictions.sources import pseudo_label_sources, stage_sources
from medpipe.resources import cpu_count
from medpipe.predictions.external import class_sources, source_files
from medpipe.tasks.base import NotForThisTask
from medpipe.console import CONSOLE_FD, CONSOLE_FD_ENV
from medpipe.run_summary import finished_run_lines

CFG = RunConfig(config)
TASK = get_task(CFG.task_name)  # the competition task (medpipe/tasks/): families, step modules
try:  # what the task does not have is refused here, in one line, before any job starts
    TASK.check_config(CFG)
except NotForThisTask as err:
    raise WorkflowError(str(err)) from None
LAYOUT = CFG.layout
INPUTS = CFG.inputs
RUN = str(LAYOUT.run_dir)
DATA = str(LAYOUT.data_dir(1))
ROOT = str(INPUTS.root)
SIZE = CFG.image_size
STAGE = CFG.stage
FOLDS = CFG.folds  # all folds, or train_folds for quick iteration
SEG_MODELS = CFG.model_names(SEGMENT)
GATE_MODELS = CFG.model_names(GATE)
# Memory and time each step needs for this config and data (medpipe plan): a cluster gets these
# as mem_mb / runtime instead of fixed numbers (profiles/slurm sets none); a local run ignores them.
NEEDS = step_needs(config, data_size(config))

# Wildcard patterns of a stage, a model's fold, and a fold job's name (logs, benchmarks).
STAGE_DIR = str(LAYOUT.stage_dir("{stage}"))
FOLD_JOB = LAYOUT.fold_job("{model}", "{fold}")

# Rules call `medpipe`: find it beside this Python even when the venv is not activated.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

# The merged config every command reads. It is written when jobs are about to run (onstart), never
# by a dry run, `--lint` or a report: reading the workflow must not change a finished run's
# record. It is not an input of any rule: reruns come from each rule's declared config slice
# (params). The salt is redacted: only ingest needs it, and it gets it from the environment.
CONFIG_FILE = str(LAYOUT.resolved_config)


onstart:
    write_yaml_atomic(redact_config(config), CONFIG_FILE)
    runlock.claim()


onsuccess:
    runlock.release()
    print("\n".join(finished_run_lines(CFG)), file=sys.stderr)


onerror:
    runlock.release()


# A run killed with kill -9 leaves Snakemake's lock behind: release it when its holder is gone
# (medpipe.runlock), before Snakemake checks it, so rerunning the same command resumes.
if not workflow.remote_exec:
    _lock_note = runlock.release_stale_lock()
    if _lock_note:
        print(_lock_note, file=sys.stderr)

# Each job's few console lines (an epoch, a resume) go to descriptor 3, opened on Snakemake's
# stderr before the rule's own redirection sends everything else to its log (medpipe.console).
shell.prefix(f"set -euo pipefail; exec {CONSOLE_FD}>&2; ")
os.environ[CONSOLE_FD_ENV] = str(CONSOLE_FD)

# Ingest gets the salt through the environment, never on a command line (which Snakemake prints,
# stores in .snakemake/ and shows in `ps`). Its rules declare only a digest as params, so a new
# salt still re-ingests. Every job inherits this (a SLURM job re-reads this file).
_salt = str(config["data"].get("salt", "medpipe"))
os.environ["MEDPIPE_SALT"] = _salt
SALT_DIGEST = hashlib.sha256(_salt.encode()).hexdigest()[:12]



# What this run was started with, so REPRODUCE.md can give the exact command (not a guess).
USER_CONFIGFILES = configfiles_as_typed(workflow.config_settings.configfiles, workflow.basedir)
USER_CONFIG_ARGS = list(workflow.config_settings.config_args or [])

# Slices that every training-like rule depends on.
TRAIN_GLOBALS = {
    k: config.get(k)
    for k in ("seed", "image_size", "folds", "deterministic", "device", "precision", "trainer")
}


def heavy_threads(wildcards):
    """Heavy jobs take every core they are given (torch/LightGBM threads are capped at the real
    cores). A function: `--cores` is read when jobs are made, so `snakemake --unlock` and
    `--report` need no --cores."""
    return max(1, workflow.cores)


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


def code(*modules):
    """The package files a rule's result depends on: the modules its command runs and their
    imports inside medpipe (medpipe.code_inputs). Editing any of them reruns the rule."""
    return code_inputs(*modules)


def path(p):
    return str(p)


wildcard_constraints:
    fold=r"\d+",
    model=r"[A-Za-z0-9_-]+(@[a-z0-9]+)?",  # a variant: <model>@kept (retrain: auto), <model>@pl<k>
    stage=r"[12]",


def data_dir(stage):
    """Stage 1 reads run_dir/data; stage 2 adds the released labels and its own test set."""
    return str(LAYOUT.data_dir(stage))


def training_inputs(wildcards):
    return {"meta": path(LAYOUT.meta(wildcards.stage)), "folds": path(LAYOUT.folds(wildcards.stage))}


def model_block(family):
    return lambda wildcards: CFG.models(family)[base_model(wildcards.model)]


def fold_dir(family):
    """The fold folder pattern of a task: {stage}, {model}, {fold} are wildcards."""
    return path(LAYOUT.fold_dir("{stage}", family, "{model}", "{fold}"))


def fold_file(family, what):
    """A file of a task's fold folder, as a pattern for rules (``what``: a FoldDir attribute)."""
    return path(getattr(FoldDir(family, "{model}", 0, Path(fold_dir(family))), what))


# The family whose models get @pl<k> variants: the task's classifier, else segmentation.
PSEUDO_FAMILY = CLASSIFY if CLASSIFY in TASK.families else SEGMENT


def pseudo_outputs():
    """The files of a ``@pl<k>`` fold's pseudo-labels, as rule patterns (a segmentation
    variant's masks, a classifier variant's K-hot targets)."""
    d = FoldDir(PSEUDO_FAMILY, "{model}", 0, Path(fold_dir(PSEUDO_FAMILY)))
    files = {
        "pseudo_rows": path(d.pseudo_rows),
        "pseudo_provenance": path(d.pseudo_provenance),
        "pseudo_images": path(d.pseudo_cache("images", SIZE)),
    }
    if PSEUDO_FAMILY == SEGMENT:
        files["pseudo_masks"] = path(d.pseudo_cache("masks", SIZE))
    else:
        files["pseudo_targets"] = path(target_file(d.pseudo_dir, PSEUDO_SPLIT))
    return files


def pseudo_files(wildcards):
    """A ``@pl<k>`` variant's pseudo-labels (rule pseudo_label), which its training reads;
    nothing for a plain model."""
    if pseudo_round(wildcards.model) < 1:
        return {}
    return {k: v.format(**wildcards) for k, v in pseudo_outputs().items()}


def pseudo_weight(wildcards):
    """The slice of pseudo_label a variant's training depends on (the draw share)."""
    return CFG.pseudo_label.get("weight") if pseudo_round(wildcards.model) else None


def pseudo_sources(wildcards):
    """The test predictions that label a ``@pl<k>`` fold: round k-1 of the same fold (and the
    finding gate's same fold); predictions.sources.pseudo_label_sources is the one rule."""
    sources = pseudo_label_sources(CFG, LAYOUT.stage(wildcards.stage), wildcards.model, int(wildcards.fold))
    return {f"{family}_test": path(d.test) for family, d in sources.items()}


def trained_checkpoint(family):
    """The weights a stage predicts with (stage 2 keeps stage 1's unless the model is retrained)."""
    return lambda w: path(CFG.trained_fold(int(w.stage), family, w.model, int(w.fold)).checkpoint)


def fold_predictions(stage, which, families=TASK.families):
    """Every model x fold prediction file (``oof`` or ``test``) of a stage, of every model
    family the task trains: with ``retrain: auto`` both variants and the choice between them
    (the steps read the chosen one)."""
    files = [
        path(d.predictions(which))
        for family in families
        for dirs in stage_sources(CFG, LAYOUT.stage(stage), family, every_variant=True).values()
        for d in dirs
    ]
    if int(stage) == 2 and any(CFG.auto_models(t) for t in families):
        files.append(path(LAYOUT.stage(2).retrain_choice))
    return files


def teammate_predictions(stage, which):
    """A multi-label run's teammates' imported class probabilities (``oof`` or ``test``), which
    the decision weighs as sources of their own (none for SIIM: its sources are models)."""
    if CLASSIFY not in TASK.families:
        return []
    return [path(d.predictions(which)) for dirs in class_sources(CFG, LAYOUT.stage(stage)).values() for d in dirs]


def variant_oof(wildcards):
    """The OOF predictions of both variants of every ``retrain: auto`` model (stage 2)."""
    return [
        path(d.predictions("oof"))
        for family in TASK.families
        for m in CFG.auto_models(family)
        for name in (m, m + KEPT)
        for d in LAYOUT.folds_of(2, family, name, FOLDS)
    ]


def fold_log(step):
    return path(LAYOUT.log(step, FOLD_JOB, stage="{stage}"))


def fold_benchmark(step):
    return path(LAYOUT.benchmark(step, FOLD_JOB, stage="{stage}"))


def stage_log(step):
    return path(LAYOUT.log(step, stage="{stage}"))


def stage_benchmark(step):
    return path(LAYOUT.benchmark(step, stage="{stage}"))


def folder_of(files, name, folder, file):
    """A folder a command writes into or reads from, derived from one of the rule's ``files``
    ("input" or "output"; ``name``: its name or index) as Snakemake advises, so it follows that
    file wherever Snakemake puts it. ``folder`` and ``file`` are layout patterns: they say how
    deep the file sits. A derived param is no rerun trigger of its own; its file already is."""
    depth = len(Path(file).relative_to(folder).parts)

    def above(paths):
        chosen = paths[name] if isinstance(name, int) else getattr(paths, name)
        return str(Path(chosen).parents[depth - 1])

    if files == "input":
        return lambda wildcards, input: above(input)
    return lambda wildcards, output: above(output)


def data_folder():
    """The stage's data folder a command reads (its image caches are not declared inputs), from
    the rule's ``meta`` input: meta.csv lies at the same depth in every stage's data folder."""
    return folder_of("input", "meta", data_dir(1), LAYOUT.meta(1))


def fused(which):
    """A stage's LightGBM p(finding) (``oof`` or ``test``), when fusion is on."""
    return lambda w: {"fused": path(LAYOUT.fused(w.stage, which))} if CFG.fusion_enabled else {}


# Teammates' sources (ensemble.external, docs/ensemble.md), imported by rule import_external.
EXTERNAL = CFG.external()


def external_source(wildcards):
    """The source's files for the stage; the extension asked for must be its kind's."""
    block = EXTERNAL[wildcards.name]
    files = source_files(block, wildcards.stage)
    if files["oof"].suffix != f".{wildcards.ext}":
        raise ValueError(
            f"ensemble.external.{wildcards.name}: a {block['kind']} source gives "
            f"{files['oof'].suffix} files, not .{wildcards.ext}"
        )
    return {which: str(p) for which, p in files.items()}


def report_inputs(wildcards):
    """Everything the page reads: the current stage's fold outputs and decisions, and the data."""
    stages = [1, 2] if STAGE == 2 else [1]
    inputs = {
        "submission": path(LAYOUT.submission),
        "meta": path(LAYOUT.meta(STAGE)),
        "folds": path(LAYOUT.folds(STAGE)),
        "quarantine": path(LAYOUT.quarantine(STAGE)),
        "cv": [path(LAYOUT.cv(s)) for s in stages],
        "thresholds": path(LAYOUT.thresholds(STAGE)),
        "heatmap": path(LAYOUT.heatmap(STAGE)),
        "seg": fold_predictions(STAGE, "oof", (SEGMENT,)),
        "gate": [p for s in stages for p in fold_predictions(s, "oof", (GATE,))],
        # Training logs live where the fold was trained: stage 1 for a model kept in stage 2.
        "logs": [
            path(p)
            for family in (SEGMENT, GATE)
            for m in CFG.model_names(family)
            for f in FOLDS
            for d in [CFG.trained_fold(STAGE, family, m, f)]
            for p in (d.metrics, d.log_csv)
        ],
    }
    labels = test_labels(config, STAGE)
    if labels is not None:  # the report scores the submission on them
        inputs["test_labels"] = str(labels)
    if CFG.fusion_enabled:
        inputs["fusion"] = [path(LAYOUT.fused(STAGE, "oof")), path(LAYOUT.feature_importance(STAGE))]
    return inputs
