# Segmentation: one smp U-Net per model x fold, then its OOF and test probabilities.
SEG_FOLD = f"{RUN}/stage{{stage}}/segment/{{model}}/fold{{fold}}"


rule train_seg:
    """Train one segmentation model on one fold (resumes from last.ckpt after a crash)."""
    input:
        unpack(training_inputs),
        code=code("training/*.py", "models/segmentation.py", "data/dataset.py", "data/transforms.py"),
    output:
        ckpt=f"{SEG_FOLD}/model.ckpt",
        metrics=report(
            f"{SEG_FOLD}/metrics.json",
            category="Training",
            subcategory="segmentation {model}, stage {stage}",
            labels={"model": "{model}", "fold": "{fold}", "stage": "{stage}"},
        ),
        log_csv=f"{SEG_FOLD}/log.csv",
    params:
        model=model_block("segmentation"),
        run=TRAIN_GLOBALS,
        data=lambda w: data_dir(w.stage),
        out=SEG_FOLD,
    log:
        f"{RUN}/logs/stage{{stage}}/train_seg/{{model}}_fold{{fold}}.log",
    benchmark:
        f"{RUN}/benchmarks/stage{{stage}}/train_seg/{{model}}_fold{{fold}}.tsv"
    threads: model_threads
    resources:
        gpu=1,
        model_jobs=model_job_slot,
    shell:
        "medpipe train-seg --config {CONFIG_FILE:q} --model {wildcards.model} --fold {wildcards.fold} --threads {threads} "
        "--data-dir {params.data:q} --out {params.out:q} > {log:q} 2>&1"


rule predict_seg:
    """Probability maps of the fold's validation images (OOF) and of the test set."""
    input:
        unpack(training_inputs),
        ckpt=lambda w: str(checkpoint_for(config, RUN, int(w.stage), "segment", w.model, int(w.fold))),
        code=code("inference/predict.py", "inference/tta.py", "data/dataset.py"),
    output:
        oof=f"{SEG_FOLD}/oof.npz",
        test=f"{SEG_FOLD}/test.npz",
    params:
        model=model_block("segmentation"),
        run=TRAIN_GLOBALS,
        data=lambda w: data_dir(w.stage),
        out=SEG_FOLD,
        test_split=lambda w: "test" if int(w.stage) == 1 else "stage2_test",
    log:
        f"{RUN}/logs/stage{{stage}}/predict_seg/{{model}}_fold{{fold}}.log",
    benchmark:
        f"{RUN}/benchmarks/stage{{stage}}/predict_seg/{{model}}_fold{{fold}}.tsv"
    threads: model_threads
    resources:
        gpu=1,
        model_jobs=model_job_slot,
    shell:
        "medpipe predict --task segment --config {CONFIG_FILE:q} --model {wildcards.model} --threads {threads} "
        "--fold {wildcards.fold} --data-dir {params.data:q} --ckpt {input.ckpt:q} --out {params.out:q} "
        "--test-split {params.test_split} > {log:q} 2>&1"
