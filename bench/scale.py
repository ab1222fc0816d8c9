"""Peak memory and wall time of the decision steps at scale, on fabricated fold predictions.

    python bench/scale.py                       # N = 1,000, 4,000, 10,700 at 512² (the issue's table)
    python bench/scale.py --n 250 500 1000 --size 256 --steps thresholds submit
    python bench/scale.py --small --out /tmp/scale.json   # every step on 20 images: seconds

For each N it writes a run folder (meta, folds, the uint8 mask cache, one segmentation model's
OOF and test predictions for every fold; findings are discs, probabilities smooth maps like a
U-Net's: the truth blurred, a faint smooth background, a false blob now and then), runs each
step's real function in a fresh process (``report`` is the report's cases section, the one that
reads the maps), and records that process's peak RSS (``VmHWM``), wall time and CPU seconds
(user + system, imports excluded as for the wall time; shared cores inflate them far less)
beside ``medpipe plan``'s estimate for the same size. It also measures the prediction files'
bytes per image and scales them to SIIM's counts. Results go to ``bench/results/scale.json``
(``--out``) as ``{"rows": [{"n", "size", "rule", "peak_rss_mb", "wall_s", "cpu_s", "plan_mb"}],
"disk": [...]}``. A size that needs more memory than this machine has is skipped, and said so.
The run folders go to a temporary folder, removed at the end, unless ``--work`` names one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medpipe.config import load_config  # noqa: E402
from medpipe.fusion.statistics import seg_statistics  # noqa: E402
from medpipe.layout import RunLayout, cache_file, write_seg_predictions  # noqa: E402
from medpipe.plan import DataSize, step_needs  # noqa: E402
from medpipe.resources import available_memory_gb  # noqa: E402

STEPS = ("features", "thresholds", "submit", "report")
# SIIM-ACR's image counts (stage-1 train and test; stage 2 trains on both, tests on 3,205)
SIIM_STAGES = {1: (10675, 1372), 2: (12047, 3205)}
FOLDS = 5
MODEL = "unet"
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"
# --small: every step on a few images (seconds on 2 cores), so CI sees the bench still runs
SMALL = {"n": [20], "size": 64, "n_test": 5}


def config_for(run: Path, size: int, folds: int = FOLDS) -> dict:
    """The default config with one segmentation model, ``MODEL``, and no gate or fusion.

    The default's models are removed as an overlay removes them (``null``), so whatever names
    them (pseudo-labelling, stage-2 retraining) goes too, however the default grows.
    """
    default = load_config(DEFAULT_CONFIG)
    seg, gate = default["segmentation"]["models"], default["gate"]["models"]
    overlay = {
        "run_dir": str(run),
        "folds": folds,
        "image_size": size,
        "seed": 0,
        "segmentation": {"models": {**dict.fromkeys(seg), MODEL: next(iter(seg.values()))}},
        "gate": {"models": dict.fromkeys(gate)},
        "fusion": {"enabled": False},
        "data": {"root": str(run / "no-input"), "synthetic": None},
    }
    return load_config(DEFAULT_CONFIG, overrides=overlay)


def fabricate(run: Path, n: int, n_test: int, size: int, seed: int = 0) -> dict:
    """A stage-1 run with OOF and test predictions of one segmentation model, fold by fold."""
    rng = np.random.default_rng(seed)
    layout = RunLayout(run)
    data = layout.data_dir(1)
    data.mkdir(parents=True, exist_ok=True)
    ids = [f"1.2.{i}" for i in range(n)]
    test_ids = [f"9.8.{i}" for i in range(n_test)]
    fold = np.arange(n) % FOLDS
    positive = rng.random(n) < 0.25
    meta = pd.DataFrame(
        {
            "image_id": ids + test_ids,
            "split": ["train"] * n + ["test"] * n_test,
            "patient_key": [f"p{i}" for i in range(n + n_test)],
            "orig_height": 1024,
            "orig_width": 1024,
            "has_finding": list(positive.astype(float)) + [np.nan] * n_test,
            "cache_index": list(range(n)) + list(range(n_test)),
        }
    )
    meta.to_csv(layout.meta(1), index=False)
    pd.DataFrame(
        {
            "image_id": ids,
            "patient_key": meta["patient_key"][:n],
            "has_finding": positive.astype(int),
            "fold": fold,
        }
    ).to_csv(layout.folds(1), index=False)
    pd.DataFrame(columns=["source", "split", "reason"]).to_csv(layout.quarantine(1), index=False)
    yy, xx = np.mgrid[:size, :size]
    masks = np.lib.format.open_memmap(
        cache_file(data, "train", "masks", size), "w+", np.uint8, (n, size, size)
    )
    centres = rng.integers(size // 4, 3 * size // 4, (n, 2))
    for i in np.flatnonzero(positive):
        masks[i] = ((yy - centres[i, 0]) ** 2 + (xx - centres[i, 1]) ** 2) <= (size // 12) ** 2
    masks.flush()
    # the images the report's galleries show (their pixels do not matter here)
    images = np.lib.format.open_memmap(
        cache_file(data, "train", "images", size), "w+", np.uint8, (n, size, size)
    )
    images.flush()
    del images

    from scipy.ndimage import gaussian_filter, zoom

    def probs(rows: np.ndarray, truth: np.ndarray | None) -> np.ndarray:
        """Sigmoid-output-like maps: smooth, near zero away from findings."""
        out = np.empty((len(rows), size, size), np.float16)
        for k in range(len(rows)):
            field = zoom(rng.random((8, 8), dtype=np.float32), size / 8, order=1) * 0.02
            if truth is not None and truth[k].any():
                field += gaussian_filter(truth[k].astype(np.float32), size / 96) * 0.85
            if rng.random() < 0.1:  # a false blob
                cy, cx = rng.integers(size // 8, 7 * size // 8, 2)
                field[cy - size // 32 : cy + size // 32, cx - size // 32 : cx + size // 32] += 0.4
                field = gaussian_filter(field, 2)
            out[k] = np.clip(field, 0, 1)
        return out

    for f in range(FOLDS):
        d = layout.fold(1, "segment", MODEL, f)
        d.path.mkdir(parents=True, exist_ok=True)
        rows = np.flatnonzero(fold == f)
        # as predict writes them: with the fusion statistics of the maps before quantisation
        oof = probs(rows, masks[rows])
        write_seg_predictions(
            d.oof, [ids[i] for i in rows], oof, np.full(len(rows), np.nan), seg_statistics(oof)
        )
        del oof
        test = probs(np.arange(n_test), None)
        write_seg_predictions(d.test, test_ids, test, np.full(n_test, np.nan), seg_statistics(test))
        del test
    (run / "config.yaml").write_text(yaml.safe_dump(config_for(run, size)))
    return config_for(run, size)


CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import yaml
step, run = sys.argv[1], Path(sys.argv[2])
config = yaml.safe_load((run / "config.yaml").read_text())
data, stage = run / "data", run / "stage1"
from medpipe.config import RunConfig
from medpipe.layout import StageLayout
cfg, stage_1 = RunConfig(config), StageLayout(stage, 1)


def cpu_seconds():
    return sum(
        u.ru_utime + u.ru_stime
        for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


t0, cpu0 = time.perf_counter(), cpu_seconds()
if step == "features":
    from medpipe.steps.features import run_features
    run_features(cfg, stage_1, data, stage / "fusion" / "features.csv")
elif step == "thresholds":
    from medpipe.steps.thresholds import run_thresholds
    run_thresholds(cfg, stage_1, data)
elif step == "submit":
    from medpipe.steps.submit import run_submit
    run_submit(cfg, stage_1, data, None, stage / "submission.csv")
elif step == "report":
    from medpipe.report.cases import add_cases_section
    from medpipe.report.html import Section
    from medpipe.report.run import FinishedRun
    plots = run / "reports"
    plots.mkdir(exist_ok=True)
    section = Section("cases")
    add_cases_section(FinishedRun(cfg, run, 1, plots), section)
    if any("Not available" in block for block in section.blocks):
        raise SystemExit("report: " + " ".join(b for b in section.blocks if "Not available" in b))
# VmHWM, not ru_maxrss: a child's ru_maxrss keeps the high-water mark of the parent it was
# forked from (Linux carries it across exec), so it would report the fabricating parent's RSS
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
# CPU seconds as well: on shared cores the wall time measures the neighbours too
cpu = cpu_seconds() - cpu0
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": cpu, "peak_rss_mb": hwm / 1024}))
"""


