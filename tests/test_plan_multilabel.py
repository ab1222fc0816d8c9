"""`medpipe plan` for the multi-label task: its own steps (ingest-channels, train_cls, predict_cls,
fuse_cls, thresholds), memory that does not grow with the number of images where it need not, and
disk that grows with it linearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from medpipe.config import RunConfig, load_config
from medpipe.plan import (
    DataSize,
    classify_disk_gb,
    data_size,
    plan_table,
    step_needs,
)

REPO = Path(__file__).resolve().parents[1]
HPA = [REPO / "configs" / "multilabel.yaml", REPO / "configs" / "hpa.yaml"]
STEPS = ("ingest", "folds", "train_cls", "predict_cls", "fuse_cls", "thresholds", "submit")


def _hpa(n_train: int, n_test: int = 11702) -> tuple[dict, DataSize]:
    return load_config(HPA), DataSize({"train": n_train, "test": n_test}, 512 * 512, "test")


def test_the_multilabel_plan_names_its_own_steps_at_hpa_size():
    config, size = _hpa(31072)
    needs = step_needs(config, size)
    assert set(STEPS) <= set(needs)
    assert not {"train_seg", "predict_seg", "train_gate"} & set(needs)  # SIIM's steps are not in it
    text = plan_table(config, size)
    assert "train 31072" in text and "test 11702" in text
    assert "4 channels x 512², 28 classes, 5 trained folds" in text
    for step in STEPS:
        assert f"\n  {step} " in text, step
    assert "classify resnet34_4ch" in text and "GPU not measured" in text
    assert all(n.request_mb > n.mem_mb for n in needs.values())  # a cluster job asks for a margin


def test_memory_does_not_grow_with_the_images_where_it_need_not_and_disk_grows_linearly():
    config, small = _hpa(31072)
    _, big = _hpa(4 * 31072, 4 * 11702)
    cfg = RunConfig(config)
    c, side = len(cfg.section("data")["channels"]), cfg.image_size
    one_image = c * side * side  # bytes of one image in the uint8 cache
    added = sum(big.counts.values()) - sum(small.counts.values())
    a, b = step_needs(config, small), step_needs(config, big)
    for step in STEPS:
        per_image = (b[step].mem_mb - a[step].mem_mb) * 1024**2 / added
        # tables only (a few values per image and class): never a share of the images themselves
        assert per_image < one_image / 100, (step, per_image)
    # the steps that stream images (ingest, training, statistics) stay within their tables of
    # the smaller set's figure when the images quadruple
    for step, tables in (("ingest", 1.1), ("train_cls", 1.1), ("fuse_cls", 1.25)):
        assert b[step].mem_mb <= tables * a[step].mem_mb, step
    # ...and their memory does follow the image side (the chunk, the batches, the decoders)
    quarter = load_config(HPA, {"image_size": 256})
    for step in ("train_cls", "fuse_cls"):
        assert step_needs(quarter, small)[step].mem_mb < a[step].mem_mb, step

    disk_a, disk_b = classify_disk_gb(cfg, small), classify_disk_gb(cfg, big)
    k = len(cfg.section("data")["classes"])
    cache = "cache (N x C x S² uint8) and targets"
    n_a, n_b = sum(small.counts.values()), sum(big.counts.values())
    expected = (n_a * one_image + small.n("train") * k) / 1024**3
    assert abs(disk_a[cache] - expected) < 1e-9
    # linear: quadrupling every split quadruples the cache and the prediction tables
    for what in (cache, "predictions per classifier model"):
        assert abs(disk_b[what] - 4 * disk_a[what]) < 1e-9 * max(1.0, disk_b[what]), what
    assert abs(n_b - 4 * n_a) == 0


def test_the_command_plans_a_tiny_hpa_folder_it_has_not_read(tmp_path):
    root = tmp_path / "hpa"
    subprocess.run(
        [sys.executable, "-m", "medpipe.cli", "synth", "--task", "multilabel", "--out", str(root),
         "--n-train", "6", "--n-test", "3", "--size", "64", "--workers", "1"],
        check=True, capture_output=True, cwd=REPO,
    )  # fmt: skip
    overlay = tmp_path / "run.yaml"
    overlay.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run")}))
    proc = subprocess.run(
        [sys.executable, "-m", "medpipe.cli", "plan",
         "--config", str(REPO / "configs" / "multilabel.yaml"), str(overlay),
         "--data-root", str(root)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "test 3, train 6" in proc.stdout, proc.stdout
    assert "images counted, not read" in proc.stdout
    for step in STEPS:
        assert f"\n  {step} " in proc.stdout, step
    # the side comes from one PNG header: ingest's decoders hold C originals of 64²
    config = load_config(
        [REPO / "configs" / "multilabel.yaml"], {"data": {"root": str(root), "synthetic": None}}
    )
    size = data_size(config, ingested=False)
    assert size.original_pixels == 64 * 64 and size.counts == {"train": 6, "test": 3}


def test_the_workflow_asks_a_cluster_for_the_multilabel_steps_needs(tmp_path):
    overlay = tmp_path / "o.yaml"
    settings = {"run_dir": "runs/x", "data": {"root": str(tmp_path / "demo")}}  # not made yet
    overlay.write_text(yaml.safe_dump(settings))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "submission", "-n",
         "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--cores", "1", "--configfile", str(REPO / "configs" / "multilabel.yaml"), str(overlay)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = load_config([REPO / "configs" / "multilabel.yaml"], settings)
    needs = step_needs(config, data_size(config))
    out = proc.stdout + proc.stderr
    for rule in ("train_cls", "predict_cls", "fuse_cls"):
        block = out.split(f"rule {rule}:")[1].split("rule ")[0]
        assert f"mem_mb={needs[rule].request_mb}," in block, (rule, block)


def test_an_hpa_folder_without_labels_is_nothing_to_plan_naming_its_train_csv(tmp_path, capsys):
    from medpipe.cli import main

    config = str(REPO / "configs" / "multilabel.yaml")
    assert main(["plan", "--config", config, "--data-root", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{tmp_path / 'none' / 'train.csv'} does not exist" in err and "multilabel.md" in err
