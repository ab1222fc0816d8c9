# Reports: one self-contained HTML page a competitor opens after a run (docs/report.md), and the
# plots in it as PNGs, which `snakemake --report` shows beside the files marked report(...).
from medpipe.config import test_labels

REPORT_STAGE_DIR = f"{RUN}/stage{STAGE}"


report: "report/workflow.rst"


def report_inputs(wildcards):
    """Everything the page reads: the current stage's fold outputs and decisions, and the data."""
    d = data_dir(STAGE)
    stages = [1, 2] if STAGE == 2 else [1]
    inputs = {
        "submission": f"{RUN}/submission.csv",
        "meta": f"{d}/meta.csv",
        "folds": f"{d}/folds.csv",
        "quarantine": f"{d}/quarantine.csv",
        "cv": [f"{RUN}/stage{s}/cv.json" for s in stages],
        "thresholds": f"{REPORT_STAGE_DIR}/thresholds.json",
        "heatmap": f"{REPORT_STAGE_DIR}/thresholds.png",
        "seg": [f"{REPORT_STAGE_DIR}/segment/{m}/fold{f}/oof.npz" for m in SEG_MODELS for f in FOLDS],
        "gate": [
            f"{RUN}/stage{s}/gate/{m}/fold{f}/oof.csv" for s in stages for m in GATE_MODELS for f in FOLDS
        ],
        # Training logs live where the fold was trained: stage 1 for a model kept in stage 2.
        "logs": [
            str(checkpoint_for(config, RUN, STAGE, task, m, f).parent / n)
            for task, models in (("segment", SEG_MODELS), ("gate", GATE_MODELS))
            for m in models
            for f in FOLDS
            for n in ("metrics.json", "log.csv")
        ],
    }
    labels = test_labels(config, STAGE)
    if labels is not None:  # the report scores the submission on them
        inputs["test_labels"] = str(labels)
    if (config.get("fusion") or {}).get("enabled", False):
        inputs["fusion"] = [f"{REPORT_STAGE_DIR}/fusion/oof.csv", f"{REPORT_STAGE_DIR}/fusion/feature_importance.csv"]
    return inputs


rule report:
    """The run's HTML report: data, training curves, CV and ablation, decisions, OOF cases, stage 2."""
    input:
        unpack(report_inputs),
        code=code("report/*.py", "cli_report.py"),
    output:
        html=report(f"{RUN}/reports/report.html", category="Report"),
        plots=report(directory(f"{RUN}/reports/plots"), patterns=["{name}.png"], category="Report plots"),
    params:
        report=config.get("report") or {},
        stage=STAGE,
    log:
        f"{RUN}/logs/report.log",
    benchmark:
        f"{RUN}/benchmarks/report.tsv"
    threads: 1
    shell:
        "medpipe report --config {CONFIG_FILE:q} --run-dir {RUN:q} --stage {params.stage} "
        "--out {output.html:q} --plots-dir {output.plots:q} --no-progress > {log:q} 2>&1"
