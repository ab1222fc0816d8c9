# Stage 2 (the second half of a two-stage competition; docs/stage2.md): the stage-1 test labels
# are released. Chosen models retrain on train + stage-1 test (stage2.retrain.<model>), the others
# keep their stage-1 checkpoints; all predict the new stage-2 test set; fusion and thresholds are
# refitted on stage-2 OOF; REPRODUCE.md documents it. Stage-1 outputs are never overwritten.
STAGE2_DATA = f"{RUN}/stage2/data"

if STAGE == 2 and not SYNTH and not Path(ROOT, "stage_2_train.csv").exists():
    raise WorkflowError(
        f"stage: 2 needs {ROOT}/stage_2_train.csv and {ROOT}/stage_2_images/ (the released stage-2 "
        "data). With synthetic data, set data.synthetic.n_stage2_test > 0."
    )


rule ingest_stage2:
    """Cache train, the now-labelled stage-1 test set and the stage-2 test set with the stage-2 labels."""
    input:
        labels=f"{ROOT}/stage_2_train.csv",
        code=code("io/dicom.py", "data/ingest.py", "data/cache.py"),
    output:
        meta=f"{STAGE2_DATA}/meta.csv",
        quarantine=f"{STAGE2_DATA}/quarantine.csv",
        train=f"{STAGE2_DATA}/train_images_{SIZE}.npy",
        test=f"{STAGE2_DATA}/test_images_{SIZE}.npy",
        test_masks=f"{STAGE2_DATA}/test_masks_{SIZE}.npy",
        stage2_test=f"{STAGE2_DATA}/stage2_test_images_{SIZE}.npy",
    params:
        root=ROOT,
        size=SIZE,
        salt_digest=SALT_DIGEST,  # the salt itself reaches ingest as $MEDPIPE_SALT
        missing_labels=config["data"].get("missing_labels", "error"),
    log:
        f"{RUN}/logs/stage2/ingest.log",
    benchmark:
        f"{RUN}/benchmarks/stage2/ingest.tsv"
    threads: HEAVY_THREADS
    shell:
        "medpipe ingest --dicom-dir {params.root:q}/dicom-images-train --split train "
        "--dicom-dir {params.root:q}/dicom-images-test --split test "
        "--dicom-dir {params.root:q}/stage_2_images --split stage2_test --labels {input.labels:q} "
        "--out {STAGE2_DATA:q} --size {params.size} --workers {threads} --missing-labels {params.missing_labels} > {log:q} 2>&1"


rule make_folds_stage2:
    """Stage-1 folds + the stage-1 test images (in their patient's fold, else always training)."""
    input:
        folds=f"{DATA}/folds.csv",
        meta=f"{STAGE2_DATA}/meta.csv",
        code=code("stage2.py"),
    output:
        f"{STAGE2_DATA}/folds.csv",
    log:
        f"{RUN}/logs/stage2/folds.log",
    shell:
        "medpipe stage2-folds --folds {input.folds:q} --meta {input.meta:q} --out {output:q} > {log:q} 2>&1"


rule reproduce_doc:
    """REPRODUCE.md: hardware, versions, git state, hashes, retrain decisions, wall times."""
    input:
        submission=f"{RUN}/stage2/submission.csv",
        cv1=f"{RUN}/stage1/cv.json",
        cv2=f"{RUN}/stage2/cv.json",
        code=code("reproducibility.py"),
    output:
        doc=report(f"{RUN}/stage2/REPRODUCE.md", category="Stage 2"),
        lock=f"{RUN}/stage2/requirements.lock",
        manifest=f"{RUN}/stage2/reproduce.json",
    params:
        retrain=(config.get("stage2") or {}).get("retrain", {}),
        repo=workflow.basedir,
        configfiles=USER_CONFIGFILES,
        config_args=USER_CONFIG_ARGS,
    log:
        f"{RUN}/logs/stage2/reproduce_doc.log",
    shell:
        "medpipe reproduce-doc --config {CONFIG_FILE:q} --run-dir {RUN:q} --repo {params.repo:q} "
        "--config-files {params.configfiles:q} --config-args {params.config_args:q} --out {output.doc:q} > {log:q} 2>&1"
