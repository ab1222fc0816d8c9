"""The one LightningModule behind every model family (segmentation, the gate, the classifier).

Optimiser (AdamW), the per-step warmup + cosine schedule, per-epoch reseeding, logging and
the per-epoch history live here; the family (:mod:`medpipe.models.families`) supplies the model,
loss, validation metric and outputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn

from medpipe.models.families import get_family
from medpipe.runtime import resolve_performance
from medpipe.training.schedule import lr_factor

__all__ = ["FoldModule", "step_seed"]


def step_seed(seed: int, step: int) -> int:
    """Seed of the torch RNG at an optimiser step, so dropout does not depend on what else drew
    from the global RNG before it (data-loader start-up differs between a fresh and a resumed run)."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


class FoldModule(L.LightningModule):
    """Train one model of one family; selection metric is ``self.family.monitor`` (higher is better).

    ``self.history`` holds one dict per finished epoch (losses, validation scores, learning rate,
    throughput) and travels inside checkpoints, so progress plots survive a resume.

    Example:
        >>> module = FoldModule("gate", {"encoder": "resnet18", "epochs": 2, "batch_size": 4, "lr": 1e-3})
        >>> module.family.monitor
        'val_auc'
    """

    def __init__(
        self,
        family: str,
        model_cfg: Mapping[str, Any],
        seed: int = 0,
        image_size: int | None = None,
        performance: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.family = get_family(family, model_cfg)
        self.cfg = dict(model_cfg)
        self.model = self.family.build_model()
        perf = resolve_performance({"performance": performance}, self.cfg)
        self.channels_last = perf["channels_last"]
        self.compile = perf["compile"]
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # augment_on: gpu moves the augmentations from the loader workers into the step.
        gpu_augment = self.family.batch_augment()
        self.batch_augment = (
            gpu_augment if perf["augment_on"] == "gpu" and gpu_augment.active else None
        )
        self.history: list[dict[str, float]] = []
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self._train_loss = torch.zeros(())
        self._train_images = 0
        self._last_lr = float("nan")
        self._train_started = time.perf_counter()
        self._train_seconds = float("nan")
        self._val_loss = 0.0
        self._val_images = 0
        self._val_stats: list[dict[str, np.ndarray]] = []

    def forward(self, image: torch.Tensor) -> Any:
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        if self.compile:
            # Compiled lazily and kept out of the module tree, so state_dict keys stay plain.
            if "_compiled" not in self.__dict__:
                self.__dict__["_compiled"] = torch.compile(self.model)
            return self.__dict__["_compiled"](image)
        return self.model(image)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training batches, now on the model's device, get the batched augmentations."""
        if self.batch_augment is not None and self.trainer.training:
            batch = self.batch_augment(batch, self.augment_generator())
        return batch

    def augment_generator(self) -> torch.Generator:
        """CPU generator of one step's augmentation draws: a function of (seed, step, rank), so a
        resumed run repeats them and DDP ranks draw differently."""
        seed = np.random.SeedSequence(
            [int(self.hparams.seed), self.global_step, self.global_rank, 1]
        )
        return torch.Generator().manual_seed(int(seed.generate_state(1)[0]))

    def on_train_epoch_start(self) -> None:
        self._reset_epoch()
        self._train_loss = torch.zeros((), device=self.device)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        torch.manual_seed(step_seed(int(self.hparams.seed), self.global_step))
        loss = self.family.loss(self(batch["image"]), batch)
        n = len(batch["image"])
        self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        self._train_loss += loss.detach() * n
        self._train_images += n
        self._last_lr = float(self.optimizers().param_groups[0]["lr"])
        return loss

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking and self._train_images:
            self._train_seconds = time.perf_counter() - self._train_started
        self._val_loss, self._val_images, self._val_stats = 0.0, 0, []

    def _validates(self) -> bool:
        """Whether this epoch is scored: ``validate_from`` (a fraction of the schedule, default 0)
        skips the early epochs, whose checkpoints a cosine schedule almost never selects, so a
        full-size validation set costs only where it can matter. The last epoch always counts."""
        if self.trainer.state.fn != TrainerFn.FITTING:
            return True
        epochs = int(self.trainer.max_epochs or 1)
        start = min(math.ceil(float(self.cfg.get("validate_from", 0.0)) * epochs), epochs - 1)
        return self.current_epoch >= start

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        if not self._validates():
            return
        outputs = self(batch["image"])
        n = len(batch["image"])
        self._val_loss += float(self.family.loss(outputs, batch)) * n
        self._val_images += n
        self._val_stats.append(self.family.validation_stats(outputs, batch))

    def on_validation_epoch_end(self) -> None:
        fitting = self.trainer.state.fn == TrainerFn.FITTING
        if self.trainer.sanity_checking:
            return
        if self._val_stats:
            stats = {k: np.concatenate([s[k] for s in self._val_stats]) for k in self._val_stats[0]}
            scores = self.family.score(stats)
            val_loss = self._val_loss / max(self._val_images, 1)
        elif fitting and not self._validates():
            # Not scored: NaN, which ModelCheckpoint ranks below any real score.
            scores, val_loss = {self.family.monitor: float("nan")}, float("nan")
        else:
            return
        self.log_dict({"val_loss": val_loss, **scores}, prog_bar=True)
        # Each DDP rank trains on its own share: the epoch's images are all ranks' together.
        train_images = self._train_images * self.trainer.world_size
        entry = {
            "epoch": self.current_epoch,
            "train_loss": float(self._train_loss) / self._train_images
            if self._train_images
            else float("nan"),
            "val_loss": val_loss,
            **scores,
            "lr": self._last_lr,
            "train_seconds": self._train_seconds,
            "train_images": train_images,
            "images_per_s": train_images / self._train_seconds if train_images else float("nan"),
        }
        if fitting:
            self.history.append(entry)
            self.log("epoch_images_per_s", entry["images_per_s"])

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.cfg
        optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=float(cfg["lr"]),
            weight_decay=float(cfg.get("weight_decay", 1e-4)),
        )
        epochs = int(self.trainer.max_epochs)
        steps_per_epoch = max(self.trainer.estimated_stepping_batches / epochs, 1.0)
        warmup = float(cfg.get("warmup_epochs", 0.0))
        cycles = max(int(cfg.get("snapshots", 0) or 0), 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, steps_per_epoch, epochs, warmup, cycles)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["medpipe_history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("medpipe_history", []))
