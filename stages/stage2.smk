# Stage 2 (the second half of a two-stage competition; docs/stage2.md): the stage-1 test labels
# are released. Chosen models retrain on train + stage-1 test (stage2.retrain.<model>), the others
# keep their stage-1 checkpoints; all predict the new stage-2 test set; fusion and thresholds are
# refitted on stage-2 OOF; REPRODUCE.md documents it. Stage-1 outputs are never overwritten.

# The film task's stage-2 ingest (stages/data.smk's input layout); a task with other input
# brings its own with its data rules (the multi-label task: stages/multilabel_stage2.smk).
if "data.smk" in TASK.rule_files:

    if STAGE == 2 and not SYNTH and not INPUTS.stage2_labels.exists():
        raise WorkflowError(
            f"stage: 2 needs {INPUTS.stage2_labels} and {INPUTS.dicom_dir('stage2_test')}/ (the released stage-2 "
            "data). With synthetic data, set data.synthetic.n_stage2_test > 0."
        )


    rule ingest_stage2:
        """Cache train, the now-labelled stage-1 test set and the stage-2 test set with the stage-2 labels."""
        input:
            labels=path(INPUTS.stage2_labels),
            code=code("medpipe.data.ingest"),
        output:
            meta=path(LAYOUT.meta(2)),
            quarantine=path(LAYOUT.quarantine(2)),
            train=path(LAYOUT.cache(2, "train", "images", SIZE)),
            test=path(LAYOUT.cache(2, "test", "images", SIZE)),
            test_masks=path(LAYOUT.cache(2, "test", "masks", SIZE)),
            stage2_test=path(LAYOUT.cache(2, "stage2_test", "images", SIZE)),
        params:
            train_dicom=path(INPUTS.dicom_dir("train")),
            test_dicom=path(INPUTS.dicom_dir("test")),
            stage2_dicom=path(INPUTS.dicom_dir("stage2_test")),
            out=folder_of("output", "meta", data_dir(2), LAYOUT.meta(2)),
            size=SIZE,
            salt_digest=SALT_DIGEST,  # the salt itself reaches ingest as $MEDPIPE_SALT
            missing_labels=config["data"].get("missing_labels", "error"),
        log:
            path(LAYOUT.log("ingest", stage=2)),
        benchmark:
            path(LAYOUT.benchmark("ingest", stage=2))
        threads: heavy_threads
        resources:
            mem_mb=NEEDS["ingest"].request_mb,
            runtime=NEEDS["ingest"].runtime_min,
        shell:
            "medpipe ingest --dicom-dir {params.train_dicom:q} --split train "
            "--dicom-dir {params.test_dicom:q} --split test "
            "--dicom-dir {params.stage2_dicom:q} --split stage2_test --labels {input.labels:q} "
            "--out {params.out:q} --size {params.size} --workers {threads} --missing-labels {params.missing_labels} > {log:q} 2>&1"


rule make_folds_stage2:
    """Stage-1 folds + the stage-1 test images (in their patient's fold, else always training)."""
    input:
        folds=path(LAYOUT.folds(1)),
        meta=path(LAYOUT.meta(2)),
        code=code("medpipe.stage2"),
    output:
        path(LAYOUT.folds(2)),
    log:
        path(LAYOUT.log("folds", stage=2)),
    resources:
        mem_mb=NEEDS["folds"].request_mb,
        runtime=NEEDS["folds"].runtime_min,
    shell:
        "medpipe stage2-folds --folds {input.folds:q} --meta {input.meta:q} --out {output:q} > {log:q} 2>&1"


rule choose_variants:
    """retrain: auto: per model, the retrained or the stage-1 weights, whichever CV is better."""
    input:
        meta=path(LAYOUT.meta(2)),
        folds=path(LAYOUT.folds(2)),
        oof=variant_oof,
        code=code("medpipe.steps.variants"),
    output:
        path(LAYOUT.stage(2).retrain_choice),
    params:
        config=CONFIG_FILE,
        retrain=CFG.section("stage2").get("retrain", {}),
        data=data_folder(),
        stage_dir=folder_of("output", 0, LAYOUT.stage(2).dir, LAYOUT.stage(2).retrain_choice),
    log:
        path(LAYOUT.log("choose_variants", stage=2)),
    resources:
        mem_mb=NEEDS["thresholds"].request_mb,
        runtime=NEEDS["thresholds"].runtime_min,
    shell:
        "medpipe choose-variants --config {params.config:q} --stage 2 --data-dir {params.data:q} "
        "--stage-dir {params.stage_dir:q} > {log:q} 2>&1"


rule reproduce_doc:
    """REPRODUCE.md: hardware, versions, git state, hashes, retrain decisions, wall times."""
    input:
        submission=path(LAYOUT.stage_submission(2)),
        cv1=path(LAYOUT.cv(1)),
        cv2=path(LAYOUT.cv(2)),
        code=code("medpipe.reproducibility"),
    output:
        doc=report(path(LAYOUT.reproduce("doc")), category="Stage 2"),
        lock=path(LAYOUT.reproduce("lock")),
        manifest=path(LAYOUT.reproduce("manifest")),
    params:
        config=CONFIG_FILE,
        retrain=CFG.section("stage2").get("retrain", {}),
        run_dir=folder_of("output", "doc", RUN, LAYOUT.reproduce("doc")),
        repo=workflow.basedir,
        configfiles=USER_CONFIGFILES,
        config_args=USER_CONFIG_ARGS,
    log:
        path(LAYOUT.log("reproduce_doc", stage=2)),
    shell:
        "medpipe reproduce-doc --config {params.config:q} --run-dir {params.run_dir:q} --repo {params.repo:q} "
        "--config-files {params.configfiles:q} --config-args {params.config_args:q} --out {output.doc:q} > {log:q} 2>&1"
