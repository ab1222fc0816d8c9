# Classifier: one multi-label timm classifier per model x fold, then its OOF and test class
# probabilities and embeddings; with fusion.enabled, a per-class LightGBM fusion of those with
# each image's statistics (the thresholds rule then compares both by nested CV).


rule train_cls:
    """Train one classifier on one fold (resumes from last.ckpt after a crash)."""
    input:
        unpack(training_inputs),
        unpack(pseudo_files),
        code=code("medpipe.training.fit"),
    output:
        ckpt=fold_file(CLASSIFY, "checkpoint"),
        metrics=fold_file(CLASSIFY, "metrics"),
        log_csv=fold_file(CLASSIFY, "log_csv"),
    params:
        config=CONFIG_FILE,
        model=model_block(CLASSIFY),
        run=TRAIN_GLOBALS,
        data=data_folder(),
        out=folder_of("output", "ckpt", fold_dir(CLASSIFY), fold_file(CLASSIFY, "checkpoint")),
    log:
        fold_log("train_cls"),
    benchmark:
        fold_benchmark("train_cls")
    threads: model_threads
    resources:
        mem_mb=NEEDS["train_cls"].request_mb,
        runtime=NEEDS["train_cls"].runtime_min,
        gpu=1,
        model_jobs=model_job_slot,
    shell:
        "medpipe train-cls --config {params.config:q} --model {wildcards.model} --fold {wildcards.fold} --threads {threads} "
        "--data-dir {params.data:q} --out {params.out:q} > {log:q} 2>&1"


rule predict_cls:
    """Class probabilities and embeddings of the fold's validation images (OOF) and of the test set."""
    input:
        unpack(training_inputs),
        ckpt=trained_checkpoint(CLASSIFY),
        code=code("medpipe.inference.predict"),
    output:
        oof=fold_file(CLASSIFY, "oof"),
        test=fold_file(CLASSIFY, "test"),
    params:
        config=CONFIG_FILE,
        model=model_block(CLASSIFY),
        run=TRAIN_GLOBALS,
        data=data_folder(),
        out=folder_of("output", "oof", fold_dir(CLASSIFY), fold_file(CLASSIFY, "oof")),
        test_split=lambda w: test_split(w.stage),
    log:
        fold_log("predict_cls"),
    benchmark:
        fold_benchmark("predict_cls")
    threads: model_threads
    resources:
        mem_mb=NEEDS["predict_cls"].request_mb,
        runtime=NEEDS["predict_cls"].runtime_min,
        gpu=1,
        model_jobs=model_job_slot,
    shell:
        "medpipe predict --task classify --config {params.config:q} --model {wildcards.model} --threads {threads} "
        "--fold {wildcards.fold} --data-dir {params.data:q} --ckpt {input.ckpt:q} --out {params.out:q} "
        "--test-split {params.test_split} > {log:q} 2>&1"


rule fuse_cls:
    """Per-class LightGBM on the CNN's OOF probabilities and each image's statistics (fusion.enabled)."""
    input:
        unpack(training_inputs),
        lambda w: fold_predictions(w.stage, "oof") + fold_predictions(w.stage, "test"),
        code=code("medpipe.multilabel.fusion"),
    output:
        oof=path(LAYOUT.fused("{stage}", "oof")),
        test=path(LAYOUT.fused("{stage}", "test")),
        features=path(LAYOUT.features("{stage}")),
    params:
        config=CONFIG_FILE,
        fusion=CFG.fusion,
        seed=config["seed"],
        data=data_folder(),
        stage_dir=folder_of("output", "oof", STAGE_DIR, LAYOUT.fused("{stage}", "oof")),
        out=folder_of("output", "oof", LAYOUT.fusion_dir("{stage}"), LAYOUT.fused("{stage}", "oof")),
    log:
        stage_log("fuse_cls"),
    benchmark:
        stage_benchmark("fuse_cls")
    threads: heavy_threads
    resources:
        mem_mb=NEEDS["fuse_cls"].request_mb,
        runtime=NEEDS["fuse_cls"].runtime_min,
    shell:
        "medpipe fuse-cls --config {params.config:q} --stage {wildcards.stage} --data-dir {params.data:q} "
        "--stage-dir {params.stage_dir:q} --out-dir {params.out:q} --threads {threads} > {log:q} 2>&1"


rule pseudo_label_cls:
    """A <model>@pl<k> classifier fold's pseudo-labels: the test images whose every class round
    k-1's model of the same fold is confident about, labelled with its present classes."""
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
        mem_mb=NEEDS["fuse_cls"].request_mb,
        runtime=NEEDS["fuse_cls"].runtime_min,
    shell:
        "medpipe pseudo-label --config {params.config:q} --model {wildcards.model} --fold {wildcards.fold} "
        "--stage {wildcards.stage} --data-dir {params.data:q} --stage-dir {params.stage_dir:q} > {log:q} 2>&1"
