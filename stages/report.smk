# Reports: one self-contained HTML page a competitor opens after a run (docs/report.md), and the
# plots in it as PNGs, which `snakemake --report` shows beside the files marked report(...).


report: "report/workflow.rst"


rule report:
    """The run's HTML report: data, training curves, CV and ablation, decisions, OOF cases, stage 2."""
    input:
        unpack(report_inputs),
        code=code("medpipe.report.build"),
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
