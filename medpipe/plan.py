"""What a run will need before it starts: images, disk, peak memory per step, training time.

``medpipe plan`` prints it; ``stages/common.smk`` sizes each rule's ``mem_mb`` and ``runtime``
from the same figures, so a cluster profile asks SLURM for what the config and the data need
instead of fixed numbers. The memory model is the arrays each step holds at once in today's code
(see :data:`HELD`), plus a fixed interpreter and library base; ``bench/scale.py`` measures the
real steps on fabricated predictions and prints the plan's figure beside each measurement.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medpipe.config import RunConfig, base_model
from medpipe.layout import (
    CLASSIFY,
    GATE,
    SEGMENT,
    HpaInputLayout,
    data_files,
    read_meta,
    read_target_matrix,
    target_file,
    test_split,
)

__all__ = [
    "DataSize",
    "StepNeeds",
    "data_size",
    "step_needs",
    "training_hours",
    "plan_table",
    "classify_disk_gb",
    "counted_inputs",
]

MB = 1024**2
CHUNK_PIXELS = 1 << 24  # what the streaming steps hold of the maps at once (decision.morphology)
TABLE_BYTES_PER_IMAGE = 2048  # thresholds' per-image statistics (Dice per setting, counts)
# The RSS of a step before its arrays: interpreter and libraries (torch for model steps, scipy
# and matplotlib for thresholds), fitted to bench/scale.py's measurements (1,000-10,700 images,
# 512²).
BASE_MB = {
    "light": 400,
    "torch": 1200,
    "features": 180,
    "thresholds": 700,
    "submit": 150,
    "report": 800,
}
# Bytes held per cache pixel of every image of the pool, per step (today's code):
HELD = {
    # thresholds streams: one chunk of CHUNK_PIXELS, per model its float16 maps, then the
    # float32 blend, the uint8 truths, the int32 labels and a boolean mask of one search step
    "thresholds_per_model": 2,
    "thresholds": 4 + 1 + 4 + 1,
    # one chunk of maps (float16 read, float32 copy, labels) and per-image statistics
    "features": 2 + 4 + 4 + 1,
    # the report streams one chunk: per model its float16 maps, their float32 blend, the truths
    # (uint8 read, boolean copy), the boolean masks and the int32 labels of the rule
    "report": 4 + 1 + 1 + 1 + 4,
    "report_per_model": 2,
}
# Disk per pixel of a stored probability map (uint8 levels, deflated per image). Measured: 0.067
# on the default run's trained U-Net maps (256²), 0.159 on bench/scale.py's fabricated maps at
# 128²; a model early in training gives noisier, less compressible maps, hence the round-up.
STORED_BYTES_PER_PIXEL = 0.2
# Measured training throughput (images/s, one process, fp32) at a reference crop side, by
# encoder and device; other sides scale with the pixel count. Sources: docs/performance.md
# (bench/train_step.py, bench/fold_trial.py) on the 2-core CPU machines of this project.
MEASURED_IMAGES_PER_S = {
    ("tu-regnetx_002", "cpu"): (40.3, 128),
    ("resnet18", "cpu"): (0.19, 512),
}
# A training job's time limit where no throughput of the device was measured (no GPU was lent
# to this project's sessions yet): 12 hours.
GPU_TRAIN_ALLOWANCE_MIN = 720
# The relative cost of encoders without their own figure (ImageNet GFLOPs ratio to resnet18).
RELATIVE_COST = {"resnet34": 2.0, "resnet50": 2.3, "efficientnet-b0": 0.2}


# The multi-label classifier's steps (ingest-channels, folds, train_cls, predict_cls, fuse_cls,
# thresholds, submit). Its cache is memory-mapped and its loaders read rows, so only tables (a
# few values per image and class) grow with the number of images.
# Training throughput of the timm classifier (images/s per job, fp32, C = 4) at a reference side:
# the default demo's three train_cls benchmarks (docs/multilabel.md, Peers) summed to 1,190 s
# for 3 folds x 10 epochs x ~267 training images at 128², two jobs side by side on 2 cores.
MEASURED_CLASSIFIER_IMAGES_PER_S = {("resnet18", "cpu"): (6.7, 128)}
# The pooled embedding predict_cls stores beside the probabilities (timm's num_features).
EMBEDDING_WIDTH = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "efficientnet_b0": 1280}
DEFAULT_EMBEDDING_WIDTH = 2048  # an unlisted architecture: the widest common one
# Bytes per value of a prediction table (CSV, each float32 in its shortest form): measured 7.4 on
# write_class_predictions' output (28 probabilities, 512 embedding values); rounded up.
CSV_BYTES_PER_VALUE = 10
# Image statistics (fuse_cls) read DEFAULT_CHUNK images at a time; their peak per pixel of a
# chunk (the uint8 rows, float copies, per-channel arrays), measured with tracemalloc on
# 64 x 4 x 256²: 24.9 bytes.
STATISTICS_CHUNK = 64
STATISTICS_BYTES_PER_PIXEL = 25
# The thresholds search (choose_source: 3 sources x candidates x nested folds) holds about this
# many bytes per image and class at its peak: tracemalloc measured 58-65 at 2,000-16,000
# images x 28 classes; plus the loaded float64 tables of each model.
DECISION_BYTES_PER_VALUE = 64
# A fold's loader keeps 2 batches in flight per worker (prefetch) plus the one the model holds.
PREFETCH = 2


@dataclass(frozen=True)
class DataSize:
    """Images per split and their original size (pixels), from meta.csv or the DICOM folders."""

    counts: dict[str, int]
    original_pixels: int  # median height x width of an image
    source: str  # "meta.csv" or "DICOM folders (files, not yet read)"

    def n(self, split: str) -> int:
        return int(self.counts.get(split, 0))


# What a cluster job asks for beyond the estimate: the plan is within 0.93-1.23x of the peaks
# bench/scale.py measured, so 1.3x keeps a job clear of the out-of-memory killer.
REQUEST_MARGIN = 1.3


@dataclass(frozen=True)
class StepNeeds:
    step: str
    mem_mb: int  # the estimated peak RSS
    runtime_min: int
    note: str = ""

    @property
    def request_mb(self) -> int:
        """What the step's job asks the scheduler for (``mem_mb`` with a margin)."""
        return int(math.ceil(self.mem_mb * REQUEST_MARGIN))


