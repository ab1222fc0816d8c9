"""``train_fold``: train one model on one fold with Lightning, resumable and reproducible."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger

from medpipe.config import write_yaml_atomic
from medpipe.console import say
from medpipe.data.dataset import (
    explain_worker_death,
    make_loader,
)
from medpipe.guards import redact_config
from medpipe.io.atomic import atomic_write_text, remove_stale_temps
from medpipe.layout import FoldDir, RunLayout, data_files
from medpipe.models.families import get_family
from medpipe.runtime import (
    resolve_accelerator,
    resolve_num_workers,
    resolve_performance,
    resolve_precision,
)
from medpipe.training.callbacks import (
    AtomicCheckpointIO,
    ConsoleEpochLine,
    ProgressWriter,
    SnapshotCheckpoint,
)
from medpipe.training.module import FoldModule
from medpipe.training.schedule import cycle_ends

__all__ = ["train_fold", "summarise"]


def _loggers(
    run_cfg: Mapping[str, Any], out_dir: Path, family: str, model_name: str, fold: int
) -> list[Logger]:
    """CSV always; TensorBoard, MLflow (file store) and W&B (offline) only when the config asks."""
    wanted = dict(run_cfg.get("logging") or {})
    # One version folder per attempt: a resumed run adds csv/version_<n> instead of erasing the log.
    loggers: list[Logger] = [CSVLogger(save_dir=out_dir, name="csv")]

    def need(flag: str, *modules: str) -> None:
        if not any(importlib.util.find_spec(m) for m in modules):
            raise ModuleNotFoundError(
                f"config logging.{flag}: true needs the {modules[0]} package, which is not installed"
            )

    if wanted.get("tensorboard"):
        from lightning.pytorch.loggers import TensorBoardLogger

        need("tensorboard", "tensorboard", "tensorboardX")
        loggers.append(TensorBoardLogger(save_dir=out_dir, name="tensorboard"))
    if wanted.get("mlflow"):
        from lightning.pytorch.loggers import MLFlowLogger

        need("mlflow", "mlflow")
        # The local file store needs no server and no database; MLflow 3 asks for an opt-in.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        loggers.append(
            MLFlowLogger(
                experiment_name=f"medpipe-{family}",
                run_name=RunLayout.fold_job(model_name, fold),
                tracking_uri=FoldDir(family, model_name, fold, out_dir).mlruns.resolve().as_uri(),
            )
        )
    if wanted.get("wandb"):
        from lightning.pytorch.loggers import WandbLogger

        need("wandb", "wandb")
        os.environ["WANDB_MODE"] = "offline"
        loggers.append(
            WandbLogger(
                project="medpipe",
                name=f"{family}-{RunLayout.fold_job(model_name, fold)}",
                save_dir=str(out_dir),
                offline=True,
            )
        )
    return loggers


def data_fingerprint(data_dir: Path, *extra: Path) -> str:
    """SHA-256 of ``folds.csv`` and ``meta.csv`` (and ``extra`` files: a ``@pl<k>`` variant's
    pseudo-label rows): a re-ingest, new folds or new pseudo-labels must not resume old weights."""
    digest = hashlib.sha256()
    files = data_files(data_dir)
    for path in (files["folds"], files["meta"], *extra):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def _resumable(
    last: Path,
    hparams: Mapping[str, Any],
    fingerprint: str,
    epochs: int,
    monitor: str | None = None,
) -> int:
    """The epochs ``last.ckpt`` completed when it is an unfinished run of the same family, config,
    seed and data (training resumes after them); 0 when it is not to be resumed.

    A finished ``last.ckpt`` is not resumed: Snakemake reruns a finished job only when asked to
    (``-R``, changed inputs), and then it means "train again".
    """
    if not last.is_file():
        return 0
    stamp = FoldDir("", "", 0, last.parent).resume_stamp
    if not stamp.is_file() or json.loads(stamp.read_text()).get("data") != fingerprint:
        warnings.warn(
            f"{last}: written for other data (folds/meta changed); training from scratch",
            stacklevel=2,
        )
        return 0
    try:
        saved = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged checkpoint is not worth dying for: start over
        warnings.warn(f"{last}: unreadable ({err}); training from scratch", stacklevel=2)
        return 0
    same = {k: saved.get("hyper_parameters", {}).get(k) for k in hparams} == dict(hparams)
    if not same:
        warnings.warn(f"{last}: written for another config; training from scratch", stacklevel=2)
        return 0
    history = saved.get("medpipe_history") or []
    if monitor is not None and any(monitor not in h for h in history):
        warnings.warn(
            f"{last}: written by another medpipe version (its epochs were not scored by "
            f"{monitor}); training from scratch",
            stacklevel=2,
        )
        return 0
    done = int(saved.get("epoch", 0)) + 1
    if done >= epochs:
        warnings.warn(f"{last}: training had finished; training again from scratch", stacklevel=2)
        return 0
    return done


def launcher_environment(devices: Any) -> list[Any]:
    """``[LightningEnvironment()]`` when a SLURM family must start its own DDP ranks, else ``[]``.

    Snakemake's SLURM jobs run each rule as one ``srun`` family. Lightning would take SLURM's word
    for the world (one family) and silently train on one device; its own launcher starts one
    process per device instead. With one family per device
    (``srun --ntasks-per-node=<devices>``) SLURM starts the ranks and Lightning follows it.
    """
    wanted = len(devices) if isinstance(devices, list | tuple) else devices
    if not isinstance(wanted, int) or wanted <= 1 or not SLURMEnvironment.detect():
        return []
    families = os.environ.get("SLURM_NTASKS_PER_NODE") or os.environ.get("SLURM_NTASKS", "1")
    per_node = int(str(families).split("(")[0].split(",")[0])
    return [LightningEnvironment()] if per_node < wanted else []


class ResumeStamp(L.Callback):
    """Write ``resume.json`` (the data fingerprint ``last.ckpt`` belongs to) on rank 0 in setup.

    Setup runs after every DDP rank has joined, hence after each made its resume decision.
    """

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path, self.fingerprint = Path(path), fingerprint

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero:
            atomic_write_text(json.dumps({"data": self.fingerprint}), self.path)


def _saved_history(last: Path) -> list[dict[str, float]]:
    if not last.is_file():
        return []
    return list(torch.load(last, map_location="cpu", weights_only=True).get("medpipe_history", []))


def summarise(history: Sequence[Mapping[str, float]], monitor: str) -> dict[str, Any]:
    """Best epoch (first maximum of ``monitor``, as ModelCheckpoint picks it) and its scores."""
    if not history:
        raise ValueError("train_fold: no finished epoch to summarise")
    values = [float(h.get(monitor, math.nan)) for h in history]
    scores = [v if math.isfinite(v) else -math.inf for v in values]
    best = history[scores.index(max(scores))]
    seconds = sum(h["train_seconds"] for h in history if math.isfinite(h["train_seconds"]))
    images = sum(h["train_images"] for h in history if math.isfinite(h["train_seconds"]))
    result = {"best_epoch": int(best["epoch"]), "monitor": monitor}
    result.update({k: v for k, v in best.items() if k.startswith("val_")})
    result["epochs"] = len(history)
    result["train_images_per_s"] = images / seconds if seconds else float("nan")
    return result


def _json_safe(values: Mapping[str, Any]) -> dict[str, Any]:
    """NaN and infinities become null: strict JSON has no spelling for them."""
    safe = {}
    for key, value in values.items():
        if isinstance(value, float | int) and not isinstance(value, bool):
            value = float(value) if isinstance(value, float) else int(value)
            if isinstance(value, float) and not math.isfinite(value):
                value = None
        safe[key] = value
    return safe


def train_fold(
    family: str,
    model_name: str,
    model_cfg: Mapping[str, Any],
    run_cfg: Mapping[str, Any],
    data_dir: Path,
    fold: int,
    out_dir: Path,
    *,
    callbacks: Sequence[L.Callback] = (),
) -> dict[str, Any]:
    """Train one model of a family ("segment", "gate", "classify") on one fold; resume from
    ``out_dir/last.ckpt``. The family supplies the data, model, loss and metric.

    Writes ``model.ckpt`` (best by the validation metric: competition Dice for segmentation,
    ROC AUC for the gate, macro F1 for the classifier), ``last.ckpt`` (every epoch),
    ``snapshot_<k>.ckpt`` (``snapshots: K``), ``metrics.json``, ``log.csv`` (one row per epoch), ``progress.png`` and
    ``csv/version_<n>/metrics.csv`` (Lightning's step log, one folder per attempt). With
    ``deterministic: true`` on CPU, a run killed anywhere and rerun ends with the same weights
    as an uninterrupted one. ``callbacks`` are extra Lightning callbacks (tests use them).

    Example:
        >>> metrics = train_fold("segment", "unet_regnetx", cfg["segmentation"]["models"]["unet_regnetx"],
        ...                      cfg, Path("runs/default/data"), 0, Path("out/fold0"))  # doctest: +SKIP
        >>> metrics["best_epoch"], metrics["val_dice"]  # doctest: +SKIP
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    here = FoldDir(family, model_name, int(fold), out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)  # a checkpoint write cut by SIGKILL
    started = time.perf_counter()
    seed = int(run_cfg.get("seed", 0))
    image_size = int(run_cfg["image_size"])
    epochs = int(model_cfg["epochs"])
    batch_size = int(model_cfg["batch_size"])
    deterministic = bool(run_cfg.get("deterministic", False))
    L.seed_everything(seed, workers=True, verbose=False)

    accelerator = resolve_accelerator(run_cfg)
    precision = resolve_precision(run_cfg, accelerator)
    cuda = accelerator == "gpu"
    workers = resolve_num_workers(run_cfg, accelerator)
    trainer_cfg = dict(run_cfg.get("trainer") or {})
    devices = trainer_cfg.get("devices", 1)
    if run_cfg.get("num_workers", "auto") in (None, "auto") and isinstance(devices, int):
        workers //= max(devices, 1)  # every DDP rank starts its own loader workers
    performance = resolve_performance(run_cfg, model_cfg)
    spec = get_family(family, model_cfg).for_data(data_dir, run_cfg)
    data = spec.training_data(
        data_dir, int(fold), here, run_cfg, augment=performance["augment_on"] != "gpu"
    )
    train_set, val_set, sampler = data.train_set, data.val_set, data.sampler
    # BatchNorm cannot train on a batch of one: drop the ragged last batch when there is a full one.
    train_loader = make_loader(
        train_set,
        batch_size,
        num_workers=workers,
        cuda=cuda,
        sampler=sampler,
        drop_last=len(sampler) >= batch_size,
    )
    val_loader = make_loader(val_set, batch_size, num_workers=workers, cuda=cuda)
    steps_per_epoch = len(train_loader)

    hparams = {
        "family": family,
        "model_cfg": dict(spec.cfg),
        "seed": seed,
        "image_size": image_size,
    }
    module = FoldModule(**hparams, performance=performance)
    checkpoint = ModelCheckpoint(
        dirpath=out_dir,
        filename=here.checkpoint.stem,
        monitor=spec.monitor,
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # last.ckpt after every epoch, for resuming. Its own callback: since Lightning 2.6, save_last
    # on the monitored one writes only at epochs that improve the monitor, so a finished run
    # looked unfinished and a killed one resumed from its best epoch instead of its last.
    every_epoch = ModelCheckpoint(
        dirpath=out_dir,
        filename=here.last_checkpoint.stem,
        monitor=None,
        save_top_k=1,
        every_n_epochs=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last = here.last_checkpoint
    fingerprint = data_fingerprint(data_dir, *data.inputs)
    # Every rank decides from the files as they are before fit; rank 0 rewrites the stamp only
    # once all ranks have joined (ResumeStamp), so the ranks cannot decide differently.
    resume = _resumable(last, hparams, fingerprint, epochs, spec.monitor)
    label = f"train {family} {model_name} fold {fold}"
    if resume:
        message = f"{label}: resumed from {last.name} after epoch {resume}/{epochs} (same config and data)"
        print(message, flush=True)
        say(message)
    extra: list[L.Callback] = [
        ResumeStamp(here.resume_stamp, fingerprint),
        ProgressWriter(here, spec.monitor),
        ConsoleEpochLine(label, epochs, spec.monitor),
        *callbacks,
    ]
    snapshots = int(model_cfg.get("snapshots", 0) or 0)
    if snapshots:
        extra.append(SnapshotCheckpoint(here, cycle_ends(epochs, snapshots)))
    interactive = os.isatty(2)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=devices,
        num_nodes=int(trainer_cfg.get("num_nodes", 1)),
        strategy=trainer_cfg.get("strategy", "auto"),
        precision=precision,
        # CUDA lacks deterministic kernels for some ops: warn there instead of failing.
        deterministic=(True if not cuda else "warn") if deterministic else False,
        benchmark=cuda and not deterministic,
        logger=_loggers(run_cfg, out_dir, family, model_name, fold),
        callbacks=[
            checkpoint,
            every_epoch,
            TQDMProgressBar(refresh_rate=1 if interactive else max(steps_per_epoch // 5, 1)),
            *extra,
        ],
        plugins=[AtomicCheckpointIO(), *launcher_environment(devices)],
        default_root_dir=out_dir,
        num_sanity_val_steps=0,
        log_every_n_steps=min(50, steps_per_epoch),
        # The sampler shards itself under DDP and must keep its (seed, epoch) draw.
        use_distributed_sampler=False,
    )
    with warnings.catch_warnings(), explain_worker_death(workers):
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
        trainer.fit(
            module, train_loader, val_loader, ckpt_path=last if resume else None, weights_only=True
        )

    # ddp_spawn trains in child processes: the parent's module has no history, last.ckpt does.
    history = module.history or _saved_history(last)
    metrics: dict[str, Any] = {"task": family, "model": model_name, "fold": fold}
    metrics.update(summarise(history, spec.monitor))
    metrics.update(
        {
            "n_train": len(train_set),
            **data.record,
            "n_val": len(val_set),
            "steps_per_epoch": steps_per_epoch,
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "accelerator": accelerator,
            "precision": precision,
            "num_workers": workers,
            # the weights depend on it (reduction order): verify-reproduction --retrain reuses it
            "torch_threads": torch.get_num_threads(),
            **{k: performance[k] for k in sorted(performance)},
            "seconds": time.perf_counter() - started,
        }
    )
    if trainer.is_global_zero:
        ProgressWriter(here, spec.monitor).write(history)
        atomic_write_text(json.dumps(_json_safe(metrics), indent=2) + "\n", here.metrics)
        write_yaml_atomic(redact_config(run_cfg), here.trained_config, only_if_changed=False)
    return metrics
