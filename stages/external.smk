# Teammates' predictions (ensemble.external, docs/ensemble.md): each source is checked against the
# stage's meta.csv and folds.csv and written as medpipe's own fold files, so the steps after it
# read it like a trained model (maps as a segmentation model, p_finding as a gate); a multi-label
# run's class probabilities (kind: classes) become classifier folds that the thresholds decision
# weighs as a source of their own (medpipe.multilabel.decide).


rule import_external:
    """Check one source against the stage and write it as fold folders under external/<name>."""
    input:
        unpack(training_inputs),
        unpack(external_source),
        code=code("medpipe.steps.external"),
    output:
        [
            path(LAYOUT.stage("{stage}").external_pattern("{name}", f, which))
            for f in FOLDS
            for which in ("oof", "test")
        ],
    params:
        config=CONFIG_FILE,
        source=lambda w: EXTERNAL[w.name],
        image_size=SIZE,
        folds=FOLDS,
        data=data_folder(),
        stage_dir=folder_of(
            "output", 0, STAGE_DIR, LAYOUT.stage("{stage}").external_pattern("{name}", FOLDS[0], "oof")
        ),
        test_split=lambda w: test_split(w.stage),
    wildcard_constraints:
        name=r"[A-Za-z0-9_-]+",
        ext=r"npz|csv",
    log:
        path(LAYOUT.log("import_external", "{name}_{ext}", stage="{stage}")),
    benchmark:
        path(LAYOUT.benchmark("import_external", "{name}_{ext}", stage="{stage}"))
    threads: 1
    resources:  # one fold's maps at cache size, as predict holds them; class tables: a table
        mem_mb=NEEDS.get("predict_seg", NEEDS["thresholds"]).request_mb,
        runtime=NEEDS.get("predict_seg", NEEDS["thresholds"]).runtime_min,
    shell:
        "medpipe import-external --config {params.config:q} --name {wildcards.name:q} "
        "--data-dir {params.data:q} --stage-dir {params.stage_dir:q} --stage {wildcards.stage} "
        "--test-split {params.test_split} > {log:q} 2>&1"