def data_size(config: Mapping[str, Any], ingested: bool = True) -> DataSize:
    """Images per split: meta.csv when ingest has run (and ``ingested``), else the candidate
    files of the input folder (``ingested=False``: another folder than the run's)."""
    cfg = RunConfig(config)
    meta = data_files(cfg.layout.data_dir(cfg.stage))["meta"]
    if ingested and meta.is_file():
        frame = read_meta(meta, ["split", "orig_height", "orig_width"])
        pixels = int((frame["orig_height"] * frame["orig_width"]).median()) if len(frame) else 0
        return DataSize(frame["split"].value_counts().to_dict(), pixels, str(meta))
    if _classifies(cfg) and _image_format(cfg) == "png":
        return _hpa_size(cfg)
    from medpipe.io.dicom import dicom_candidates

    counts = {}
    for split in ("train", "test", "stage2_test"):
        folder = cfg.inputs.dicom_dir(split)
        if folder.is_dir():
            counts[split] = len(dicom_candidates(folder))
    synthetic = cfg.synthetic
    if not counts and synthetic:  # not generated yet: the config says how many
        counts = {
            "train": int(synthetic.get("n_train", 0)),
            "test": int(synthetic.get("n_test", 0)),
            "stage2_test": int(synthetic.get("n_stage2_test", 0)),
        }
    side = int((synthetic or {}).get("size", 1024))
    return DataSize(counts, side * side, "DICOM folders (files counted, not read)")


