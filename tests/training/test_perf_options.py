"""The performance data path: memory-mapped cache in workers, loader settings, augmentations on
the model's device, channels_last and torch.compile as config options.

Lightning, MONAI and the models are imported inside the tests: a spawned loader worker imports
this module, and should not pay for them.
"""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import get_worker_info

from medpipe.data.dataset import XrayDataset, fold_rows
from tests.training.tiny_data import SIZE, gate_config, run_config, small_seg_config


def BatchAugment(*args, **kwargs):  # noqa: N802 - stands for the class, imported late
    from medpipe.data.transforms import BatchAugment

    return BatchAugment(*args, **kwargs)


def FoldModule(*args, **kwargs):  # noqa: N802 - stands for the class, imported late
    from medpipe.training.module import FoldModule

    return FoldModule(*args, **kwargs)


def _batch(n: int = 6, device: str = "cpu") -> dict[str, torch.Tensor]:
    image = torch.linspace(0, 1, SIZE * SIZE).reshape(1, 1, SIZE, SIZE).repeat(n, 1, 1, 1)
    mask = torch.zeros(n, 1, SIZE, SIZE)
    mask[:, :, 20:34, 12:26] = 1
    return {"image": image.to(device), "mask": mask.to(device), "index": torch.arange(n)}


# ------------------------------------------------------------------ the cache in loader workers
def _arrays_seen_by_worker(samples):
    """collate_fn, so it runs inside the worker: what the worker's dataset copy holds."""
    dataset = get_worker_info().dataset
    return {"pid": os.getpid(), "arrays": {k: type(a) for k, a in dataset._arrays.items()}}


def test_a_dataset_sent_to_a_spawned_worker_maps_the_cache_instead_of_copying_it(data_dir):
    train, _ = fold_rows(data_dir, 0)
    dataset = XrayDataset(data_dir, train, SIZE, masks=True)
    dataset[0]  # the parent has the maps open now; they must not travel with the pickle
    cache_bytes = sum(a.nbytes for a in dataset._arrays.values())
    assert len(pickle.dumps(dataset)) < cache_bytes / 10
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=4,
        num_workers=1,
        multiprocessing_context="spawn",  # spawn pickles the dataset, as on macOS or Windows
        collate_fn=_arrays_seen_by_worker,
    )
    seen = next(iter(loader))
    assert seen["pid"] != os.getpid()
    assert seen["arrays"] == {("train", "images"): np.memmap, ("train", "masks"): np.memmap}


def test_loader_pins_memory_for_cuda_and_keeps_workers(data_dir):
    from medpipe.data.dataset import make_loader

    dataset = XrayDataset(data_dir, fold_rows(data_dir, 0)[0], SIZE)
    loader = make_loader(dataset, 4, num_workers=2, cuda=True)
    assert loader.pin_memory and loader.persistent_workers
    loader = make_loader(dataset, 4, num_workers=0, cuda=False)
    assert not loader.pin_memory and not loader.persistent_workers


# ------------------------------------------------------------------ config
def test_performance_options_default_off_and_a_model_block_overrides_the_global_one():
    from medpipe.runtime import resolve_performance

    assert resolve_performance({}) == {
        "channels_last": False,
        "compile": False,
        "augment_on": "cpu",
    }
    chosen = resolve_performance(
        {"performance": {"channels_last": True, "augment_on": "gpu"}}, {"augment_on": "cpu"}
    )
    assert chosen == {"channels_last": True, "compile": False, "augment_on": "cpu"}
    with pytest.raises(ValueError, match="augment_on"):
        resolve_performance({"performance": {"augment_on": "tpu"}})


# ------------------------------------------------------------------ augmentations on the device
def test_batch_affine_moves_mask_with_image_and_keeps_it_binary():
    aug = BatchAugment({"rotate_deg": 15, "scale": 0.1, "shift": 0.05, "prob": 1.0})
    before = _batch()
    out = aug(before, torch.Generator().manual_seed(3))
    assert out["image"].shape == before["image"].shape and out["image"].dtype == torch.float32
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
    area = out["mask"].flatten(1).sum(1)
    assert torch.all((area - 196).abs() < 80)  # small rotation/scale: the area roughly kept
    assert not torch.equal(out["mask"], before["mask"])
    # Each image draws its own warp; the bright disc's pixels follow the mask's.
    assert len({tuple(m.nonzero()[0].tolist()) for m in out["mask"][:, 0]}) > 1
    assert torch.equal(out["index"], before["index"])


def test_batch_augment_is_a_function_of_the_generator_seed():
    aug = BatchAugment({"rotate_deg": 10, "brightness": 0.2, "contrast": 0.2, "hflip": True})
    a = aug(_batch(), torch.Generator().manual_seed(5))
    b = aug(_batch(), torch.Generator().manual_seed(5))
    c = aug(_batch(), torch.Generator().manual_seed(6))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], c["image"])


