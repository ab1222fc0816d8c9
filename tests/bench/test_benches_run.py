"""Every script in bench/ runs: its ``--small`` mode in a subprocess, as a user runs it.

Nothing else runs the benches, so one that no longer fits the package stops unseen
(``bench/scale.py`` stopped on a config key the default gained). Each small run exercises its
bench's full path on tiny sizes in seconds, writes its JSON where ``--out`` says (never into the
source tree), and each number its table prints must be a real number. The runs start two at a
time, one torch thread each, as the 2-core machines run them; each test waits for its own.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
PEER_PYTHON = os.environ.get("MEDPIPE_PEER_PYTHON")  # a venv with the [peer] extra, if any
PEER_INSTALL = "pip install -e '.[peer]'"

pytestmark = pytest.mark.slow


def _value(data: dict, path: str | tuple[str, ...]):
    for key in path.split(".") if isinstance(path, str) else path:
        assert isinstance(data, dict) and key in data, f"no {path!r} in the bench's JSON"
        data = data[key]
    return data


def _real(data: dict, *paths: str | tuple[str, ...], positive: bool = True) -> None:
    """Each ``path`` (dotted, or a tuple of keys) holds a finite number, above zero unless
    ``positive`` is False."""
    for path in paths:
        value = _value(data, path)
        assert isinstance(value, int | float) and not isinstance(value, bool), (path, value)
        assert math.isfinite(value), f"{path} = {value}"
        assert value > 0 or (not positive and value >= 0), f"{path} = {value}"


def check_rle_codec(out: dict) -> None:
    _real(out, "encode_masks_per_s", "loop_encode_masks_per_s", "decode_masks_per_s", "speedup")


def check_ingest(out: dict) -> None:
    decode = [f"decode_ms_per_image.{k}" for k in ("header_only", "pillow_frame_draft")]
    decode += [f"decode_ms_per_image.pydicom_pixel_array_{k}" for k in ("default", "pillow")]
    _real(out, "decode_ms_per_image.pillow_frame", *decode)
    _real(
        out,
        "naive_images_per_s",
        "pure_decode_resize_images_per_s_per_core",
        "pure_draft_decode_resize_images_per_s_per_core",
        "ingest_1_worker_images_per_s",
        "ingest_images_per_s",
        "ingest_images_per_s_per_worker",
        "speedup_vs_naive",
        "pure_over_ingest_1_worker",
        "scaling_efficiency",
    )


def check_ingest_channels(out: dict) -> None:
    for case in out["cases"]:
        _real(case, "naive_images_per_s", "ingest_1_worker_images_per_s", "ingest_images_per_s")
        _real(case, "speedup_1_worker", "speedup_vs_naive")
        assert case["same_pixels"] is True


def check_train_step(out: dict) -> None:
    (run,) = out.values()  # one entry per (task, size, batch, device)
    rates = ("model_only", "data_cpu_augment", "data_gpu_augment")
    rates += ("full_cpu_augment", "full_gpu_augment")
    _real(run, *(f"images_per_s.{k}" for k in rates))
    _real(run, "data_over_model.cpu", "data_over_model.gpu")


def check_train_cls_step(out: dict) -> None:
    (run,) = out.values()  # one entry per (size, channels, batch, device)
    for row in run["rows"]:
        _real(row, "train_images_per_s", "train_images_per_cpu_s", "model_only_images_per_s")
        _real(row, "predict_images_per_s")


def check_predict(out: dict) -> None:
    _real(out, "images_per_s.predict", "images_per_s.encode", "images_per_s.end_to_end")
    _real(out, "rle.vectorised_masks_per_s", "rle.loop_masks_per_s", "rle.speedup")
    assert out["forward_passes_per_image"] == 4  # 2 folds x hflip TTA, as predict_seg runs


def check_scale(out: dict) -> None:
    steps = {row["rule"]: row for row in out["rows"]}
    assert set(steps) == {"features", "thresholds", "submit", "report"}
    for row in steps.values():
        _real(row, "peak_rss_mb", "plan_mb", "wall_s", "cpu_s")
    assert [row["stage"] for row in out["disk"]] == [1, 2]
    for row in out["disk"]:
        _real(row, "gb", "oof_bytes_per_image", "test_bytes_per_image")


def check_fold_trial(out: dict) -> None:
    _real(out, "train_s", "images_per_s", "top_auc")
    _real(out, "score", "all_empty", "dice_pos", ("dice_pos_at_0.5",), positive=False)
    assert out["best_epoch"] == 0 and out["image_size"] == 64


def check_bundle_infer(out: dict) -> None:
    (row,) = out["rows"]
    assert row["runtime"] == "torch" and out["rule"] == "seg_only"
    _real(row, *(f"wall_s.{n}" for n in row["wall_s"]))
    assert len(row["wall_s"]) == 2
    # both folders' times make the rate; a large folder no slower than the small one is noise,
    # written as null and printed as "noise", never as NaN
    if row["images_per_s"] is None:
        assert row["startup_s"] is None
    else:
        _real(row, "images_per_s")
        _real(row, "startup_s", positive=False)


def check_peer_convert(out: dict) -> None:
    assert out["stopped_after"] == "convert"
    _real(out, "steps_s.convert", "conversion_check.score")
    assert out["conversion_check"] == {"score": 1.0, "exact_size": True, "n_images": 12}


def check_peer_nnunet(out: dict) -> None:
    assert [r["pipeline"] for r in out["rows"]] == [
        "medpipe stand-in (--small: all empty)",
        "nnU-Net 2d nnUNetTrainer_medpipeSmoke",
    ]
    for row in out["rows"]:
        _real(row, "score", "all_empty", "dice_pos", "empty_kept", "wall_s", positive=False)
        assert math.isfinite(row["margin"])
    assert out["conversion_check"]["score"] == 1.0


def _has_nnunet(python: str) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('nnunetv2') is None)"
    return subprocess.run([python, "-c", probe]).returncode == 0


PEER = PEER_PYTHON or sys.executable
# name: (script, JSON file it is told to write, extra arguments, check, interpreter)
BENCHES: dict[str, tuple[str, str, list[str], Callable[[dict], None], str]] = {
    "bundle_infer": (
        "bundle_infer.py",
        "bundle_infer.json",
        [],
        check_bundle_infer,
        sys.executable,
    ),
    "fold_trial": ("fold_trial.py", "fold_trial.jsonl", [], check_fold_trial, sys.executable),
    "peer_nnunet": ("peer_nnunet.py", "peer.json", [], check_peer_nnunet, PEER),
    "scale": ("scale.py", "scale.json", [], check_scale, sys.executable),
    "predict": ("predict.py", "predict.json", [], check_predict, sys.executable),
    "train_step": ("train_step.py", "train_step.json", [], check_train_step, sys.executable),
    "train_cls_step": (
        "train_cls_step.py",
        "train_cls_step.json",
        [],
        check_train_cls_step,
        sys.executable,
    ),
    "ingest": ("ingest.py", "ingest.json", [], check_ingest, sys.executable),
    "ingest_channels": (
        "ingest_channels.py",
        "ingest_channels.json",
        [],
        check_ingest_channels,
        sys.executable,
    ),
    # medpipe's half of the peer bench needs no nnU-Net: it runs everywhere
    "peer_convert": (
        "peer_nnunet.py",
        "peer_convert.json",
        ["--stop-after", "convert"],
        check_peer_convert,
        sys.executable,
    ),
    "rle_codec": ("rle_codec.py", "rle.json", [], check_rle_codec, sys.executable),
}
SKIP = {}
if not _has_nnunet(PEER):
    SKIP["peer_nnunet"] = (
        f"bench/peer_nnunet.py needs nnunetv2 (the [peer] extra), not installed for {PEER}: "
        f"{PEER_INSTALL}, best in a venv of its own; MEDPIPE_PEER_PYTHON=<its python> runs it here"
    )


def run_small(name: str, out_dir: Path) -> dict:
    """Run one bench's ``--small`` mode in ``out_dir`` (its cwd too); its JSON, loaded."""
    script, out_name, extra, _, python = BENCHES[name]
    out = out_dir / out_name
    command = [python, str(BENCH / script), "--small", "--out", str(out), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
    proc = subprocess.run(
        command, cwd=out_dir, env=env, capture_output=True, text=True, timeout=600
    )
    output = f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"{' '.join(command)} exited {proc.returncode}:\n{output}"
    assert out.is_file(), f"{script} --small did not write {out}:\n{proc.stdout[-2000:]}"
    text = out.read_text()
    if out.suffix == ".jsonl":  # fold_trial appends one row per trial
        text = text.splitlines()[-1]
    return json.loads(text)  # a NaN would parse; the checks refuse it


@pytest.fixture(scope="module")
def small_runs(request, tmp_path_factory) -> dict[str, Future]:
    """Every selected bench's small run, started two at a time (the longest first)."""
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module
        and "name" in getattr(getattr(item, "callspec", None), "params", {})
    }
    pool = ThreadPoolExecutor(max_workers=2)
    runs = {
        name: pool.submit(run_small, name, tmp_path_factory.mktemp(name))
        for name in BENCHES
        if name in selected and name not in SKIP
    }
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("name", list(BENCHES))
def test_small_run_writes_real_numbers(name, small_runs) -> None:
    if name in SKIP:
        pytest.skip(SKIP[name])
    check = BENCHES[name][3]
    check(small_runs[name].result())