def _classifies(cfg: RunConfig) -> bool:
    """Whether the run's task trains the multi-label classifier family (its own steps' needs)."""
    from medpipe.tasks import get_task  # the registry imports every task's light module

    return CLASSIFY in get_task(cfg.task_name).families


def _image_format(cfg: RunConfig) -> str:
    return str(cfg.section("data").get("image_format") or "png")


def _channels(cfg: RunConfig) -> int:
    if _image_format(cfg) == "dicom":
        return 1
    return max(1, len(cfg.section("data").get("channels") or ()))


def _rows(path: Path) -> int:
    """Data lines of a CSV (header and blank lines not counted), without parsing them."""
    with path.open("rb") as handle:
        return max(0, sum(1 for line in handle if line.strip()) - 1)


def _hpa_size(cfg: RunConfig) -> DataSize:
    """Images of an HPA-layout folder, counted from ``train.csv`` and ``sample_submission.csv``
    (no image is decoded; one PNG header gives the side), else the synthetic block's counts."""
    layout = HpaInputLayout(cfg.section("data")["root"])
    counts: dict[str, int] = {}
    tables = (
        ("train", layout.train_labels),
        ("test", layout.sample_submission),
        ("stage2_test", layout.stage2_sample_submission),
    )
    for split, table in tables:
        if table.is_file():
            counts[split] = _rows(table)
    synthetic = cfg.synthetic or {}
    if not counts and synthetic:
        counts = {
            "train": int(synthetic.get("n_train", 0)),
            "test": int(synthetic.get("n_test", 0)),
        }
    side = int(synthetic.get("size", 512))
    channels = cfg.section("data").get("channels") or ["red"]
    first = next(layout.image_dir("train").glob(f"*_{channels[0]}.png"), None)
    if first is not None:
        from PIL import Image  # the header only: Image.open does not decode the pixels

        with Image.open(first) as image:
            side = max(image.size)
    return DataSize(counts, side * side, "HPA label tables (images counted, not read)")


def _mem(base: str, pixels_held: float) -> int:
    return int(math.ceil(BASE_MB[base] + pixels_held / MB))


def step_needs(config: Mapping[str, Any], size: DataSize) -> dict[str, StepNeeds]:
    """Peak memory (MB) and a runtime allowance (minutes) of each step for this config and data."""
    cfg = RunConfig(config)
    if _classifies(cfg):
        return classify_needs(cfg, size)
    s2 = cfg.image_size**2
    pool = size.n("train") + (size.n("test") if cfg.stage == 2 else 0)
    n_test = size.n(test_split(cfg.stage))
    n_seg = max(1, len(cfg.trained_models(SEGMENT)))
    folds = max(1, len(cfg.folds))
    per_fold = math.ceil(pool / max(1, int(config.get("folds", folds))))
    needs = {
        # decoders hold one original image per worker; the caches are memory-mapped files
        "ingest": StepNeeds(
            "ingest", _mem("light", 8 * size.original_pixels * 4), 30 + pool // 200
        ),
        "folds": StepNeeds("folds", _mem("light", 0), 10),
        # the float16 probability maps of the fold's validation rows, then of the test split
        "predict_seg": StepNeeds(
            "predict_seg",
            _mem("torch", 2 * s2 * max(per_fold, n_test)),
            30 + (per_fold + n_test) // 100,
        ),
        "predict_gate": StepNeeds(
            "predict_gate", _mem("torch", 4 * s2 * 64), 30 + (per_fold + n_test) // 200
        ),
        # streams one chunk of a fold's maps at a time (plus the embeddings of the gate folds)
        "features": StepNeeds(
            "features", _mem("features", HELD["features"] * CHUNK_PIXELS + 1024 * pool), 30
        ),
        "fuse": StepNeeds("fuse", _mem("light", 0), 30),
        "thresholds": StepNeeds(
            "thresholds",
            _mem(
                "thresholds",
                (HELD["thresholds"] + HELD["thresholds_per_model"] * n_seg) * CHUNK_PIXELS
                + TABLE_BYTES_PER_IMAGE * pool,
            ),
            30 + pool // 100,
            "streams the OOF maps",
        ),
        # streams the test maps: per chunk each model's float32 fold mean, the float16 rows read,
        # the float32 blend, labels and masks; one full-size mask at a time
        "submit": StepNeeds(
            "submit",
            _mem("submit", (4 * n_seg + 2 + 4 + 4 + 1) * CHUNK_PIXELS + 2 * size.original_pixels),
            30,
        ),
        "report": StepNeeds(
            "report",
            _mem("report", (HELD["report"] + HELD["report_per_model"] * n_seg) * CHUNK_PIXELS),
            30,
            "streams the OOF maps",
        ),
    }
    on_cpu = str(config.get("device", "auto")) == "cpu"
    workers = 1 if on_cpu else 8  # loader processes (num_workers: auto on a GPU node)
    for family in (SEGMENT, GATE):
        step = "train_seg" if family == SEGMENT else "train_gate"
        hours = [
            training_hours(cfg, family, m, per_fold, "cpu" if on_cpu else "gpu")
            for m in cfg.trained_models(family)
        ]
        if hours and all(h is not None for h in hours):
            runtime, note = max(60, int(60 * max(hours) * 1.5)), "runtime: 1.5x the measured figure"
        else:
            runtime, note = (
                GPU_TRAIN_ALLOWANCE_MIN,
                "runtime: no measured figure, default allowance",
            )
        # each loader worker is a process with torch loaded; batches are small next to them
        needs[step] = StepNeeds(
            step, _mem("torch", workers * 600 * MB + 4 * s2 * 64 * 4), runtime, note
        )
    return needs


