"""nnU-Net v2 beside medpipe on one synthetic set: the competition score, its parts, wall time.

Is medpipe's default DAG better than the field's self-configuring baseline run with its own
defaults? Both see the same preprocessed images (medpipe's uint8 ingest cache, written as 2-D
PNGs in nnU-Net's raw format) and are scored by the same code,
``medpipe.submission.score_breakdown``, against the hidden test labels. Steps, each timed (wall
seconds), in a work folder holding ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results``:

1. convert: the ``--size`` cache in ``--data-dir`` to ``nnUNet_raw/Dataset<ID>_MedpipeSynth``
   (``imagesTr/<case>_0000.png``, ``labelsTr/<case>.png`` with labels 0/1, ``imagesTs``,
   ``dataset.json`` read by ``NaturalImage2DIO``); ``cases.csv`` maps each case to its ImageId;
2. ``nnUNetv2_plan_and_preprocess -d ID -c 2d --verify_dataset_integrity``;
3. per ``--trainer`` (nnU-Net's shipped short schedules, e.g. ``nnUNetTrainer_1epoch``):
   ``nnUNetv2_train ID 2d all -tr T``. Fold ``all`` trains on every training image and its final
   validation predicts those same images: the predictions the minimum area is chosen on;
4. ``nnUNetv2_predict -i imagesTs -f all -tr T``;
5. submission: connected components smaller than the ``--area-grid`` value (original-image
   pixels, as in the config) that maximises the competition metric on the training-image
   predictions are dropped (in-sample, so optimistic; ties go to the smaller area), then each mask
   is resized (nearest) to its DICOM size, SIIM-RLE encoded, one row per test image, ``-1`` when
   empty. The same conversion applied to the labelsTr PNGs is scored against train-rle.csv as a
   self-check (exactly 1.0 when ``--size`` is the DICOM size).

medpipe's row is ``--medpipe-submission`` and ``--medpipe-wall-s`` or, by default, the ``s`` of
every Snakemake benchmark file of that run (the submission's folder) except ``synthesize`` (data
generation), summed: rule times added up, above the DAG's wall clock where jobs ran side by side.
Writes bench/results/peer_nnunet.json (``--out``), prints one table. Needs nnU-Net v2, best in a
venv of its own (``pip install -e '.[peer]'``); one nnU-Net 2d epoch at 128² takes over 12
minutes on a 2-core CPU. The default DAG caches at 256², so a 128² cache is ingested beside it
first:

    medpipe ingest --dicom-dir data/synthetic/dicom-images-train --split train \\
        --dicom-dir data/synthetic/dicom-images-test --split test \\
        --labels data/synthetic/train-rle.csv --out bench/results/peer_nnunet_data --size 128
    python bench/peer_nnunet.py --root data/synthetic --data-dir bench/results/peer_nnunet_data \\
        --size 128 --medpipe-submission runs/default/submission.csv \\
        --trainer nnUNetTrainer_1epoch nnUNetTrainer_5epochs
    python bench/peer_nnunet.py --root /tmp/syn --data-dir /tmp/data --size 64 --stop-after preprocess
    python bench/peer_nnunet.py --small --out /tmp/peer.json    # CI's smoke run of every step

``--small`` fabricates what is not given, in a temporary folder: a synthetic set of 64² films, its
ingest cache, an all-empty stand-in for medpipe's submission, and ``nnUNetTrainer_medpipeSmoke``
(nnU-Net's own training loop, 1 epoch of 2 iterations, found through ``nnUNet_extTrainer``). With
``--stop-after convert`` it needs no nnU-Net: the conversion and its self-check are medpipe code.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.metadata
import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from medpipe.data.cache import cache_area_scale, cache_file, open_images, open_masks
from medpipe.data.ingest import ingest
from medpipe.decision.apply import resize_mask
from medpipe.decision.morphology import remove_small_components
from medpipe.io.atomic import atomic_write_csv, atomic_write_text
from medpipe.metrics import competition_dice
from medpipe.submission import (
    expected_ids_from_dicom_dir,
    score_breakdown,
    validate_submission,
    write_submission,
)
from medpipe.synthetic.siim import TEST_DIR, TRAIN_DIR, generate

ROOT = Path(__file__).resolve().parents[1]
INSTALL_HINT = "pip install -e '.[peer]' (best in a venv of its own)"
TOOLS = ("nnUNetv2_plan_and_preprocess", "nnUNetv2_train", "nnUNetv2_predict")
PLANS, CONFIGURATION, FOLD = "nnUNetPlans", "2d", "all"
AREA_GRID = (0.0, 300.0, 600.0, 1200.0, 2400.0, 3600.0)  # configs/default.yaml, original pixels
SMOKE_TRAINER = "nnUNetTrainer_medpipeSmoke"
# --small: every step on 12 + 4 fabricated 64² films (nnU-Net's start-ups dominate)
SMALL = {"size": 64, "trainer": [SMOKE_TRAINER], "processes": 1}
SMALL_FILMS = {"n_train": 12, "n_test": 4, "seed": 2}  # seed 2: 2 findings in each split
SMOKE_TRAINER_SOURCE = f'''"""bench/peer_nnunet.py --small: nnU-Net's own loop, 1 epoch, 2 steps."""

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {SMOKE_TRAINER}(nnUNetTrainer):
    def on_train_start(self):
        # before the base class builds the optimiser and the schedule from them
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
        super().on_train_start()