def measure(step: str, run: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, step, str(run)], capture_output=True, text=True, cwd=REPO
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{step} at {run}: failed\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prediction_bytes(run: Path) -> dict:
    """Bytes per image of the model's OOF and test files, as written (uint8 levels, deflated)."""
    layout = RunLayout(run)
    oof = sum(layout.fold(1, "segment", MODEL, f).oof.stat().st_size for f in range(FOLDS))
    test = sum(layout.fold(1, "segment", MODEL, f).test.stat().st_size for f in range(FOLDS))
    meta = pd.read_csv(layout.meta(1))
    n, n_test = int((meta["split"] == "train").sum()), int((meta["split"] == "test").sum())
    return {"oof_bytes_per_image": oof / n, "test_bytes_per_image": test / (FOLDS * n_test)}


def siim_disk(per_image: dict) -> list[dict]:
    """Disk per segmentation model and stage at SIIM's counts, from measured bytes per image."""
    rows = []
    for stage, (pool, n_test) in SIIM_STAGES.items():
        total = (
            pool * per_image["oof_bytes_per_image"]
            + FOLDS * n_test * per_image["test_bytes_per_image"]
        )
        rows.append({"stage": stage, "oof_images": pool, "test_images": n_test, "gb": total / 1e9})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 4000, 10700])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    parser.add_argument("--work", type=Path, help="keep the run folders here (default: a temp)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale.json")
    parser.add_argument("--small", action="store_true", help=f"CI's smoke run: {SMALL}")
    args = parser.parse_args(argv)
    if args.small:
        parser.set_defaults(**SMALL)
        args = parser.parse_args(argv)
    if args.work is not None:
        return measure_sizes(args, args.work)
    work = Path(tempfile.mkdtemp(prefix="medpipe-scale-"))
    try:
        return measure_sizes(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_sizes(args: argparse.Namespace, work: Path) -> int:
    """Fabricate each N in `work`, measure every step, write the JSON."""
    rows, disk = [], []
    for n in args.n:
        config = config_for(work / f"n{n}", args.size)
        needs = step_needs(
            config, DataSize({"train": n, "test": args.n_test}, 1024 * 1024, "bench")
        )
        biggest = max(needs[s].mem_mb for s in args.steps)
        if biggest > 0.8 * available_memory_gb() * 1024:
            print(
                f"n={n} size={args.size}: skipped, the plan says {biggest} MB (this machine has "
                f"{available_memory_gb():.0f} GB free)"
            )
            continue
        run = work / f"n{n}"
        t0 = time.perf_counter()
        fabricate(run, n, args.n_test, args.size)
        print(f"n={n}: fabricated in {time.perf_counter() - t0:.0f} s")
        per_image = prediction_bytes(run)
        for row in siim_disk(per_image):
            disk.append({"n": n, "size": args.size, **per_image, **row})
            print(
                f"  disk at SIIM stage {row['stage']} ({row['oof_images']} OOF + {FOLDS} x "
                f"{row['test_images']} test maps): {row['gb']:.2f} GB per segmentation model "
                f"({per_image['oof_bytes_per_image'] / args.size**2:.3f} bytes per pixel)"
            )
        if {"submit", "report"} & set(args.steps) and "thresholds" not in args.steps:
            measure("thresholds", run)  # submit applies the decision thresholds writes
        for step in args.steps:
            got = measure(step, run)
            rows.append(
                {"n": n, "size": args.size, "rule": step, **got, "plan_mb": needs[step].mem_mb}
            )
            print(
                f"  {step:<11} peak {got['peak_rss_mb']:8.0f} MB  plan {needs[step].mem_mb:8d} MB"
                f"  {got['wall_s']:7.1f} s wall  {got['cpu_s']:7.1f} s CPU"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "disk": disk}, indent=2) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
