# Data: (synthetic data) -> ingest -> patient-grouped folds.
SYNTH = config["data"].get("synthetic")

if SYNTH:
    try:  # an overlay that points data.root at real data but leaves synthetic on
        check_demo_folder(ROOT)
    except FileExistsError as err:
        raise WorkflowError(f"data.synthetic is set, but {err}") from None

    rule synthesize:
        """Generate the embedded synthetic SIIM-like DICOM dataset in data.root."""
        input:
            code=code("medpipe.synthetic.siim"),
        output:
            labels=path(INPUTS.train_labels),
            hidden=path(INPUTS.hidden_labels(1)),
            preview=path(INPUTS.preview),
            stage2=(
                [path(INPUTS.stage2_labels), path(INPUTS.hidden_labels(2))]
                if SYNTH.get("n_stage2_test", 0)
                else []
            ),
        params:
            synthetic=SYNTH,
            conspicuity=SYNTH.get("conspicuity", 1.0),
            root=folder_of("output", "labels", ROOT, INPUTS.train_labels),
        log:
            path(LAYOUT.log("synthesize")),
        benchmark:
            path(LAYOUT.benchmark("synthesize"))
        threads: heavy_threads
        shell:
            "medpipe synth --out {params.root:q} --n-train {params.synthetic[n_train]} "
            "--n-test {params.synthetic[n_test]} --n-stage2-test {params.synthetic[n_stage2_test]} "
            "--size {params.synthetic[size]} --seed {params.synthetic[seed]} "
            "--conspicuity {params.conspicuity:q} --preview {output.preview:q} "
            "--workers {threads} > {log:q} 2>&1"

elif not INPUTS.train_labels.exists():
    problem = "does not hold the SIIM-ACR layout (no train-rle.csv there)"
    raise WorkflowError(
        f"data.root = {ROOT!r} {problem if Path(ROOT).is_dir() else 'does not exist'}. "
        "Point data.root at your data (docs/siim.md), or generate the synthetic set with "
        "`medpipe synth --out data/synthetic` (or set data.synthetic in the config)."
    )


rule ingest:
    """Decode every DICOM once into meta.csv, the uint8 tensor cache and quarantine.csv."""
    input:
        labels=path(INPUTS.train_labels),
        code=code("medpipe.data.ingest"),
    output:
        meta=path(LAYOUT.meta(1)),
        quarantine=path(LAYOUT.quarantine(1)),
        train=path(LAYOUT.cache(1, "train", "images", SIZE)),
        masks=path(LAYOUT.cache(1, "train", "masks", SIZE)),
        test=path(LAYOUT.cache(1, "test", "images", SIZE)),
    params:
        train_dicom=path(INPUTS.dicom_dir("train")),
        test_dicom=path(INPUTS.dicom_dir("test")),
        size=SIZE,
        salt_digest=SALT_DIGEST,  # the salt itself reaches ingest as $MEDPIPE_SALT
        missing_labels=config["data"].get("missing_labels", "error"),
        out=folder_of("output", "meta", DATA, LAYOUT.meta(1)),
    log:
        path(LAYOUT.log("ingest")),
    benchmark:
        path(LAYOUT.benchmark("ingest"))
    threads: heavy_threads
    resources:
        mem_mb=NEEDS["ingest"].request_mb,
        runtime=NEEDS["ingest"].runtime_min,
    shell:
        "medpipe ingest --dicom-dir {params.train_dicom:q} --split train "
        "--dicom-dir {params.test_dicom:q} --split test --labels {input.labels:q} "
        "--out {params.out:q} --size {params.size} --workers {threads} --missing-labels {params.missing_labels} > {log:q} 2>&1"


rule make_folds:
    """Patient-grouped folds, stratified on the task's key (SIIM: 'has finding')."""
    input:
        meta=path(LAYOUT.meta(1)),
        code=code(TASK.module_of("folds")),
    output:
        path(LAYOUT.folds(1)),
    params:
        folds=config["folds"],
        seed=config["seed"],
        task=TASK.name,
    log:
        path(LAYOUT.log("folds")),
    resources:
        mem_mb=NEEDS["folds"].request_mb,
        runtime=NEEDS["folds"].runtime_min,
    shell:
        "medpipe folds --meta {input.meta:q} --n-folds {params.folds} --seed {params.seed} "
        "--task {params.task:q} --out {output:q} > {log:q} 2>&1"