def test_batch_flip_and_intensity():
    flipped = BatchAugment({"hflip": True, "prob": 1.0})(_batch(), torch.Generator())
    assert torch.equal(flipped["image"], _batch()["image"].flip(-1))
    assert torch.equal(flipped["mask"], _batch()["mask"].flip(-1))
    bright = BatchAugment({"brightness": 0.3, "contrast": 0.3, "prob": 1.0})
    out = bright(_batch(), torch.Generator().manual_seed(0))
    assert torch.equal(out["mask"], _batch()["mask"])
    assert not torch.allclose(out["image"], _batch()["image"])
    # Nothing switched on (or probability 0) is the identity.
    assert not BatchAugment({"hflip": False}).active
    same = BatchAugment({"rotate_deg": 10, "hflip": True, "prob": 0.0})(_batch(), torch.Generator())
    assert torch.allclose(same["image"], _batch()["image"]) and torch.equal(
        same["mask"], _batch()["mask"]
    )


def test_batch_augment_without_mask_and_bad_keys():
    out = BatchAugment({"rotate_deg": 5, "prob": 1.0})({"image": torch.rand(2, 1, 16, 16)})
    assert set(out) == {"image"}
    with pytest.raises(ValueError, match="vflip"):
        BatchAugment({"vflip": True})
    with pytest.raises(ValueError, match="small rotation"):
        BatchAugment({"rotate_deg": 90})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_augment_runs_on_the_gpu_and_matches_the_cpu():
    aug = BatchAugment(
        {"rotate_deg": 10, "scale": 0.1, "hflip": True, "brightness": 0.1, "prob": 1.0}
    )
    cpu = aug(_batch(), torch.Generator().manual_seed(1))
    gpu = aug(_batch(device="cuda"), torch.Generator().manual_seed(1))
    assert gpu["image"].is_cuda
    assert torch.allclose(gpu["image"].cpu(), cpu["image"], atol=1e-4)
    assert (gpu["mask"].cpu() != cpu["mask"]).float().mean() < 0.01


def test_training_with_augment_on_gpu_augments_in_the_step(data_dir, tmp_path):
    import lightning as L

    from medpipe.training import train_fold

    class RecordBatches(L.Callback):
        """Keep the first training batch as the model sees it (after the device transfer)."""

        def __init__(self) -> None:
            self.batches: list[dict] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if not self.batches:
                self.batches.append({k: v.cpu() for k, v in batch.items() if torch.is_tensor(v)})

    record = RecordBatches()
    cfg = small_seg_config(
        epochs=1, augment_on="gpu", augment={"rotate_deg": 10, "hflip": True, "prob": 1.0}
    )
    metrics = train_fold(
        "segment", "unet", cfg, run_config(), data_dir, 0, tmp_path / "out", callbacks=[record]
    )
    assert metrics["augment_on"] == "gpu" and math.isfinite(metrics["val_dice"])
    assert (tmp_path / "out" / "model.ckpt").is_file()
    batch = record.batches[0]
    raw = np.load(data_dir / f"train_images_{SIZE}.npy")
    train, _ = fold_rows(data_dir, 0)
    rows = train["cache_index"].to_numpy()[batch["index"].numpy()]
    original = torch.from_numpy(raw[rows].astype(np.float32) / 255).unsqueeze(1)
    # prob 1: every image in the batch was flipped and warped on the device, not in the loader.
    assert not torch.allclose(batch["image"], original, atol=1e-3)
    assert batch["image"].shape == original.shape


# ------------------------------------------------------------------ channels_last, compile
def test_channels_last_from_the_global_block():
    module = FoldModule("gate", gate_config(), performance={"channels_last": True})
    conv = next(
        m for m in module.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
    )
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    logit, _ = module(torch.rand(2, 1, SIZE, SIZE))
    assert logit.shape[0] == 2


def test_compile_wraps_the_model_lazily_and_keeps_plain_state_dict_keys(monkeypatch):
    """The real torch.compile, with a backend that records each graph Dynamo captures and runs it
    as traced (no compiler needed on CPU): the model is compiled at the first step, not before,
    once, and the compiled module computes what the model does."""
    from torch._dynamo.eval_frame import OptimizedModule

    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    real_compile = torch.compile
    monkeypatch.setattr(
        torch,
        "compile",
        lambda model, **kwargs: real_compile(model, **{**kwargs, "backend": recording_backend}),
    )
    torch._dynamo.reset()
    try:
        module = FoldModule("gate", gate_config(), performance={"compile": True}).eval()
        image = torch.rand(2, 1, SIZE, SIZE)
        assert "_compiled" not in module.__dict__ and not graphs  # nothing compiled yet
        with torch.no_grad():
            logit, embedding = module(image)
            compiled = module.__dict__["_compiled"]
            assert isinstance(compiled, OptimizedModule) and compiled._orig_mod is module.model
            assert len(graphs) >= 1  # Dynamo traced the gate's forward
            captured = len(graphs)
            again, _ = module(image)
            assert module.__dict__["_compiled"] is compiled and len(graphs) == captured
            eager_logit, eager_embedding = module.model(image)
        assert torch.allclose(logit, eager_logit) and torch.allclose(embedding, eager_embedding)
        assert torch.equal(again, logit)
        keys = list(module.state_dict())
        assert keys and all(k.startswith("model.") and "_orig_mod" not in k for k in keys)
    finally:
        torch._dynamo.reset()
