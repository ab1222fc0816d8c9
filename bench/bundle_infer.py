"""``medpipe infer`` from a bundle: start-up time and images/s, PyTorch and ONNX, on this machine.

Each runtime is timed as a user runs it, a fresh ``medpipe infer`` process end to end (imports,
bundle check, ingest, every fold with its TTA, the decision, the files), on two synthetic test
folders of ``--n-small`` and ``--n`` films. The throughput is the difference: ``(n - n_small) /
(wall(n) - wall(n_small))`` images per second; the start-up is ``wall(n_small)`` less the time
those ``n_small`` images take at that rate (imports, model loading, the first batch's set-up).
Each wall time is the best of ``--repeat`` runs: on a shared machine the neighbours' load only
adds; when the large folder took no longer than the small one, the rate is noise: written as
null, printed as "noise".
Writes bench/results/bundle_infer.json (``--out``), prints a table.

    python bench/bundle_infer.py --bundle bundles/default --n 48 --threads 2
    python bench/bundle_infer.py --small --out /tmp/bundle_infer.json   # CI's smoke run: seconds

``--small`` without ``--bundle`` exports a fabricated run first (random-weight folds of the
default U-Net, a ``seg_only`` decision) with ``medpipe export``'s own function: infer's speed does
not depend on what the weights learned.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

from medpipe.config import write_yaml_atomic  # noqa: E402
from medpipe.io.atomic import atomic_write_text  # noqa: E402
from medpipe.layout import SEGMENT, RunLayout, write_decision  # noqa: E402
from medpipe.synthetic.siim import TEST_DIR, generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "bundle_infer.json"
# --small: a fabricated 2-fold bundle at 64², folders of 2 and 24 films (seconds on 2 cores)
SMALL = {"n": 24, "n_small": 2, "side": 128, "repeat": 1}
SMALL_SIZE, SMALL_FOLDS = 64, 2


def _bench_module(name: str):
    """A sibling bench script as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fabricated_bundle(work: Path, size: int = SMALL_SIZE, folds: int = SMALL_FOLDS) -> Path:
    """Export a run of random-weight folds of the default U-Net with a ``seg_only`` decision."""
    import torch

    from medpipe.bundle.export import export_bundle
    from medpipe.models.families import get_family

    run = RunLayout(work / "run")
    scale = _bench_module("scale")  # its one-model override of the default config
    config = scale.config_for(run.run_dir, size, folds)
    block = config["segmentation"]["models"][scale.MODEL]
    for fold in range(folds):
        here = run.fold(1, SEGMENT, scale.MODEL, fold)
        here.path.mkdir(parents=True, exist_ok=True)
        network = get_family(SEGMENT, block).build_model()
        # a train_fold checkpoint's form: the FoldModule's tensors, its network under "model."
        state = {f"model.{k}": v for k, v in network.state_dict().items()}
        torch.save({"state_dict": state}, here.checkpoint)
        write_yaml_atomic(config, here.trained_config, only_if_changed=False)
    write_yaml_atomic(config, run.resolved_config, only_if_changed=False)
    decision = {"rule": "seg_only", "mode": "seg_only", "pixel_threshold": 0.5, "min_area": 0}
    write_decision(run.thresholds(1), {**decision, "weights": {scale.MODEL: 1.0}})
    return export_bundle(run.run_dir, work / "bundle", selftest=False, check_run=False)


def _wall(bundle: Path, dicoms: Path, out: Path, runtime: str, threads: int | None) -> float:
    cmd = [sys.executable, "-m", "medpipe.cli", "infer", "--bundle", str(bundle)]
    cmd += ["--dicom-dir", str(dicoms), "--out", str(out), "--device", "cpu", "--no-progress"]
    cmd += ["--runtime", runtime] + (["--threads", str(threads)] if threads else [])
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"infer failed ({runtime}):\n{proc.stderr[-3000:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, help="a medpipe export folder (or --small)")
    parser.add_argument("--n", type=int, default=48, help="films of the large folder")
    parser.add_argument("--n-small", type=int, default=4, help="films of the small folder")
    parser.add_argument("--side", type=int, default=256, help="DICOM side in pixels")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per folder; the best counts")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--small",
        action="store_true",
        help=f"CI's smoke run: {SMALL}; without --bundle, a fabricated {SMALL_SIZE}² bundle",
    )
    args = parser.parse_args(argv)
    if args.small:
        parser.set_defaults(**SMALL)
        args = parser.parse_args(argv)
    if args.bundle is None and not args.small:
        parser.error("--bundle is required (or --small, which fabricates one)")
    if not 0 < args.n_small < args.n:
        parser.error(f"--n-small {args.n_small}: must be above 0 and below --n {args.n}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        bundle = args.bundle or fabricated_bundle(Path(tmp) / "fabricated")
        spec = json.loads((bundle / "configs" / "inference.json").read_text())
        rule = json.loads((bundle / "configs" / "decision.json").read_text()).get("rule")
        runtimes = ["torch"] + (["onnx"] if "onnx" in (spec.get("formats") or {}) else [])
        folders = {}
        for n in (args.n_small, args.n):
            generate(Path(tmp) / f"synth{n}", n_train=2, n_test=n, size=args.side, seed=n)
            folders[n] = Path(tmp) / f"synth{n}" / TEST_DIR
        for runtime in runtimes:
            walls = {
                n: min(
                    _wall(bundle, folders[n], Path(tmp) / f"{runtime}{n}.csv", runtime,
                          args.threads)
                    for _ in range(args.repeat)
                )
                for n in (args.n_small, args.n)
            }  # fmt: skip
            extra = walls[args.n] - walls[args.n_small]
            # a folder that took no longer than the small one: too noisy to give a rate (null)
            rate = (args.n - args.n_small) / extra if extra > 0 else None
            startup = walls[args.n_small] - args.n_small / rate if rate else None
            rows.append(
                {"runtime": runtime, "images_per_s": rate, "startup_s": startup, "wall_s": walls}
            )
    result = {
        "bundle": str(args.bundle) if args.bundle else "fabricated (--small)",
        "image_size": spec["image_size"],
        "folds": {
            t: {m: len(e["folds"]) for m, e in ms.items()} for t, ms in spec["models"].items()
        },
        "rule": rule,
        "threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": rows,
    }
    atomic_write_text(json.dumps(result, indent=2) + "\n", args.out)
    print(f"{'runtime':<8} {'images/s':>9} {'start-up s':>11}")
    for row in rows:
        rate, startup = _cell(row["images_per_s"], 2), _cell(row["startup_s"], 1)
        print(f"{row['runtime']:<8} {rate:>9} {startup:>11}")
    print(f"-> {args.out}")
    return 0


def _cell(value: float | None, digits: int) -> str:
    """A table cell: the number, or "noise" where the two folders' times gave no rate."""
    return "noise" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


if __name__ == "__main__":
    raise SystemExit(main())
