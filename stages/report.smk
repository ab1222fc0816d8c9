# Reports: one self-contained HTML page a competitor opens after a run (docs/report.md), and the
# plots in it as PNGs, which `snakemake --report` shows beside the files marked report(...).
from medpipe.config import test_labels


report: "report/workflow.rst"


def report_inputs(wildcards):
    """Everything the page reads: the current stage's fold outputs and decisions, and the data."""
    stages = [1, 2] if STAGE == 2 else [1]
    inputs = {
        "submission": path(LAYOUT.submission),
        "meta": path(LAYOUT.meta(STAGE)),
        "folds": path(LAYOUT.folds(STAGE)),
        "quarantine": path(LAYOUT.quarantine(STAGE)),
        "cv": [path(LAYOUT.cv(s)) for s in stages],
        "thresholds": path(LAYOUT.thresholds(STAGE)),
        "heatmap": path(LAYOUT.heatmap(STAGE)),
        "seg": fold_predictions(STAGE, "oof", (SEGMENT,)),
        "gate": [p for s in stages for p in fold_predictions(s, "oof", (GATE,))],
        # Training logs live where the fold was trained: stage 1 for a model kept in stage 2.
        "logs": [
            path(p)
            for task in (SEGMENT, GATE)
            for m in CFG.model_names(task)
            for f in FOLDS
            for d in [CFG.trained_fold(STAGE, task, m, f)]
            for p in (d.metrics, d.log_csv)
        ],
    }
    labels = test_labels(config, STAGE)
    if labels is not None:  # the report scores the submission on them
        inputs["test_labels"] = str(labels)
    if CFG.fusion_enabled:
        inputs["fusion"] = [path(LAYOUT.fused(STAGE, "oof")), path(LAYOUT.feature_importance(STAGE))]
    return inputs


rule report:
    """The run's HTML report: data, training curves, CV and ablation, decisions, OOF cases, stage 2."""
    input:
        unpack(report_inputs),
        code=code("medpipe.report.build"),
    output:
        html=report(path(LAYOUT.report_html), category="Report"),
        plots=report(directory(path(LAYOUT.plots_dir)), patterns=["{name}.png"], category="Report plots"),
    params:
        report=CFG.section("report"),
        stage=STAGE,
    log:
        path(LAYOUT.log("report")),
    benchmark:
        path(LAYOUT.benchmark("report"))
    threads: 1
    resources:
        mem_mb=NEEDS["report"].request_mb,
        runtime=NEEDS["report"].runtime_min,
    shell:
        "medpipe report --config {CONFIG_FILE:q} --run-dir {RUN:q} --stage {params.stage} "
        "--out {output.html:q} --plots-dir {output.plots:q} --no-progress > {log:q} 2>&1"
