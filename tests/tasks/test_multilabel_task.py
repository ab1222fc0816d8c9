"""The multi-label task behind the seam, on a fabricated stage: the decision is chosen on the
classifiers' OOF tables and written, the submission follows the sample submission's order, and
validate/score/the header detection work as the CLI uses them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medpipe.config import RunConfig
from medpipe.errors import SubmissionError
from medpipe.layout import CLASSIFY, HpaInputLayout, target_file, write_class_predictions
from medpipe.layout.artifacts import write_target_matrix
from medpipe.tasks import get_task, task_of_submission

K, N_TRAIN, N_TEST, FOLDS = 4, 90, 20, 3


@pytest.fixture()
def stage(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "hpa"
    inputs = HpaInputLayout(root)
    root.mkdir()
    train_ids = [f"tr{i:03d}" for i in range(N_TRAIN)]
    test_ids = [f"te{i:03d}" for i in range(N_TEST)][::-1]  # the sample order is not sorted
    truth = (rng.random((N_TRAIN, K)) < [0.5, 0.3, 0.15, 0.05]).astype(np.uint8)
    truth[truth.sum(1) == 0, 0] = 1
    test_truth = (rng.random((N_TEST, K)) < [0.5, 0.3, 0.15, 0.05]).astype(np.uint8)
    test_truth[test_truth.sum(1) == 0, 0] = 1

    def target(row):
        return " ".join(str(k) for k in np.flatnonzero(row))

    pd.DataFrame({"Id": test_ids, "Predicted": ""}).to_csv(inputs.sample_submission, index=False)
    inputs.hidden_labels(1).parent.mkdir()
    pd.DataFrame({"Id": test_ids, "Target": [target(r) for r in test_truth]}).to_csv(
        inputs.hidden_labels(1), index=False
    )
    config = {"task": "multilabel", "run_dir": str(tmp_path / "run"), "folds": FOLDS, "seed": 0,
              "image_size": 32, "stage": 1, "data": {"root": str(root)},
              "classifier": {"models": {"a": {}, "b": {}}}, "postprocess": {"caps": [2]}}  # fmt: skip
    cfg = RunConfig(config)
    data = cfg.layout.data_dir(1)
    data.mkdir(parents=True)
    fold = np.arange(N_TRAIN) % FOLDS
    pd.DataFrame({"image_id": train_ids, "patient_key": train_ids,
                  "target": [target(r) for r in truth], "fold": fold}).to_csv(
        cfg.layout.folds(1), index=False)  # fmt: skip
    write_target_matrix(target_file(data, "train"), truth)
    # model a: informative; model b: noise. OOF rows from each image's own fold.
    for model, signal in (("a", 0.7), ("b", 0.0)):
        for f in range(FOLDS):
            d = cfg.layout.fold(1, CLASSIFY, model, f)
            d.path.mkdir(parents=True)
            mine = fold == f
            p = np.clip(signal * truth[mine] + (1 - signal) * rng.random((mine.sum(), K)), 0, 1)
            write_class_predictions(d.oof, np.array(train_ids)[mine], p, np.zeros((mine.sum(), 2)))
            pt = np.clip(signal * test_truth + (1 - signal) * rng.random((N_TEST, K)), 0, 1)
            write_class_predictions(
                d.test, sorted(test_ids), pt[np.argsort(test_ids)], np.zeros((N_TEST, 2))
            )
    return cfg, data, inputs


def test_the_decision_is_chosen_on_oof_and_written(stage):
    cfg, data, _ = stage
    task = get_task(cfg.task_name)
    decision = task.choose_decision(cfg, cfg.layout.stage(1), data)
    on_disk = json.loads(cfg.layout.thresholds(1).read_text())
    assert on_disk["rule"] == decision["rule"] and len(on_disk["thresholds"]) == K
    cv = json.loads(cfg.layout.cv(1).read_text())
    assert cv["nested"]["ensemble"] == pytest.approx(decision["nested_score"])
    assert set(cv["baselines"]) == {"every class for every image", "the most frequent class only"}
    assert cv["nested"]["ensemble"] > max(cv["baselines"].values())  # model a carries signal
    assert cfg.layout.stage(1).heatmap.is_file()


def test_the_submission_follows_the_sample_order_and_scores(stage, tmp_path):
    cfg, data, inputs = stage
    task = get_task(cfg.task_name)
    s1 = cfg.layout.stage(1)
    task.choose_decision(cfg, s1, data)
    out = tmp_path / "submission.csv"
    frame = task.write_submission(cfg, s1, data, None, out)
    sample = pd.read_csv(inputs.sample_submission, dtype=str)
    assert list(frame["Id"]) == list(sample["Id"])
    assert task_of_submission(out).name == "multilabel"
    task.validate_submission(out, inputs.sample_submission)
    result = task.score(out, inputs.hidden_labels(1))
    assert result.score > result.best_baseline[1]
    assert any(line.startswith("class 0: F1") for line in result.lines)


def test_a_submission_in_another_order_is_refused(stage, tmp_path):
    cfg, _, inputs = stage
    ids = pd.read_csv(inputs.sample_submission, dtype=str)["Id"]
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"Id": sorted(ids), "Predicted": "0"}).to_csv(bad, index=False)
    with pytest.raises(SubmissionError):
        get_task("multilabel").validate_submission(bad, inputs.sample_submission)


def test_an_unknown_header_names_every_task(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(SubmissionError, match="ImageId,EncodedPixels.*Id,Predicted"):
        task_of_submission(path)
