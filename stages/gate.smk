# Gate: one image classifier per model x fold ("has a finding?"), then its OOF and test probabilities and embeddings.
GATE_FOLD = f"{RUN}/stage{{stage}}/gate/{{model}}/fold{{fold}}"


rule train_gate:
    """Train one gate classifier on one fold (resumes from last.ckpt after a crash)."""
    input:
        unpack(training_inputs),
        code=code("training/*.py", "models/gate.py", "data/dataset.py", "data/transforms.py"),
    output:
        ckpt=f"{GATE_FOLD}/model.ckpt",
        metrics=report(
            f"{GATE_FOLD}/metrics.json",
            category="Training",
            subcategory="gate {model}, stage {stage}",
            labels={"model": "{model}", "fold": "{fold}", "stage": "{stage}"},
        ),
        log_csv=f"{GATE_FOLD}/log.csv",
    params:
        model=model_block("gate"),
        run=TRAIN_GLOBALS,
        data=lambda w: data_dir(w.stage),
        out=GATE_FOLD,
    log:
        f"{RUN}/logs/stage{{stage}}/train_gate/{{model}}_fold{{fold}}.log",
    benchmark:
        f"{RUN}/benchmarks/stage{{stage}}/train_gate/{{model}}_fold{{fold}}.tsv"
    threads: model_threads
    resources:
        gpu=1,
        model_jobs=model_job_slot,
    shell:
        "medpipe train-gate --config {CONFIG_FILE:q} --model {wildcards.model} --fold {wildcards.fold} --threads {threads} "
        "--data-dir {params.data:q} --out {params.out:q} > {log:q} 2>&1"


rule predict_gate:
    """Gate probabilities and embeddings of the fold's validation images (OOF) and of the test set."""
    input:
        unpack(training_inputs),
        ckpt=lambda w: str(checkpoint_for(config, RUN, int(w.stage), "gate", w.model, int(w.fold))),
        code=code("inference/predict.py", "inference/tta.py", "data/dataset.py"),
    output:
        oof=f"{GATE_FOLD}/oof.csv",
        test=f"{GATE_FOLD}/test.csv",
    params:
        model=model_block("gate"),
        run=TRAIN_GLOBALS,
        data=lambda w: data_dir(w.stage),
        out=GATE_FOLD,
        test_split=lambda w: "test" if int(w.stage) == 1 else "stage2_test",
    log:
        f"{RUN}/logs/stage{{stage}}/predict_gate/{{model}}_fold{{fold}}.log",
    benchmark:
        f"{RUN}/benchmarks/stage{{stage}}/predict_gate/{{model}}_fold{{fold}}.tsv"
    threads: model_threads
    resources:
        gpu=1,
        model_jobs=model_job_slot,
    shell:
        "medpipe predict --task gate --config {CONFIG_FILE:q} --model {wildcards.model} --threads {threads} "
        "--fold {wildcards.fold} --data-dir {params.data:q} --ckpt {input.ckpt:q} --out {params.out:q} "
        "--test-split {params.test_split} > {log:q} 2>&1"
