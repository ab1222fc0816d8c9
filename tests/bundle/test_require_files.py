"""The bundle's "every weight file is there" check, shared by the SIIM and multi-label bundles."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from medpipe.bundle import BundleError
from medpipe.bundle.infer import require_files
from medpipe.bundle.layout import BundleLayout


def test_require_files_names_each_missing_file_relative_to_the_bundle(tmp_path):
    layout = BundleLayout(tmp_path)
    present = tmp_path / "models" / "a" / "fold0.pt"
    present.parent.mkdir(parents=True)
    present.write_bytes(b"w")
    gone = tmp_path / "models" / "a" / "fold1.pt"
    spec = SimpleNamespace(folds=[(0, [present]), (1, [gone])])
    booster = tmp_path / "fusion" / "class0.txt"
    with pytest.raises(
        BundleError, match=r"2 weights file\(s\) missing: models/a/fold1.pt, fusion/class0.txt"
    ):
        require_files(layout, [spec], [booster], "weights file(s)")
    gone.write_bytes(b"w")
    require_files(layout, [spec], [])  # all there: no error
