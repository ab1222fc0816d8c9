# Decisions on OOF (ensemble weights, threshold triplet, CV table), then the submission.


def fusion_inputs(wildcards):
    fused = (config.get("fusion") or {}).get("enabled", False)
    return {"fused": f"{RUN}/stage{wildcards.stage}/fusion/oof.csv"} if fused else {}


def seg_oof(wildcards):
    return [f"{RUN}/stage{wildcards.stage}/segment/{m}/fold{f}/oof.npz" for m in SEG_MODELS for f in FOLDS]


def gate_oof(wildcards):
    return [f"{RUN}/stage{wildcards.stage}/gate/{m}/fold{f}/oof.csv" for m in GATE_MODELS for f in FOLDS]


rule thresholds:
    """Ensemble weights and the (classification, pixel, min-area) triplet, searched on OOF; cv.json."""
    input:
        unpack(training_inputs),
        unpack(fusion_inputs),
        seg=seg_oof,
        gate=gate_oof,
        code=code("thresholds.py", "workflow.py", "inference/ensemble.py", "postprocess.py"),
    output:
        thresholds=report(f"{STAGE_DIR}/thresholds.json", category="Decisions", subcategory="stage {stage}"),
        cv=report(f"{STAGE_DIR}/cv.json", category="Decisions", subcategory="stage {stage}"),
        heatmap=report(f"{STAGE_DIR}/thresholds.png", category="Decisions", subcategory="stage {stage}"),
    params:
        postprocess=config["postprocess"],
        data=lambda w: data_dir(w.stage),
        stage_dir=STAGE_DIR,
    log:
        f"{RUN}/logs/stage{{stage}}/thresholds.log",
    benchmark:
        f"{RUN}/benchmarks/stage{{stage}}/thresholds.tsv"
    threads: HEAVY_THREADS
    shell:
        "medpipe thresholds --config {CONFIG_FILE:q} --data-dir {params.data:q} "
        "--stage-dir {params.stage_dir:q} > {log:q} 2>&1"


def fused_test(wildcards):
    fused = (config.get("fusion") or {}).get("enabled", False)
    return {"fused": f"{RUN}/stage{wildcards.stage}/fusion/test.csv"} if fused else {}


def seg_test(wildcards):
    return [f"{RUN}/stage{wildcards.stage}/segment/{m}/fold{f}/test.npz" for m in SEG_MODELS for f in FOLDS]


def gate_test(wildcards):
    return [f"{RUN}/stage{wildcards.stage}/gate/{m}/fold{f}/test.csv" for m in GATE_MODELS for f in FOLDS]


def test_dicom_dir(wildcards):
    return f"{ROOT}/dicom-images-test" if int(wildcards.stage) == 1 else f"{ROOT}/stage_2_images"


rule submit:
    """Blend folds and models, apply the thresholds, encode at DICOM size, validate."""
    input:
        unpack(fused_test),
        seg=seg_test,
        gate=gate_test,
        thresholds=f"{STAGE_DIR}/thresholds.json",
        code=code("submission.py", "workflow.py", "inference/ensemble.py", "postprocess.py"),
    output:
        f"{STAGE_DIR}/submission.csv",
    params:
        data=lambda w: data_dir(w.stage),
        stage_dir=STAGE_DIR,
        dicom_dir=test_dicom_dir,
    log:
        f"{RUN}/logs/stage{{stage}}/submit.log",
    benchmark:
        f"{RUN}/benchmarks/stage{{stage}}/submit.tsv"
    threads: HEAVY_THREADS
    shell:
        "medpipe submit --config {CONFIG_FILE:q} --data-dir {params.data:q} --stage-dir {params.stage_dir:q} "
        "--dicom-dir {params.dicom_dir:q} --out {output:q} > {log:q} 2>&1"


rule publish_submission:
    """The current stage's submission, validated again, at run_dir/submission.csv (stage 2: with REPRODUCE.md)."""
    input:
        submission=f"{RUN}/stage{STAGE}/submission.csv",
        doc=[f"{RUN}/stage2/REPRODUCE.md"] if STAGE == 2 else [],
    output:
        report(f"{RUN}/submission.csv", category="Submission"),
    params:
        dicom_dir=lambda w: f"{ROOT}/dicom-images-test" if STAGE == 1 else f"{ROOT}/stage_2_images",
    log:
        f"{RUN}/logs/publish_submission.log",
    shell:
        "medpipe publish {input.submission:q} {output:q} --dicom-dir {params.dicom_dir:q} > {log:q} 2>&1"
