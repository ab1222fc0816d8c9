# Data: (synthetic data) -> ingest -> patient-grouped folds.
SYNTH = config["data"].get("synthetic")

if SYNTH:

    rule synthesize:
        """Generate the embedded synthetic SIIM-like DICOM dataset in data.root."""
        output:
            labels=f"{ROOT}/train-rle.csv",
            hidden=f"{ROOT}/hidden/test-rle.csv",
            preview=f"{ROOT}/preview.png",
            stage2=(
                [f"{ROOT}/stage_2_train.csv", f"{ROOT}/hidden/stage2-test-rle.csv"]
                if SYNTH.get("n_stage2_test", 0)
                else []
            ),
        params:
            synthetic=SYNTH,
            conspicuity=SYNTH.get("conspicuity", 1.0),
        log:
            f"{RUN}/logs/synthesize.log",
        benchmark:
            f"{RUN}/benchmarks/synthesize.tsv"
        threads: HEAVY_THREADS
        shell:
            "medpipe synth --out {ROOT:q} --n-train {params.synthetic[n_train]} "
            "--n-test {params.synthetic[n_test]} --n-stage2-test {params.synthetic[n_stage2_test]} "
            "--size {params.synthetic[size]} --seed {params.synthetic[seed]} "
            "--conspicuity {params.conspicuity:q} --preview {output.preview:q} "
            "--workers {threads} > {log:q} 2>&1"

elif not Path(ROOT, "train-rle.csv").exists():
    problem = "does not hold the SIIM-ACR layout (no train-rle.csv there)"
    raise WorkflowError(
        f"data.root = {ROOT!r} {problem if Path(ROOT).is_dir() else 'does not exist'}. "
        "Point data.root at your data (docs/siim.md), or generate the synthetic set with "
        "`medpipe synth --out data/synthetic` (or set data.synthetic in the config)."
    )


rule ingest:
    """Decode every DICOM once into meta.csv, the uint8 tensor cache and quarantine.csv."""
    input:
        labels=f"{ROOT}/train-rle.csv",
        code=code("io/dicom.py", "data/ingest.py", "data/cache.py"),
    output:
        meta=f"{DATA}/meta.csv",
        quarantine=f"{DATA}/quarantine.csv",
        train=f"{DATA}/train_images_{SIZE}.npy",
        masks=f"{DATA}/train_masks_{SIZE}.npy",
        test=f"{DATA}/test_images_{SIZE}.npy",
    params:
        root=ROOT,
        size=SIZE,
        salt_digest=SALT_DIGEST,  # the salt itself reaches ingest as $MEDPIPE_SALT
        missing_labels=config["data"].get("missing_labels", "error"),
    log:
        f"{RUN}/logs/ingest.log",
    benchmark:
        f"{RUN}/benchmarks/ingest.tsv"
    threads: HEAVY_THREADS
    shell:
        "medpipe ingest --dicom-dir {params.root:q}/dicom-images-train --split train "
        "--dicom-dir {params.root:q}/dicom-images-test --split test --labels {input.labels:q} "
        "--out {DATA:q} --size {params.size} --workers {threads} --missing-labels {params.missing_labels} > {log:q} 2>&1"


rule make_folds:
    """Patient-grouped folds, stratified on 'has finding'."""
    input:
        meta=f"{DATA}/meta.csv",
        code=code("data/folds.py"),
    output:
        f"{DATA}/folds.csv",
    params:
        folds=config["folds"],
        seed=config["seed"],
    log:
        f"{RUN}/logs/folds.log",
    shell:
        "medpipe folds --meta {input.meta:q} --n-folds {params.folds} --seed {params.seed} "
        "--out {output:q} > {log:q} 2>&1"
