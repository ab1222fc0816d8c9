# Fusion: CNN outputs + DICOM metadata -> LightGBM p(finding), on the same patient-grouped folds.


rule features:
    """One row per image: gate probabilities, segmentation statistics, embedding PCA, metadata."""
    input:
        unpack(training_inputs),
        lambda w: fold_predictions(w.stage, "oof") + fold_predictions(w.stage, "test"),
        code=code("medpipe.steps.features"),
    output:
        path(LAYOUT.features("{stage}")),
    params:
        config=CONFIG_FILE,
        fusion=CFG.fusion,
        data=data_folder(),
        stage_dir=folder_of("output", 0, STAGE_DIR, LAYOUT.features("{stage}")),
    log:
        stage_log("features"),
    benchmark:
        stage_benchmark("features")
    threads: heavy_threads
    resources:
        mem_mb=NEEDS["features"].request_mb,
        runtime=NEEDS["features"].runtime_min,
    shell:
        "medpipe features --config {params.config:q} --stage {wildcards.stage} --data-dir {params.data:q} "
        "--stage-dir {params.stage_dir:q} --out {output:q} > {log:q} 2>&1"


rule fuse:
    """LightGBM on the features, early stopping inside each fold: OOF and test p(finding)."""
    input:
        unpack(training_inputs),
        features=path(LAYOUT.features("{stage}")),
        code=code("medpipe.steps.fuse"),
    output:
        oof=path(LAYOUT.fused("{stage}", "oof")),
        test=path(LAYOUT.fused("{stage}", "test")),
        importance=report(path(LAYOUT.feature_importance("{stage}")), category="Fusion", subcategory="stage {stage}"),
    params:
        config=CONFIG_FILE,
        fusion=CFG.fusion,
        seed=config["seed"],
        data=data_folder(),
        out=folder_of("output", "oof", LAYOUT.fusion_dir("{stage}"), LAYOUT.fused("{stage}", "oof")),
    log:
        stage_log("fuse"),
    benchmark:
        stage_benchmark("fuse")
    threads: heavy_threads
    resources:
        mem_mb=NEEDS["fuse"].request_mb,
        runtime=NEEDS["fuse"].runtime_min,
    shell:
        "medpipe fuse --config {params.config:q} --features {input.features:q} --data-dir {params.data:q} "
        "--out-dir {params.out:q} > {log:q} 2>&1"