def images_per_s(
    encoder: str, side: int, device: str, measured: Mapping = MEASURED_IMAGES_PER_S
) -> float | None:
    """Measured training throughput of an encoder at a crop side, or None when never measured
    (``measured``: the family's figures, the U-Net encoders' by default)."""
    if (encoder, device) in measured:
        rate, ref = measured[encoder, device]
        return rate * (ref / side) ** 2
    if encoder in RELATIVE_COST and ("resnet18", device) in measured:
        rate, ref = measured["resnet18", device]
        return rate * (ref / side) ** 2 / RELATIVE_COST[encoder]
    return None


def training_hours(
    cfg: RunConfig, family: str, model: str, per_fold: int, device: str
) -> float | None:
    """Hours to train one fold of a model (epochs x training images / measured images/s)."""
    block = cfg.models(family)[base_model(model)]
    side = int(block.get("crop_size") or cfg.image_size)
    rate = images_per_s(str(block.get("encoder", "")), side, device)
    if rate is None:
        return None
    n_train = per_fold * (max(1, int(cfg.raw.get("folds", 1))) - 1)
    return int(block.get("epochs", 1)) * n_train / rate / 3600


def disk_gb(config: Mapping[str, Any], size: DataSize) -> dict[str, float]:
    """Disk the run writes: the uint8 cache, each segmentation model's predictions, checkpoints."""
    cfg = RunConfig(config)
    s2 = cfg.image_size**2
    n_all = sum(size.counts.values())
    pool, n_test = size.n("train"), size.n(test_split(cfg.stage))
    folds = len(cfg.folds)
    # OOF + every fold's test maps, uint8 levels deflated per image (layout.write_seg_predictions)
    per_model = STORED_BYTES_PER_PIXEL * s2 * (pool + folds * n_test)
    return {
        "cache": (n_all * s2 + size.n("train") * s2) / 1024**3,
        "predictions per segmentation model": per_model / 1024**3,
        "checkpoints (about 100 MB per fold and model)": 0.1
        * folds
        * (len(cfg.trained_models(SEGMENT)) + len(cfg.trained_models(GATE))),
    }


