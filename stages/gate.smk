# Gate: one image classifier per model x fold ("has a finding?"), then its OOF and test probabilities and embeddings.


rule train_gate:
    """Train one gate classifier on one fold (resumes from last.ckpt after a crash)."""
    input:
        unpack(training_inputs),
        code=code("medpipe.training.fit"),
    output:
        ckpt=fold_file(GATE, "checkpoint"),
        metrics=report(
            fold_file(GATE, "metrics"),
            category="Training",
            subcategory="gate {model}, stage {stage}",
            labels={"model": "{model}", "fold": "{fold}", "stage": "{stage}"},
        ),
        log_csv=fold_file(GATE, "log_csv"),
    params:
        config=CONFIG_FILE,
        model=model_block(GATE),
        run=TRAIN_GLOBALS,
        data=data_folder(),
        out=folder_of("output", "ckpt", fold_dir(GATE), fold_file(GATE, "checkpoint")),
    log:
        fold_log("train_gate"),
    benchmark:
        fold_benchmark("train_gate")
    threads: model_threads
    resources:
        mem_mb=NEEDS["train_gate"].request_mb,
        runtime=NEEDS["train_gate"].runtime_min,
        gpu=1,
        model_jobs=model_job_slot,
    shell:
        "medpipe train-gate --config {params.config:q} --model {wildcards.model} --fold {wildcards.fold} --threads {threads} "
        "--data-dir {params.data:q} --out {params.out:q} > {log:q} 2>&1"


rule predict_gate:
    """Gate probabilities and embeddings of the fold's validation images (OOF) and of the test set."""
    input:
        unpack(training_inputs),
        ckpt=trained_checkpoint(GATE),
        code=code("medpipe.inference.predict"),
    output:
        oof=fold_file(GATE, "oof"),
        test=fold_file(GATE, "test"),
    params:
        config=CONFIG_FILE,
        model=model_block(GATE),
        run=TRAIN_GLOBALS,
        data=data_folder(),
        out=folder_of("output", "oof", fold_dir(GATE), fold_file(GATE, "oof")),
        test_split=lambda w: test_split(w.stage),
    log:
        fold_log("predict_gate"),
    benchmark:
        fold_benchmark("predict_gate")
    threads: model_threads
    resources:
        mem_mb=NEEDS["predict_gate"].request_mb,
        runtime=NEEDS["predict_gate"].runtime_min,
        gpu=1,
        model_jobs=model_job_slot,
    shell:
        "medpipe predict --task gate --config {params.config:q} --model {wildcards.model} --threads {threads} "
        "--fold {wildcards.fold} --data-dir {params.data:q} --ckpt {input.ckpt:q} --out {params.out:q} "
        "--test-split {params.test_split} > {log:q} 2>&1"
