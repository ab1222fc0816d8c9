# Fusion: CNN outputs + DICOM metadata -> LightGBM p(finding), on the same patient-grouped folds.
STAGE_DIR = f"{RUN}/stage{{stage}}"


def fold_outputs(wildcards):
    """Every model x fold prediction of this stage (stage 2 may reuse stage-1 checkpoints)."""
    s = wildcards.stage
    seg = [f"{RUN}/stage{s}/segment/{m}/fold{f}/{n}" for m in SEG_MODELS for f in FOLDS for n in ("oof.npz", "test.npz")]
    gate = [f"{RUN}/stage{s}/gate/{m}/fold{f}/{n}" for m in GATE_MODELS for f in FOLDS for n in ("oof.csv", "test.csv")]
    return seg + gate


rule features:
    """One row per image: gate probabilities, segmentation statistics, embedding PCA, metadata."""
    input:
        unpack(training_inputs),
        fold_outputs,
        code=code("fusion/features.py", "workflow.py"),
    output:
        f"{STAGE_DIR}/fusion/features.csv",
    params:
        fusion=config.get("fusion", {}),
        data=lambda w: data_dir(w.stage),
        stage_dir=STAGE_DIR,
    log:
        f"{RUN}/logs/stage{{stage}}/features.log",
    benchmark:
        f"{RUN}/benchmarks/stage{{stage}}/features.tsv"
    threads: HEAVY_THREADS
    shell:
        "medpipe features --config {CONFIG_FILE:q} --data-dir {params.data:q} "
        "--stage-dir {params.stage_dir:q} --out {output:q} > {log:q} 2>&1"


rule fuse:
    """LightGBM on the features, early stopping inside each fold: OOF and test p(finding)."""
    input:
        unpack(training_inputs),
        features=f"{STAGE_DIR}/fusion/features.csv",
        code=code("fusion/lgbm.py", "workflow.py"),
    output:
        oof=f"{STAGE_DIR}/fusion/oof.csv",
        test=f"{STAGE_DIR}/fusion/test.csv",
        importance=report(f"{STAGE_DIR}/fusion/feature_importance.csv", category="Fusion", subcategory="stage {stage}"),
    params:
        fusion=config.get("fusion", {}),
        seed=config["seed"],
        data=lambda w: data_dir(w.stage),
        out=f"{STAGE_DIR}/fusion",
    log:
        f"{RUN}/logs/stage{{stage}}/fuse.log",
    benchmark:
        f"{RUN}/benchmarks/stage{{stage}}/fuse.tsv"
    threads: HEAVY_THREADS
    shell:
        "medpipe fuse --config {CONFIG_FILE:q} --features {input.features:q} --data-dir {params.data:q} "
        "--out-dir {params.out:q} > {log:q} 2>&1"