def plan_table(config: Mapping[str, Any], size: DataSize | None = None) -> str:
    """The text ``medpipe plan`` prints (``size``: the data's, unless given)."""
    cfg = RunConfig(config)
    size = size or data_size(config)
    if _classifies(cfg):
        return classify_plan_table(cfg, size)
    disk = disk_gb(config, size)
    n_seg = len(cfg.trained_models(SEGMENT))
    total = (
        disk["cache"] + n_seg * disk["predictions per segmentation model"] + list(disk.values())[2]
    )
    per_fold = _per_fold(cfg, size)
    hours = [
        (f"{family} {model}", *(training_hours(cfg, family, model, per_fold, d) for d in DEVICES))
        for family in (SEGMENT, GATE)
        for model in cfg.trained_models(family)
    ]
    return _table(
        size,
        f"cache {cfg.image_size}², {len(cfg.folds)} trained folds, stage {cfg.stage}",
        (disk, total, 48),
        step_needs(config, size).values(),
        hours,
    )


DEVICES = ("cpu", "gpu")


def _per_fold(cfg: RunConfig, size: DataSize) -> int:
    """Images one fold trains on: the training pool (stage 2 adds the released test set)."""
    pool = size.n("train") + (size.n("test") if cfg.stage == 2 else 0)
    return math.ceil(pool / max(1, int(cfg.raw.get("folds", 1))))


def _table(
    size: DataSize,
    cache_line: str,
    disk: tuple[Mapping[str, float], float, int],
    needs: Iterable[StepNeeds],
    hours: Iterable[tuple[str, float | None, float | None]],
) -> str:
    """The text of ``medpipe plan``, either task: images, cache, disk (``disk``: the rows, their
    total, the label width), each step's memory and runtime, training hours per fold."""
    rows, total, width = disk
    lines = [
        f"images ({size.source}): " + ", ".join(f"{k} {v}" for k, v in sorted(size.counts.items())),
        cache_line,
        "",
        "disk (GB)",
    ]
    lines += [f"  {what:<{width}} {gb:8.2f}" for what, gb in rows.items()]
    lines.append(f"  {'total':<{width}} {total:8.2f}")
    lines += ["", "peak memory per step (MB) and runtime allowance (min)"]
    lines += [f"  {n.step:<14} {n.mem_mb:>8} {n.runtime_min:>6}  {n.note}" for n in needs]
    lines += ["", "training time per fold (hours), from measured images/s"]
    fmt = lambda h: "not measured" if h is None else f"{h:.2f}"  # noqa: E731
    lines += [f"  {what:<28} CPU {fmt(cpu):>12}   GPU {fmt(gpu):>12}" for what, cpu, gpu in hours]
    return "\n".join(lines) + "\n"


# -- the multi-label classifier's steps


def _classifier_blocks(cfg: RunConfig) -> dict[str, Mapping[str, Any]]:
    return {m: cfg.models(CLASSIFY)[base_model(m)] for m in cfg.trained_models(CLASSIFY)}


def _n_classes(cfg: RunConfig) -> int:
    """K: ``data.classes``, else the ingested targets' width, else 28 (HPA's count)."""
    named = len(cfg.section("data").get("classes") or ())
    if named:
        return named
    targets = target_file(cfg.layout.data_dir(cfg.stage), "train")
    if targets.is_file():
        return int(read_target_matrix(targets).shape[1])
    return 28


def counted_inputs(config: Mapping[str, Any]) -> tuple[Path, str]:
    """What :func:`data_size` counts before ingest (a DICOM folder, an HPA ``train.csv``) and the
    page that describes the layout: for a plan's "nothing to plan" message."""
    cfg = RunConfig(config)
    if _classifies(cfg):
        layout = HpaInputLayout(cfg.section("data")["root"])
        if _image_format(cfg) == "png":
            return layout.train_labels, "docs/multilabel.md"
        return layout.image_dir("train"), "docs/multilabel.md"
    return cfg.inputs.dicom_dir("train"), "docs/siim.md"