def test_every_bench_script_has_a_small_run() -> None:
    scripts = {script for script, *_ in BENCHES.values()} | set(HPA_PEERS)
    assert scripts == {p.name for p in BENCH.glob("*.py")}


# The multi-label peers read a Kaggle HPA folder, as a Kaggler's script does, and have no
# --small mode: each runs on a tiny generated set with a tiny budget, and its submission must
# pass medpipe's own check against the sample submission.
HPA_PEERS = {
    "peer_hpa_cnn.py": ["--seconds", "2", "--size", "32", "--batch-size", "8"],
    "peer_hpa_lgbm.py": ["--size", "32", "--trees", "10", "--folds", "3"],
}


def _medpipe(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "medpipe.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_hpa(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hpa") / "hpa"
    sizes = ("--n-train", "24", "--n-test", "6", "--size", "64", "--seed", "5", "--workers", "1")
    proc = _medpipe("synth", "--task", "multilabel", "--out", str(root), *sizes)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


def _run_peer(script: str, root: Path, out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(BENCH / script), "--root", str(root), "--out", str(out)]
    command += [*HPA_PEERS[script], "--threads", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("script", list(HPA_PEERS))
def test_hpa_peer_writes_a_valid_submission(script, tiny_hpa, tmp_path) -> None:
    out = tmp_path / "submission.csv"
    proc = _run_peer(script, tiny_hpa, out)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    assert "wall" in proc.stdout and out.is_file()
    sample = str(tiny_hpa / "sample_submission.csv")
    check = _medpipe("validate-submission", str(out), "--dicom-dir", sample)
    assert check.returncode == 0, check.stdout + check.stderr
    labels = str(tiny_hpa / "hidden" / "test_labels.csv")
    score = _medpipe("score", str(out), "--labels", labels)
    assert score.returncode == 0 and "score:" in score.stdout, score.stdout + score.stderr


@pytest.mark.parametrize("script", list(HPA_PEERS))
def test_hpa_peer_on_a_bad_folder_says_so_in_one_line(script, tiny_hpa, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _run_peer(script, empty, tmp_path / "submission.csv")
    (line,) = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "train.csv: not found" in line
    # a folder whose tables are there but one stain is missing
    broken = tmp_path / "broken"
    shutil.copytree(tiny_hpa, broken)
    next((broken / "test").glob("*_yellow.png")).unlink()
    proc = _run_peer(script, broken, tmp_path / "submission.csv")
    (line,) = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "_yellow.png: cannot read" in line
    assert not (tmp_path / "submission.csv").exists()


@pytest.mark.skipif(
    importlib.util.find_spec("nnunetv2") is not None, reason="nnU-Net is installed here"
)
def test_peer_without_nnunet_says_in_one_line_what_to_install(tmp_path) -> None:
    out = tmp_path / "peer.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "peer_nnunet.py"), "--small", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and not out.exists()
    (line,) = proc.stderr.strip().splitlines()
    assert "nnunetv2 is not installed" in line and PEER_INSTALL in line
