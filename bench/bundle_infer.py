"""``medpipe infer`` from a bundle: start-up time and images/s, PyTorch and ONNX, on this machine.

Each runtime is timed as a user runs it, a fresh ``medpipe infer`` process end to end (imports,
bundle check, ingest, every fold with its TTA, the decision, the files), on two synthetic test
folders of ``--small`` and ``--n`` films. The throughput is the difference: ``(n - small) /
(wall(n) - wall(small))`` images per second; the start-up is ``wall(small)`` less the time those
``small`` images take at that rate (imports, model loading, the first batch's set-up). Each wall
time is the best of ``--repeat`` runs: on a shared machine the neighbours' load only adds.
Writes bench/results/bundle_infer.json, prints a table.

    python bench/bundle_infer.py --bundle bundles/default --n 48 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

from medpipe.data.synthetic import TEST_DIR, generate  # noqa: E402
from medpipe.io.atomic import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bundle_infer.json"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--n", type=int, default=48, help="films of the large folder")
    parser.add_argument("--small", type=int, default=4, help="films of the small folder")
    parser.add_argument("--side", type=int, default=256, help="DICOM side in pixels")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per folder; the best counts")
    args = parser.parse_args()
    spec = json.loads((args.bundle / "configs" / "inference.json").read_text())
    runtimes = ["torch"] + (["onnx"] if "onnx" in (spec.get("formats") or {}) else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        folders = {}
        for n in (args.small, args.n):
            generate(Path(tmp) / f"synth{n}", n_train=2, n_test=n, size=args.side, seed=n)
            folders[n] = Path(tmp) / f"synth{n}" / TEST_DIR
        for runtime in runtimes:
            walls = {
                n: min(
                    _wall(args.bundle, folders[n], Path(tmp) / f"{runtime}{n}.csv", runtime,
                          args.threads)
                    for _ in range(args.repeat)
                )
                for n in (args.small, args.n)
            }  # fmt: skip
            extra = walls[args.n] - walls[args.small]
            # a folder that took no longer than the small one: too noisy to give a rate
            rate = (args.n - args.small) / extra if extra > 0 else float("nan")
            rows.append(
                {
                    "runtime": runtime,
                    "images_per_s": rate,
                    "startup_s": walls[args.small] - args.small / rate,
                    "wall_s": walls,
                }
            )
    result = {
        "bundle": str(args.bundle),
        "image_size": spec["image_size"],
        "folds": {
            t: {m: len(e["folds"]) for m, e in ms.items()} for t, ms in spec["models"].items()
        },
        "rule": json.loads((args.bundle / "configs" / "decision.json").read_text()).get("rule"),
        "threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": rows,
    }
    atomic_write_text(json.dumps(result, indent=2) + "\n", RESULTS)
    print(f"{'runtime':<8} {'images/s':>9} {'start-up s':>11}")
    for row in rows:
        print(f"{row['runtime']:<8} {row['images_per_s']:>9.2f} {row['startup_s']:>11.1f}")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
