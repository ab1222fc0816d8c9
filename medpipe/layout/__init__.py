"""The run tree and its artifacts: where every file lives (:mod:`.paths`), what is in it
(:mod:`.artifacts`), and the decision file (:mod:`.decision`). The one owner of both; nothing
else in medpipe joins run-tree paths or parses these files. See docs/architecture.md.
"""

from medpipe.layout.artifacts import (
    TABLE_DTYPES,
    identify_test_set,
    read_folds,
    read_fused,
    read_gate_predictions,
    read_meta,
    read_prediction_ids,
    read_quarantine,
    read_seg_predictions,
    read_table,
    write_gate_predictions,
    write_seg_predictions,
)
from medpipe.layout.decision import Decision, dumps, read_decision, write_decision
from medpipe.layout.paths import (
    GATE,
    PREDICT_RULE,
    SEGMENT,
    TASKS,
    TRAIN_RULE,
    FoldDir,
    InputLayout,
    RunLayout,
    StageLayout,
    cache_file,
    config_section,
    data_files,
    fusion_files,
    test_split,
)

__all__ = [
    "TABLE_DTYPES",
    "GATE",
    "SEGMENT",
    "TASKS",
    "TRAIN_RULE",
    "PREDICT_RULE",
    "Decision",
    "FoldDir",
    "InputLayout",
    "RunLayout",
    "StageLayout",
    "cache_file",
    "config_section",
    "data_files",
    "dumps",
    "fusion_files",
    "read_decision",
    "read_folds",
    "read_fused",
    "read_gate_predictions",
    "read_meta",
    "read_prediction_ids",
    "read_quarantine",
    "read_seg_predictions",
    "read_table",
    "identify_test_set",
    "test_split",
    "write_decision",
    "write_gate_predictions",
    "write_seg_predictions",
]
