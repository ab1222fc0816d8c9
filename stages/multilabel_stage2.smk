# Stage 2 of the multi-label task (docs/multilabel.md, "Stage 2"): its data. The released labels
# (stage2_train.csv: train + the stage-1 test set) and the stage-2 test set are ingested into
# stage2/data/; the rest of stage 2 (folds, retraining, REPRODUCE.md) is stages/stage2.smk's.
# (stage 2 without a stage-2 test set is refused by MultilabelTask.check_config)


rule ingest_channels_stage2:
    """Cache train and the now-labelled stage-1 test images with the released labels, and the
    stage-2 test images in the stage-2 sample submission's order."""
    input:
        labels=path(ML_INPUTS.stage2_labels),
        sample=path(ML_INPUTS.stage2_sample_submission),
        code=code("medpipe.data.ingest_channels"),
    output:
        meta=path(LAYOUT.meta(2)),
        quarantine=path(LAYOUT.quarantine(2)),
        train=path(LAYOUT.cache(2, "train", "images", SIZE)),
        targets=path(target_file(data_dir(2), "train")),
        test=path(LAYOUT.cache(2, "test", "images", SIZE)),
        test_targets=path(target_file(data_dir(2), "test")),
        stage2_test=path(LAYOUT.cache(2, "stage2_test", "images", SIZE)),
    params:
        root=folder_of("input", "labels", ROOT, ML_INPUTS.stage2_labels),
        out=folder_of("output", "meta", data_dir(2), LAYOUT.meta(2)),
        size=SIZE,
        channels=ML_CHANNELS,
        classes=CFG.section("data").get("classes") or [],
        image_format=IMAGE_FORMAT,
        salt_digest=SALT_DIGEST,  # the salt itself reaches ingest as $MEDPIPE_SALT
    log:
        path(LAYOUT.log("ingest", stage=2)),
    benchmark:
        path(LAYOUT.benchmark("ingest", stage=2))
    threads: heavy_threads
    resources:
        mem_mb=NEEDS["ingest"].request_mb,
        runtime=NEEDS["ingest"].runtime_min,
    shell:
        "medpipe ingest-channels --stage 2 --root {params.root:q} --out {params.out:q} --size {params.size} "
        "--channels {params.channels:q} --classes {params.classes:q} "
        "--image-format {params.image_format:q} --workers {threads} --no-progress > {log:q} 2>&1"
