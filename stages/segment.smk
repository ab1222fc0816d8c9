# Segmentation: one smp U-Net per model x fold, then its OOF and test probabilities.


rule train_seg:
    """Train one segmentation model on one fold (resumes from last.ckpt after a crash)."""
    input:
        unpack(training_inputs),
        unpack(pseudo_files),
        code=code("medpipe.training.fit"),
    output:
        ckpt=fold_file(SEGMENT, "checkpoint"),
        metrics=report(
            fold_file(SEGMENT, "metrics"),
            category="Training",
            subcategory="segmentation {model}, stage {stage}",
            labels={"model": "{model}", "fold": "{fold}", "stage": "{stage}"},
        ),
        log_csv=fold_file(SEGMENT, "log_csv"),
    params:
        config=CONFIG_FILE,
        model=model_block(SEGMENT),
        run=TRAIN_GLOBALS,
        pseudo_weight=pseudo_weight,
        data=data_folder(),
        out=folder_of("output", "ckpt", fold_dir(SEGMENT), fold_file(SEGMENT, "checkpoint")),
    log:
        fold_log("train_seg"),
    benchmark:
        fold_benchmark("train_seg")
    threads: model_threads
    resources:
        mem_mb=NEEDS["train_seg"].request_mb,
        runtime=NEEDS["train_seg"].runtime_min,
        gpu=1,
        model_jobs=model_job_slot,
    shell:
        "medpipe train-seg --config {params.config:q} --model {wildcards.model} --fold {wildcards.fold} --threads {threads} "
        "--data-dir {params.data:q} --out {params.out:q} > {log:q} 2>&1"


rule predict_seg:
    """Probability maps of the fold's validation images (OOF) and of the test set."""
    input:
        unpack(training_inputs),
        ckpt=trained_checkpoint(SEGMENT),
        code=code("medpipe.inference.predict"),
    output:
        oof=fold_file(SEGMENT, "oof"),
        test=fold_file(SEGMENT, "test"),
    params:
        config=CONFIG_FILE,
        model=model_block(SEGMENT),
        run=TRAIN_GLOBALS,
        data=data_folder(),
        out=folder_of("output", "oof", fold_dir(SEGMENT), fold_file(SEGMENT, "oof")),
        test_split=lambda w: test_split(w.stage),
    log:
        fold_log("predict_seg"),
    benchmark:
        fold_benchmark("predict_seg")
    threads: model_threads
    resources:
        mem_mb=NEEDS["predict_seg"].request_mb,
        runtime=NEEDS["predict_seg"].runtime_min,
        gpu=1,
        model_jobs=model_job_slot,
    shell:
        "medpipe predict --task segment --config {params.config:q} --model {wildcards.model} --threads {threads} "
        "--fold {wildcards.fold} --data-dir {params.data:q} --ckpt {input.ckpt:q} --out {params.out:q} "
        "--test-split {params.test_split} > {log:q} 2>&1"


rule pseudo_label:
    """A <model>@pl<k> fold's pseudo-labels: the confident test images, labelled by round k-1's
    model of the same fold (and the same fold of pseudo_label.finding's gate)."""
    input:
        unpack(training_inputs),
        unpack(pseudo_sources),
        code=code("medpipe.steps.pseudo"),
    output:
        **pseudo_outputs(),
    params:
        config=CONFIG_FILE,
        pseudo={k: v for k, v in CFG.pseudo_label.items() if k != "weight"},
        data=data_folder(),
        stage_dir=folder_of("output", "pseudo_rows", STAGE_DIR, pseudo_outputs()["pseudo_rows"]),
    wildcard_constraints:
        model=r"[A-Za-z0-9_-]+@pl\d+",
    log:
        fold_log("pseudo_label"),
    resources:
        mem_mb=NEEDS["features"].request_mb,
        runtime=NEEDS["features"].runtime_min,
    shell:
        "medpipe pseudo-label --config {params.config:q} --model {wildcards.model} --fold {wildcards.fold} "
        "--stage {wildcards.stage} --data-dir {params.data:q} --stage-dir {params.stage_dir:q} > {log:q} 2>&1"