'''
CHANNEL_NAMES = {
    "rescale_to_0_1": "per-image min-max to [0, 1]",
    "rgb_to_0_1": "divide by 255, as medpipe's loader does",
    "zscore": "per-image z-score, nnU-Net's default for a non-CT channel",
}


class PeerError(RuntimeError):
    """A missing input or tool, or a failed nnU-Net step; the message says what to do."""


def nnunet_tools() -> dict[str, str]:
    """The nnU-Net v2 console scripts, beside this interpreter first (a venv not on PATH)."""
    if importlib.util.find_spec("nnunetv2") is None:
        raise PeerError(f"nnunetv2 is not installed for {sys.executable}: {INSTALL_HINT}")
    tools = {}
    for name in TOOLS:
        beside = Path(sys.executable).parent / name
        found = str(beside) if beside.is_file() else shutil.which(name)
        if not found:
            raise PeerError(
                f"{name}: no console script beside {sys.executable} or on PATH: {INSTALL_HINT}"
            )
        tools[name] = found
    return tools


def ext_trainer_dirs(args: argparse.Namespace) -> str:
    """``nnUNet_extTrainer`` for nnU-Net's commands: the environment's, plus ``--small``'s."""
    dirs = [d for d in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if d]
    return os.pathsep.join(dirs + ([str(args.ext_trainer)] if args.ext_trainer else []))


def check_trainers(names: Sequence[str], ext_dirs: str = "") -> None:
    """Fail before any work when a trainer class is neither in the installed nnunetv2 nor in an
    ``nnUNet_extTrainer`` folder (nnU-Net looks there too)."""
    base = Path(importlib.util.find_spec("nnunetv2").origin).parent / "training" / "nnUNetTrainer"
    extra = ext_dirs.split(os.pathsep)
    files = [
        p for d in (base, *map(Path, filter(None, extra))) if d.is_dir() for p in d.rglob("*.py")
    ]
    pattern = re.compile(r"^class (\w+)\(", re.MULTILINE)
    defined = {m for p in files for m in pattern.findall(p.read_text(errors="replace"))}
    unknown = [n for n in names if n not in defined]
    if unknown:
        short = sorted(
            (n for n in defined if re.fullmatch(r"nnUNetTrainer_\d+epochs?", n)),
            key=lambda n: int(re.sub(r"\D", "", n)),
        )
        raise PeerError(
            f"--trainer {' '.join(unknown)}: no such trainer class in nnunetv2 "
            f"{importlib.metadata.version('nnunetv2')}; shipped short schedules: {' '.join(short)}"
        )


def read_cases(data_dir: Path, size: int) -> dict[str, pd.DataFrame]:
    """Per split, the cached images in cache order with an nnU-Net case name for each."""
    meta_csv = data_dir / "meta.csv"
    if not meta_csv.is_file():
        raise PeerError(
            f"{meta_csv}: not found; run `medpipe ingest` (the DAG's ingest rule) first"
        )
    meta = pd.read_csv(meta_csv, dtype={"image_id": str})
    need = ["image_id", "split", "cache_index", "orig_height", "orig_width"]
    missing = [c for c in need if c not in meta.columns]
    if missing:
        raise PeerError(f"{meta_csv}: columns {missing} missing; expected {need}")
    cases = {}
    for split, prefix in (("train", "tr"), ("test", "ts")):
        path = cache_file(data_dir, split, "images", size)
        if not path.is_file():
            present = (
                ", ".join(sorted(p.name for p in data_dir.glob(f"{split}_images_*.npy"))) or "none"
            )
            raise PeerError(
                f"{path}: not found (present: {present}); pass the --size of a cache there, "
                f"or run `medpipe ingest ... --size {size}`"
            )
        rows = meta[meta["split"] == split].sort_values("cache_index")
        rows = rows.drop_duplicates("image_id").reset_index(drop=True)
        if rows.empty:
            raise PeerError(f"{meta_csv}: no rows with split {split!r}")
        rows["case"] = [f"{prefix}_{int(i):05d}" for i in rows["cache_index"]]
        cases[split] = rows[["case", *need]]
    return cases


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path, format="PNG")


def convert(
    data_dir: Path, size: int, cases: dict[str, pd.DataFrame], dataset_dir: Path, channel: str
) -> None:
    """The cache as an nnU-Net v2 raw dataset of 8-bit grayscale PNGs (nnU-Net reads 2-D PNGs
    with ``NaturalImage2DIO``, spacing 999 x 1 x 1; labels are integers from 0, background 0)."""
    images = {split: open_images(data_dir, split, size) for split in cases}
    masks = open_masks(data_dir, "train", size)
    folders = {"imagesTr": "train", "imagesTs": "test"}
    for folder, split in folders.items():
        (dataset_dir / folder).mkdir(parents=True, exist_ok=True)
        for case, index in zip(cases[split]["case"], cases[split]["cache_index"], strict=True):
            _save_png(images[split][index], dataset_dir / folder / f"{case}_0000.png")
    (dataset_dir / "labelsTr").mkdir(exist_ok=True)
    for case, index in zip(cases["train"]["case"], cases["train"]["cache_index"], strict=True):
        mask = masks[index]
        if mask.max(initial=0) > 1:
            raise PeerError(f"{data_dir}: train mask row {index} holds {mask.max()}, expected 0/1")
        _save_png(mask, dataset_dir / "labelsTr" / f"{case}.png")
    dataset = {
        "name": dataset_dir.name,
        "description": f"medpipe synthetic SIIM-ACR set, {size}x{size} uint8 cache of {data_dir}",
        "channel_names": {"0": channel},
        "labels": {"background": 0, "pneumothorax": 1},
        "numTraining": len(cases["train"]),
        "file_ending": ".png",
        "overwrite_image_reader_writer": "NaturalImage2DIO",
    }
    atomic_write_text(json.dumps(dataset, indent=2) + "\n", dataset_dir / "dataset.json")


def read_masks(folder: Path, cases: Sequence[str], size: int) -> np.ndarray:
    """Label-1 pixels of ``<case>.png`` per case, ``(N, size, size)`` boolean."""
    out = np.zeros((len(cases), size, size), dtype=bool)
    for k, case in enumerate(cases):
        path = folder / f"{case}.png"
        if not path.is_file():
            raise PeerError(f"{path}: no mask for case {case}")
        mask = np.asarray(Image.open(path))
        if mask.shape != (size, size):
            raise PeerError(f"{path}: shape {mask.shape}, expected ({size}, {size})")
        out[k] = mask == 1
    return out


def choose_min_area(
    pred: np.ndarray, truth: np.ndarray, grid: Sequence[float], area_scale: float
) -> tuple[float, dict[str, float]]:
    """The grid area (original pixels) whose component rule scores best; ties: the smaller."""
    scores = {
        a: competition_dice(remove_small_components(pred, a * area_scale), truth) for a in grid
    }
    best = max(sorted(scores), key=lambda a: (scores[a], -a))
    return best, {f"{a:g}": s for a, s in scores.items()}


def write_masks_submission(
    out: Path,
    masks: np.ndarray,
    cases: pd.DataFrame,
    min_area: float,
    sizes: dict[str, tuple[int, int]] | None = None,
) -> int:
    """Drop components under ``min_area`` cache pixels, resize to each DICOM size, write and
    validate; images in ``sizes`` without a case (quarantined at ingest) get ``-1``. Returns
    how many did."""
    kept = remove_small_components(masks, min_area)
    ids = list(cases["image_id"])
    shapes = zip(cases["orig_height"], cases["orig_width"], strict=True)
    full = (resize_mask(m, int(h), int(w)) for m, (h, w) in zip(kept, shapes, strict=True))
    have = set(ids)
    missing = [i for i in (sizes or {}) if i not in have]
    empty = (np.zeros(sizes[i], dtype=bool) for i in missing)
    write_submission(out, ids + missing, itertools.chain(full, empty))
    validate_submission(out, expected_ids=list(sizes) if sizes else None, sizes=sizes)
    return len(missing)


def conversion_check(
    dataset_dir: Path, cases: pd.DataFrame, size: int, labels_csv: Path, work: Path
) -> dict[str, float]:
    """The labelsTr PNGs through the submission path, scored against the training labels of
    the ingested images: the resolution ceiling at ``size``, 1.0 at the DICOM size."""
    masks = read_masks(dataset_dir / "labelsTr", list(cases["case"]), size)
    check = work / "check"
    check.mkdir(parents=True, exist_ok=True)
    wanted = set(cases["image_id"])
    with labels_csv.open(newline="", encoding="utf-8-sig") as handle:
        header, *rows = list(csv.reader(handle))
    rows = [r for r in rows if r and r[0].strip() in wanted]  # drop images ingest quarantined
    labels = pd.DataFrame(rows, columns=[h.strip() for h in header])
    atomic_write_csv(labels, check / "train-rle.ingested.csv")
    write_masks_submission(check / "labels-as-submission.csv", masks, cases, 0.0)
    sizes = {
        i: (int(h), int(w))
        for i, h, w in zip(
            cases["image_id"], cases["orig_height"], cases["orig_width"], strict=True
        )
    }
    result = score_breakdown(
        check / "labels-as-submission.csv", check / "train-rle.ingested.csv", sizes
    )
    exact = all(h == size and w == size for h, w in sizes.values())
    if exact and result["score"] != 1.0:
        raise PeerError(
            f"conversion self-check: labelsTr at the DICOM size scored {result['score']:.6f} "
            f"against {labels_csv}, expected exactly 1.0 (see {check})"
        )
    return {"score": result["score"], "exact_size": exact, "n_images": result["n_images"]}


def medpipe_wall(bench_dir: Path) -> tuple[float, str]:
    """Every Snakemake benchmark file's ``s`` (mean over repeats) except synthesize, summed."""
    files = sorted(p for p in bench_dir.rglob("*.tsv") if p.stem != "synthesize")
    if not files:
        raise PeerError(f"{bench_dir}: no Snakemake benchmark .tsv files; pass --medpipe-wall-s")
    total = float(sum(pd.read_csv(p, sep="\t")["s"].mean() for p in files))
    return total, f"sum of s over {len(files)} rule benchmarks in {bench_dir}, synthesize excluded"


def _medpipe_size(run_dir: Path) -> int | None:
    resolved = run_dir / "config.resolved.yaml"
    if not resolved.is_file():
        return None
    return (yaml.safe_load(resolved.read_text()) or {}).get("image_size")


class Steps:
    """Wall seconds per step, kept in the work folder so ``--reuse`` can skip finished steps
    (same settings only) and still report what they took."""

    def __init__(self, path: Path, settings: dict, reuse: bool) -> None:
        self.path, self.settings = path, settings
        old = json.loads(path.read_text()) if reuse and path.is_file() else {}
        if reuse and old and old.get("settings") != settings:
            print(f"--reuse: settings differ from {path}; running every step again")
            old = {}
        self.seconds: dict[str, float] = dict(old.get("seconds", {}))

    def done(self, name: str) -> bool:
        return name in self.seconds

    def record(self, name: str, seconds: float) -> None:
        self.seconds[name] = seconds
        self._save()

    def forget(self, prefix: str) -> None:
        self.seconds = {k: v for k, v in self.seconds.items() if not k.startswith(prefix)}
        self._save()

    def _save(self) -> None:
        body = {"settings": self.settings, "seconds": self.seconds}
        atomic_write_text(json.dumps(body, indent=2) + "\n", self.path)


def run_step(name: str, command: list[str], env: dict[str, str], logs: Path) -> float:
    """Run one nnU-Net command with its output in ``logs``; wall seconds, or why it failed."""
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name.replace('/', '_')}.log"
    print(f"  {name}: {' '.join([Path(command[0]).name, *command[1:]])}")
    print(f"    log: {log_path}", flush=True)
    started = time.perf_counter()
    with log_path.open("w") as log:
        code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise PeerError(
            f"{name} failed (exit {code}) after {seconds:.0f} s; {log_path} ends:\n{tail}"
        )
    print(f"    {seconds:.1f} s", flush=True)
    return seconds


def epoch_seconds(model_dir: Path) -> float | None:
    """Sum of the "Epoch time" lines of the newest training log: the train step without its
    start-up and the final validation (which, for fold ``all``, predicts every training image)."""
    logs = list(model_dir.glob("training_log_*.txt"))
    if not logs:
        return None
    text = max(logs, key=lambda p: p.stat().st_mtime).read_text(errors="replace")
    found = re.findall(r"Epoch time: ([0-9.]+) s", text)
    return float(sum(map(float, found))) if found else None


def _complete(folder: Path, cases: Sequence[str]) -> bool:
    return folder.is_dir() and all((folder / f"{c}.png").is_file() for c in cases)


def _check_inputs(args: argparse.Namespace) -> None:
    need = [args.root / "dicom-images-train", args.root / "dicom-images-test"]
    need += [args.root / "train-rle.csv", args.data_dir / "meta.csv"]
    if not args.stop_after:
        need += [args.root / "hidden" / "test-rle.csv", args.medpipe_submission]
    for path in need:
        if not path.exists():
            hint = {
                args.medpipe_submission: "run `snakemake submission` or pass --medpipe-submission",
                args.data_dir / "meta.csv": "run `medpipe ingest` first or pass --data-dir",
            }.get(path, "pass --root with a medpipe synthetic set (`medpipe synth --out DIR`)")
            raise PeerError(f"{path}: not found; {hint}")


def _row(pipeline: str, scores: dict[str, float], wall_s: float) -> dict:
    return {
        "pipeline": pipeline,
        "score": scores["score"],
        "all_empty": scores["all_empty"],
        "margin": scores["score"] - scores["all_empty"],
        "dice_pos": scores["dice_pos"],
        "empty_kept": scores["empty_kept"],
        "wall_s": wall_s,
        "n_images": scores["n_images"],
        "n_positive": scores["n_positive"],
    }


def print_table(rows: list[dict]) -> None:
    width = max(len(r["pipeline"]) for r in rows)
    print(
        f"  {'pipeline':{width}s}  {'score':>6s}  {'all-empty':>9s}  {'margin':>7s}  "
        f"{'Dice pos':>8s}  {'empty kept':>10s}  {'wall s':>8s}"
    )
    for r in rows:
        print(
            f"  {r['pipeline']:{width}s}  {r['score']:6.4f}  {r['all_empty']:9.4f}  "
            f"{r['margin']:+7.4f}  {r['dice_pos']:8.4f}  {r['empty_kept']:10.4f}  {r['wall_s']:8.0f}"
        )


def _stopped(
    args: argparse.Namespace,
    step: str,
    seconds: dict[str, float],
    check: dict[str, float],
    plan_2d: dict | None = None,
) -> int:
    """``--stop-after``: what was done, written to ``--out`` (no table: nothing was scored)."""
    result = {
        "stopped_after": step,
        "size": args.size,
        "steps_s": dict(seconds),
        "conversion_check": check,
        "plan_2d": plan_2d,
    }
    atomic_write_text(json.dumps(result, indent=2) + "\n", args.out)
    print(f"stopped after {step}; wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, help="SIIM layout (default: data/synthetic)")
    parser.add_argument("--data-dir", type=Path, help="ingest cache (default: runs/default/data)")
    parser.add_argument("--size", type=int, default=128, help="side of the --data-dir cache to use")
    parser.add_argument(
        "--trainer", nargs="+", default=["nnUNetTrainer_1epoch"], help="nnU-Net trainer classes"
    )
    parser.add_argument(
        "--medpipe-submission", type=Path, help="default: runs/default/submission.csv"
    )
    parser.add_argument("--medpipe-wall-s", type=float, help="default: from --medpipe-benchmarks")
    parser.add_argument(
        "--medpipe-benchmarks",
        type=Path,
        help="default: <run>/benchmarks, <run> the submission's folder",
    )
    parser.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id, 1-999")
    parser.add_argument(
        "--channel-name",
        choices=sorted(CHANNEL_NAMES),
        default="rescale_to_0_1",
        help="nnU-Net normalization: " + "; ".join(f"{k}: {v}" for k, v in CHANNEL_NAMES.items()),
    )
    parser.add_argument(
        "--area-grid", type=float, nargs="+", default=list(AREA_GRID), help="original pixels"
    )
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"), default="cpu")
    parser.add_argument(
        "--processes",
        type=int,
        default=min(os.cpu_count() or 1, 8),
        help="nnU-Net worker processes (preprocessing, augmentation, export)",
    )
    parser.add_argument("--work", type=Path, help="default: bench/results/peer_nnunet")
    parser.add_argument("--reuse", action="store_true", help="skip steps finished in --work")
    parser.add_argument("--stop-after", choices=("convert", "preprocess"), help="smoke tests")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "peer_nnunet.json")
    parser.add_argument(
        "--small", action="store_true", help=f"CI's smoke run: {SMALL}, fabricated inputs"
    )
    parser.set_defaults(medpipe_label=None, ext_trainer=None)
    args = parser.parse_args(argv)
    if args.small:
        parser.set_defaults(**SMALL)
        args = parser.parse_args(argv)
    trainers = list(dict.fromkeys(args.trainer))

    try:
        if not 1 <= args.dataset_id <= 999:
            raise PeerError(f"--dataset-id {args.dataset_id}: nnU-Net ids are 1-999")
        # the conversion is medpipe's own code: --stop-after convert runs without nnU-Net
        tools = nnunet_tools() if args.stop_after != "convert" else {}
        with contextlib.ExitStack() as stack:
            if args.small:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peer-small-")))
                small_inputs(args, tmp)
            args.root = args.root or ROOT / "data" / "synthetic"
            args.data_dir = args.data_dir or ROOT / "runs" / "default" / "data"
            args.medpipe_submission = (
                args.medpipe_submission or ROOT / "runs" / "default" / "submission.csv"
            )
            args.work = args.work or ROOT / "bench" / "results" / "peer_nnunet"
            if tools:
                check_trainers(trainers, ext_trainer_dirs(args))
            _check_inputs(args)
            return _run(args, trainers, tools)
    except PeerError as err:
        print(f"peer_nnunet: {err}", file=sys.stderr)
        return 1


def small_inputs(args: argparse.Namespace, tmp: Path) -> None:
    """``--small``: fabricate in ``tmp`` each input not given (a synthetic set at ``--size``,
    its ingest cache, an all-empty medpipe submission, the work folder, the smoke trainer)."""
    if args.root is None:
        args.root = tmp / "synthetic"
        generate(args.root, **SMALL_FILMS, size=args.size)
    if args.data_dir is None:
        args.data_dir = tmp / "data"
        sources = [("train", args.root / TRAIN_DIR), ("test", args.root / TEST_DIR)]
        ingest(
            sources, args.data_dir, args.size, labels=args.root / "train-rle.csv", progress=False
        )
    if args.medpipe_submission is None:
        sizes = expected_ids_from_dicom_dir(args.root / TEST_DIR)
        args.medpipe_submission = tmp / "medpipe" / "submission.csv"
        write_submission(args.medpipe_submission, list(sizes), ["-1"] * len(sizes))
        args.medpipe_label = "medpipe stand-in (--small: all empty)"
        if args.medpipe_wall_s is None:
            args.medpipe_wall_s = 0.0
    args.work = args.work or tmp / "work"
    args.ext_trainer = tmp / "ext_trainer"
    args.ext_trainer.mkdir()
    (args.ext_trainer / f"{SMOKE_TRAINER}.py").write_text(SMOKE_TRAINER_SOURCE)


def _run(args: argparse.Namespace, trainers: list[str], tools: dict[str, str]) -> int:
    size, data_dir, root = args.size, args.data_dir.resolve(), args.root.resolve()
    work = args.work.resolve()
    name = f"Dataset{args.dataset_id:03d}_MedpipeSynth"
    raw, pre, results = (work / f"nnUNet_{k}" for k in ("raw", "preprocessed", "results"))
    dataset_dir, logs = raw / name, work / "logs"
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(pre))
    env["nnUNet_results"] = str(results)
    if ext_trainer_dirs(args):
        env["nnUNet_extTrainer"] = ext_trainer_dirs(args)
    for var in ("nnUNet_n_proc_DA", "nnUNet_def_n_proc"):  # nnU-Net's defaults assume 8+ cores
        env.setdefault(var, str(args.processes))
    procs, device = str(args.processes), ["-device", args.device]
    ident = str(args.dataset_id)
    cases = read_cases(data_dir, size)
    settings = {
        "data_dir": str(data_dir),
        "size": size,
        "dataset": name,
        "channel_name": args.channel_name,
        "n_train": len(cases["train"]),
        "n_test": len(cases["test"]),
    }
    work.mkdir(parents=True, exist_ok=True)
    steps = Steps(work / "timings.json", settings, args.reuse)
    version = importlib.metadata.version("nnunetv2") if tools else None
    print(
        (
            f"nnU-Net v2 {version} ({args.device}, {args.processes} processes)"
            if tools
            else "convert"
        )
        + f" on {name}: "
        f"{len(cases['train'])} train / {len(cases['test'])} test images at {size}² from {data_dir}"
    )

    if not (steps.done("convert") and (dataset_dir / "dataset.json").is_file()):
        steps.forget("")
        for folder in (raw, pre):  # nnU-Net resolves the id by prefix: leave one folder per id
            for old in folder.glob(f"Dataset{args.dataset_id:03d}_*"):
                shutil.rmtree(old)
        started = time.perf_counter()
        convert(data_dir, size, cases, dataset_dir, args.channel_name)
        atomic_write_csv(
            pd.concat([c.assign(split=s) for s, c in cases.items()], ignore_index=True),
            work / "cases.csv",
        )
        steps.record("convert", time.perf_counter() - started)
        print(f"  convert: {steps.seconds['convert']:.1f} s -> {dataset_dir}")
    check = conversion_check(dataset_dir, cases["train"], size, root / "train-rle.csv", work)
    print(
        f"  self-check: labelsTr PNGs through the submission path score {check['score']:.4f} "
        f"on train-rle.csv ({'must be 1.0 at the DICOM size' if check['exact_size'] else f'the {size}² ceiling'})"
    )
    if args.stop_after == "convert":
        return _stopped(args, "convert", steps.seconds, check)

    if not (steps.done("plan_and_preprocess") and (pre / name / f"{PLANS}.json").is_file()):
        for prefix in ("train/", "predict/", "predict_train/"):
            steps.forget(prefix)
        command = [tools["nnUNetv2_plan_and_preprocess"], "-d", ident, "-c", CONFIGURATION]
        command += ["--verify_dataset_integrity", "-npfp", procs, "-np", procs]
        steps.record("plan_and_preprocess", run_step("plan_and_preprocess", command, env, logs))
    plans = json.loads((pre / name / f"{PLANS}.json").read_text())
    plan_2d = plans["configurations"][CONFIGURATION]
    print(
        f"  plans: 2d patch {plan_2d['patch_size']}, batch {plan_2d['batch_size']}, "
        f"normalization {plan_2d.get('normalization_schemes')}"
    )
    if args.stop_after == "preprocess":
        return _stopped(args, "preprocess", steps.seconds, check, plan_2d)

    sizes = expected_ids_from_dicom_dir(root / "dicom-images-test")
    labels = root / "hidden" / "test-rle.csv"
    validate_submission(args.medpipe_submission, expected_ids=list(sizes), sizes=sizes)
    run_dir = args.medpipe_submission.resolve().parent  # a run's submission.csv sits at its top
    if args.medpipe_wall_s is not None:
        wall_s, wall_source = args.medpipe_wall_s, "--medpipe-wall-s"
    else:
        bench_dir = args.medpipe_benchmarks or run_dir / "benchmarks"
        wall_s, wall_source = medpipe_wall(bench_dir)
    medpipe_size = _medpipe_size(run_dir)
    label = f"medpipe default ({medpipe_size}²)" if medpipe_size else "medpipe default"
    label = args.medpipe_label or label
    rows = [_row(label, score_breakdown(args.medpipe_submission, labels, sizes), wall_s)]
    area_scale = cache_area_scale(data_dir, size)
    shared_s = steps.seconds["convert"] + steps.seconds["plan_and_preprocess"]
    details: dict[str, dict] = {}

    for trainer in trainers:
        model_dir = results / name / f"{trainer}__{PLANS}__{CONFIGURATION}" / f"fold_{FOLD}"
        pred_dir = work / "pred" / trainer
        train_cases, test_cases = list(cases["train"]["case"]), list(cases["test"]["case"])
        if not (steps.done(f"train/{trainer}") and (model_dir / "checkpoint_final.pth").is_file()):
            steps.forget(f"predict/{trainer}")
            steps.forget(f"predict_train/{trainer}")
            shutil.rmtree(model_dir, ignore_errors=True)  # stale validation PNGs would be read
            command = [tools["nnUNetv2_train"], ident, CONFIGURATION, FOLD, "-tr", trainer, *device]
            steps.record(f"train/{trainer}", run_step(f"train/{trainer}", command, env, logs))
        train_pred = model_dir / "validation"
        if not _complete(train_pred, train_cases):  # fold all validates on its training images
            train_pred = pred_dir / "train"
            if not (steps.done(f"predict_train/{trainer}") and _complete(train_pred, train_cases)):
                command = [tools["nnUNetv2_predict"], "-i", str(dataset_dir / "imagesTr")]
                command += ["-o", str(train_pred), "-d", ident, "-c", CONFIGURATION, "-f", FOLD]
                command += ["-tr", trainer, "-npp", procs, "-nps", procs, "--disable_progress_bar"]
                command += device
                seconds = run_step(f"predict_train/{trainer}", command, env, logs)
                steps.record(f"predict_train/{trainer}", seconds)
        if not (steps.done(f"predict/{trainer}") and _complete(pred_dir / "test", test_cases)):
            shutil.rmtree(pred_dir / "test", ignore_errors=True)
            command = [tools["nnUNetv2_predict"], "-i", str(dataset_dir / "imagesTs")]
            command += ["-o", str(pred_dir / "test"), "-d", ident, "-c", CONFIGURATION, "-f", FOLD]
            command += ["-tr", trainer, "-npp", procs, "-nps", procs, "--disable_progress_bar"]
            command += device
            steps.record(f"predict/{trainer}", run_step(f"predict/{trainer}", command, env, logs))

        started = time.perf_counter()
        truth = open_masks(data_dir, "train", size)[cases["train"]["cache_index"].to_numpy()]
        pred = read_masks(train_pred, train_cases, size)
        min_area, by_area = choose_min_area(pred, truth.astype(bool), args.area_grid, area_scale)
        submission = work / f"submission_{trainer}.csv"
        test_masks = read_masks(pred_dir / "test", test_cases, size)
        quarantined = write_masks_submission(
            submission, test_masks, cases["test"], min_area * area_scale, sizes
        )
        submit_s = time.perf_counter() - started
        seconds = {
            k.split("/")[0]: v for k, v in steps.seconds.items() if k.endswith(f"/{trainer}")
        }
        total = shared_s + sum(seconds.values()) + submit_s
        rows.append(
            _row(f"nnU-Net 2d {trainer}", score_breakdown(submission, labels, sizes), total)
        )
        details[trainer] = {
            "steps_s": {**seconds, "submission": submit_s},
            "train_epochs_s": epoch_seconds(model_dir),
            "min_area_original_px": min_area,
            "min_area_cache_px": min_area * area_scale,
            "train_score_by_min_area": by_area,
            "train_predictions": str(train_pred),
            "test_written_empty_quarantined": quarantined,
            "submission": str(submission),
            "model": str(model_dir),
        }

    result = {
        "root": str(root),
        "data_dir": str(data_dir),
        "size": size,
        "medpipe_image_size": medpipe_size,
        "dataset": name,
        "channel_name": args.channel_name,
        "n_train": len(cases["train"]),
        "n_test": len(cases["test"]),
        "device": args.device,
        "processes": args.processes,
        "nnunetv2": version,
        "medpipe_wall_source": wall_source,
        "min_area_rule": "components below the area are dropped; area chosen on nnU-Net's own "
        "predictions of its training images (fold all), ties to the smaller",
        "area_grid_original_px": list(args.area_grid),
        "area_scale": area_scale,
        "shared_steps_s": {k: steps.seconds[k] for k in ("convert", "plan_and_preprocess")},
        "conversion_check": check,
        "rows": rows,
        "nnunet": details,
    }
    print(f"\n{len(sizes)} test images, hidden labels {labels}; medpipe wall: {wall_source}")
    if medpipe_size and medpipe_size != size:
        print(f"note: medpipe ran at {medpipe_size}², nnU-Net at {size}²")
    print_table(rows)
    for trainer, info in details.items():
        steps_s, epochs_s = info["steps_s"], info["train_epochs_s"]
        parts = [f"convert + plan {shared_s:.0f} s", f"train {steps_s['train']:.0f} s"]
        if epochs_s is not None:
            parts[-1] += f" ({epochs_s:.0f} s in epochs)"
        if "predict_train" in steps_s:
            parts.append(f"predict training images {steps_s['predict_train']:.0f} s")
        parts.append(f"predict {steps_s['predict']:.0f} s")
        parts.append(f"min area {info['min_area_original_px']:g} px")
        print(f"  {trainer}: " + ", ".join(parts))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(result, indent=2) + "\n", args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
