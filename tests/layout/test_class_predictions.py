"""The classifier's fold tables: ids as strings, float32 probabilities and embeddings exact."""

from __future__ import annotations

import numpy as np
import pytest

from medpipe.layout import FoldDir, read_class_predictions, write_class_predictions


def test_a_table_reads_back_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    prob = rng.random((500, 7)).astype(np.float32)
    prob[:3, 0] = [0.0, 1.0, np.float32(1e-38)]
    emb = (rng.standard_normal((500, 33)) * 10.0 ** rng.integers(-30, 30, (500, 33))).astype(
        np.float32
    )
    ids = [f"{i:04d}" for i in range(500)]  # "0007" must not become 7
    path = FoldDir("classify", "m", 0, tmp_path).predictions("oof")
    assert path.name == "oof.csv"
    write_class_predictions(path, ids, prob, emb)
    table = read_class_predictions(path, embeddings=True)
    assert table["image_id"].tolist() == ids
    assert list(table.columns[1:8]) == [f"p_{k}" for k in range(7)]
    assert np.array_equal(table[[f"p_{k}" for k in range(7)]].to_numpy(), prob)
    assert np.array_equal(table[[f"emb_{i}" for i in range(33)]].to_numpy(), emb)
    assert table.filter(like="p_").dtypes.eq(np.float32).all()
    assert list(read_class_predictions(path).columns) == ["image_id", *[f"p_{k}" for k in range(7)]]


def test_mismatched_rows_and_missing_files_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"prob \(3, 2\) and embeddings \(2, 4\) do not match 3"):
        write_class_predictions(
            tmp_path / "t.csv", ["a", "b", "c"], np.zeros((3, 2)), np.zeros((2, 4))
        )
    with pytest.raises(FileNotFoundError, match=r"t\.csv: fold output not found"):
        read_class_predictions(tmp_path / "t.csv")