def classifier_hours(cfg: RunConfig, model: str, per_fold: int, device: str) -> float | None:
    """Hours to train one fold of a classifier (epochs x training images / measured images/s,
    scaled from 4 channels to C), or None when the throughput was never measured."""
    block = _classifier_blocks(cfg)[model]
    side = int(block.get("crop_size") or cfg.image_size)
    arch = str(block.get("arch", ""))
    rate = images_per_s(arch, side, device, MEASURED_CLASSIFIER_IMAGES_PER_S)
    if rate is None:
        return None
    n_train = per_fold * (max(1, int(cfg.raw.get("folds", 1))) - 1)
    return int(block.get("epochs", 1)) * n_train / rate / 3600


def classify_needs(cfg: RunConfig, size: DataSize) -> dict[str, StepNeeds]:
    """Peak memory (MB) and runtime allowance (minutes) of the multi-label steps, by rule name
    (``ingest`` and ``folds`` as SIIM's, then ``train_cls``, ``predict_cls``, ``fuse_cls``,
    ``thresholds``, ``submit``)."""
    from medpipe.multilabel.image_features import statistic_names

    s2, c, k = cfg.image_size**2, _channels(cfg), _n_classes(cfg)
    pool = size.n("train") + (size.n("test") if cfg.stage == 2 else 0)
    n_test = size.n(test_split(cfg.stage))
    n_all = sum(size.counts.values())
    folds = max(1, int(cfg.raw.get("folds", 1)))
    per_fold = math.ceil(pool / folds)
    blocks = _classifier_blocks(cfg)
    n_models = max(1, len(blocks))
    batch = max([int(b.get("batch_size", 32)) for b in blocks.values()] or [32])
    width = max(
        [EMBEDDING_WIDTH.get(str(b.get("arch")), DEFAULT_EMBEDDING_WIDTH) for b in blocks.values()]
        or [DEFAULT_EMBEDDING_WIDTH]
    )
    n_stats = len(statistic_names(c)) + 2  # + orig_height, orig_width
    on_cpu = str(cfg.raw.get("device", "auto")) == "cpu"
    workers = 1 if on_cpu else 8
    # float32 batches in flight: each loader worker's prefetched ones and the model's
    batches = 4 * batch * c * s2 * (PREFETCH * workers + 1)
    loaders = workers * 600 * MB  # each worker is a process with torch loaded
    tables = 8 * k  # one float64 value per class and image (targets, sampler weights)
    needs = {
        # each decoder holds one image's C originals (uint8 read, float resize); rows go
        # straight to the memory-mapped cache file
        "ingest": StepNeeds(
            "ingest",
            _mem("light", 8 * c * size.original_pixels * 4 + 256 * n_all),
            30 + n_all // 200,
            "cache written row by row (memory-mapped)",
        ),
        # the label table with one column per class, and iterative stratification's copy
        "folds": StepNeeds("folds", _mem("light", 2 * tables * pool), 10 + pool * k // 100_000),
        # the loader reads cache rows (memory-mapped: file pages the kernel can drop)
        "predict_cls": StepNeeds(
            "predict_cls",
            _mem("torch", loaders + batches + 2 * 4 * (k + width) * max(per_fold, n_test)),
            30 + (per_fold + n_test) // 200,
            "one split's probabilities and embeddings",
        ),
        # per-image statistics read STATISTICS_CHUNK cache rows at a time; the feature table
        # (float64), its per-fold copy and LightGBM's binned dataset
        "fuse_cls": StepNeeds(
            "fuse_cls",
            _mem(
                "features",
                STATISTICS_BYTES_PER_PIXEL * STATISTICS_CHUNK * c * s2
                + 3 * 8 * n_all * (n_stats + k * (n_models + 1)),
            ),
            30 + n_all * k // 20_000,
            "streams the cache in chunks",
        ),
        "thresholds": StepNeeds(
            "thresholds",
            _mem("thresholds", pool * k * (DECISION_BYTES_PER_VALUE + 8 * n_models)),
            30 + pool // 1000,
            "probability tables only",
        ),
        # each fold's test table, their mean per model, the fused table
        "submit": StepNeeds("submit", _mem("submit", n_test * k * 8 * (folds + n_models + 2)), 30),
        # the OOF tables of every source, and a few cases drawn as channel composites
        "report": StepNeeds(
            "report", _mem("report", pool * k * 8 * (n_models + 3) + 16 * 4 * c * s2), 30
        ),
    }
    hours = [classifier_hours(cfg, m, per_fold, "cpu" if on_cpu else "gpu") for m in blocks]
    if hours and all(h is not None for h in hours):
        runtime, note = max(60, int(60 * max(hours) * 1.5)), "runtime: 1.5x the measured figure"
    else:
        runtime, note = GPU_TRAIN_ALLOWANCE_MIN, "runtime: no measured figure, default allowance"
    needs["train_cls"] = StepNeeds(
        "train_cls", _mem("torch", loaders + batches + tables * pool), runtime, note
    )
    order = (
        "ingest",
        "folds",
        "train_cls",
        "predict_cls",
        "fuse_cls",
        "thresholds",
        "submit",
        "report",
    )
    return {step: needs[step] for step in order}


def classify_disk_gb(cfg: RunConfig, size: DataSize) -> dict[str, float]:
    """Disk of a multi-label run: the C-channel uint8 cache and K-hot targets, each classifier's
    OOF and per-fold test tables (probabilities and embeddings), the fusion's tables, the
    checkpoints."""
    from medpipe.multilabel.image_features import statistic_names

    s2, c, k = cfg.image_size**2, _channels(cfg), _n_classes(cfg)
    pool = size.n("train") + (size.n("test") if cfg.stage == 2 else 0)
    n_test = size.n(test_split(cfg.stage))
    n_all = sum(size.counts.values())
    folds = len(cfg.folds)
    blocks = _classifier_blocks(cfg)
    width = max(
        [EMBEDDING_WIDTH.get(str(b.get("arch")), DEFAULT_EMBEDDING_WIDTH) for b in blocks.values()]
        or [DEFAULT_EMBEDDING_WIDTH]
    )
    n_stats = len(statistic_names(c)) + 2
    ckpts = sum(folds * (2 + int(b.get("snapshots") or 0)) for b in blocks.values())
    gb = 1024**3
    disk = {
        "cache (N x C x S² uint8) and targets": (n_all * c * s2 + pool * k) / gb,
        "predictions per classifier model": CSV_BYTES_PER_VALUE
        * (k + width)
        * (pool + folds * n_test)
        / gb,
        "fusion (features, fused OOF and test)": CSV_BYTES_PER_VALUE
        * (n_all * (n_stats + k) + (pool + n_test) * k)
        / gb
        if cfg.fusion_enabled
        else 0.0,
        "checkpoints (about 100 MB each; best, last, snapshots)": 0.1 * ckpts,
    }
    return disk


def classify_plan_table(cfg: RunConfig, size: DataSize) -> str:
    """What ``medpipe plan`` prints for the multi-label task."""
    c, k = _channels(cfg), _n_classes(cfg)
    disk = classify_disk_gb(cfg, size)
    models = _classifier_blocks(cfg)
    total = sum(
        gb * (len(models) if w.startswith("predictions per") else 1) for w, gb in disk.items()
    )
    per_fold = _per_fold(cfg, size)
    hours = [
        (f"classify {model}", *(classifier_hours(cfg, model, per_fold, d) for d in DEVICES))
        for model in models
    ]
    return _table(
        size,
        f"cache {c} channels x {cfg.image_size}², {k} classes, {len(cfg.folds)} trained folds, "
        f"stage {cfg.stage}",
        (disk, total, 56),
        classify_needs(cfg, size).values(),
        hours,
    )
