# Decisions on OOF (ensemble weights, threshold triplet, CV table), then the submission.


rule thresholds:
    """Ensemble weights and the (classification, pixel, min-area) triplet, searched on OOF; cv.json."""
    input:
        unpack(training_inputs),
        unpack(fused("oof")),
        predictions=lambda w: fold_predictions(w.stage, "oof"),
        teammates=lambda w: teammate_predictions(w.stage, "oof"),
        code=code("medpipe.steps.thresholds", TASK.module_of("decide")),
    output:
        thresholds=report(path(LAYOUT.thresholds("{stage}")), category="Decisions", subcategory="stage {stage}"),
        cv=report(path(LAYOUT.cv("{stage}")), category="Decisions", subcategory="stage {stage}"),
        heatmap=report(path(LAYOUT.heatmap("{stage}")), category="Decisions", subcategory="stage {stage}"),
    params:
        config=CONFIG_FILE,
        postprocess=config["postprocess"],
        data=data_folder(),
        stage_dir=folder_of("output", "thresholds", STAGE_DIR, LAYOUT.thresholds("{stage}")),
    log:
        stage_log("thresholds"),
    benchmark:
        stage_benchmark("thresholds")
    threads: heavy_threads
    resources:
        mem_mb=NEEDS["thresholds"].request_mb,
        runtime=NEEDS["thresholds"].runtime_min,
    shell:
        "medpipe thresholds --config {params.config:q} --stage {wildcards.stage} --data-dir {params.data:q} "
        "--stage-dir {params.stage_dir:q} > {log:q} 2>&1"


rule submit:
    """Blend folds and models, apply the thresholds, encode at DICOM size, validate."""
    input:
        unpack(fused("test")),
        predictions=lambda w: fold_predictions(w.stage, "test"),
        teammates=lambda w: teammate_predictions(w.stage, "test"),
        thresholds=path(LAYOUT.thresholds("{stage}")),
        code=code("medpipe.steps.submit", TASK.module_of("submit")),
    output:
        path(LAYOUT.stage_submission("{stage}")),
    params:
        config=CONFIG_FILE,
        data=lambda w: data_dir(w.stage),
        stage_dir=folder_of("output", 0, STAGE_DIR, LAYOUT.stage_submission("{stage}")),
        dicom_dir=lambda w: path(TASK.test_reference(ROOT, w.stage)),
    log:
        stage_log("submit"),
    benchmark:
        stage_benchmark("submit")
    threads: heavy_threads
    resources:
        mem_mb=NEEDS["submit"].request_mb,
        runtime=NEEDS["submit"].runtime_min,
    shell:
        "medpipe submit --config {params.config:q} --stage {wildcards.stage} --data-dir {params.data:q} --stage-dir {params.stage_dir:q} "
        "--dicom-dir {params.dicom_dir:q} --out {output:q} > {log:q} 2>&1"


rule publish_submission:
    """The current stage's submission, validated again, at run_dir/submission.csv (stage 2: with REPRODUCE.md)."""
    input:
        submission=path(LAYOUT.stage_submission(STAGE)),
        doc=[path(LAYOUT.reproduce("doc"))] if STAGE == 2 else [],
        code=code(TASK.module_of("format")),
    output:
        report(path(LAYOUT.submission), category="Submission"),
    params:
        dicom_dir=path(TASK.test_reference(ROOT, STAGE)),
        task=TASK.name,
    log:
        path(LAYOUT.log("publish_submission")),
    shell:
        "medpipe publish {input.submission:q} {output:q} --dicom-dir {params.dicom_dir:q} "
        "--task {params.task:q} > {log:q} 2>&1"
