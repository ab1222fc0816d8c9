# The multi-label task's report: one self-contained HTML page (docs/multilabel.md, "The report")
# and its plots as PNGs, which `snakemake --report` shows beside the files marked report(...).

from medpipe.run_summary import test_labels_of


def multilabel_report_inputs(wildcards):
    """Everything the page reads: the stage's decision, OOF predictions and training logs, the
    data tables, and the test labels when someone holds them (the report scores on them)."""
    inputs = {
        "submission": path(LAYOUT.submission),
        "meta": path(LAYOUT.meta(STAGE)),
        "folds": path(LAYOUT.folds(STAGE)),
        "cv": path(LAYOUT.cv(STAGE)),
        "thresholds": path(LAYOUT.thresholds(STAGE)),
        "heatmap": path(LAYOUT.heatmap(STAGE)),
        "oof": fold_predictions(STAGE, "oof"),
        "logs": [
            path(p)
            for m in CFG.model_names(CLASSIFY)
            for f in FOLDS
            for d in [CFG.trained_fold(STAGE, CLASSIFY, m, f)]
            for p in (d.metrics, d.log_csv)
        ],
    }
    labels = test_labels_of(CFG, STAGE)
    if labels is not None:
        inputs["test_labels"] = str(labels)
    if CFG.fusion_enabled:
        inputs["fused"] = path(LAYOUT.fused(STAGE, "oof"))
    return inputs


rule report:
    """The run's HTML report: per-class F1, PR curves, co-occurrence, thresholds, curves, cases."""
    input:
        unpack(multilabel_report_inputs),
        code=code(TASK.module_of("report")),
    output:
        html=report(path(LAYOUT.report_html), category="Report"),
        plots=report(directory(path(LAYOUT.plots_dir)), patterns=["{name}.png"], category="Report plots"),
    params:
        config=CONFIG_FILE,
        report=CFG.section("report"),
        stage=STAGE,
        run_dir=folder_of("output", "html", RUN, LAYOUT.report_html),
    log:
        path(LAYOUT.log("report")),
    benchmark:
        path(LAYOUT.benchmark("report"))
    threads: 1
    resources:
        mem_mb=NEEDS["report"].request_mb,
        runtime=NEEDS["report"].runtime_min,
    shell:
        "medpipe report --config {params.config:q} --run-dir {params.run_dir:q} --stage {params.stage} "
        "--out {output.html:q} --plots-dir {output.plots:q} --no-progress > {log:q} 2>&1"
