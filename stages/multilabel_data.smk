# Data of the multi-label task: (demo cells) -> ingest of the channel PNGs -> label-set folds.
ML_INPUTS = HpaInputLayout(ROOT)
SYNTH = config["data"].get("synthetic")
# png: <Id>_<channel>.png per channel (HPA); dicom: one <Id>.dcm film per image, C = 1
IMAGE_FORMAT = CFG.section("data").get("image_format") or "png"
ML_CHANNELS = CFG.section("data").get("channels") or ["red", "green", "blue", "yellow"]
if IMAGE_FORMAT == "dicom" and SYNTH:
    raise WorkflowError(
        "data.image_format is dicom, but data.synthetic is set (the demo set is PNG cells): "
        "set data.synthetic: null and point data.root at your films (docs/multilabel.md)"
    )
if IMAGE_FORMAT == "dicom" and len(ML_CHANNELS) != 1:
    raise WorkflowError(
        f"data.image_format is dicom, but data.channels is {list(ML_CHANNELS)}: a film is one "
        "channel, set data.channels: [gray] (docs/multilabel.md)"
    )

if SYNTH:
    try:  # an overlay that points data.root at real data but leaves synthetic on
        check_demo_folder(ROOT)
    except FileExistsError as err:
        raise WorkflowError(f"data.synthetic is set, but {err}") from None

    rule synthesize_cells:
        """Generate the embedded HPA-like 4-channel demo set in data.root (Kaggle HPA layout)."""
        input:
            code=code("medpipe.synthetic.hpa"),
        output:
            labels=path(ML_INPUTS.train_labels),
            sample=path(ML_INPUTS.sample_submission),
            hidden=path(ML_INPUTS.hidden_labels(1)),
            preview=path(ML_INPUTS.preview),
            stage2=(
                [
                    path(ML_INPUTS.stage2_labels),
                    path(ML_INPUTS.stage2_sample_submission),
                    path(ML_INPUTS.hidden_labels(2)),
                ]
                if SYNTH.get("n_stage2_test", 0)
                else []
            ),
        params:
            synthetic=SYNTH,
            classes=SYNTH.get("classes") or "all",
            root=folder_of("output", "labels", ROOT, ML_INPUTS.train_labels),
        log:
            path(LAYOUT.log("synthesize")),
        benchmark:
            path(LAYOUT.benchmark("synthesize"))
        threads: heavy_threads
        shell:
            "medpipe synth --task multilabel --out {params.root:q} --n-train {params.synthetic[n_train]} "
            "--n-test {params.synthetic[n_test]} --n-stage2-test {params.synthetic[n_stage2_test]} "
            "--size {params.synthetic[size]} --seed {params.synthetic[seed]} "
            "--classes {params.classes:q} --preview {output.preview:q} --workers {threads} > {log:q} 2>&1"

elif not ML_INPUTS.train_labels.exists():
    raise WorkflowError(
        f"data.root = {ROOT!r} "
        f"{'does not hold the HPA layout (no train.csv there)' if Path(ROOT).is_dir() else 'does not exist'}. "
        "Point data.root at your data (docs/multilabel.md), or set data.synthetic in the config."
    )


rule ingest_channels:
    """Decode every image's channel PNGs (or its DICOM film) once into the image table, the uint8
    C-channel cache, the K-hot targets and the quarantine list."""
    input:
        labels=path(ML_INPUTS.train_labels),
        sample=path(ML_INPUTS.sample_submission),
        code=code("medpipe.data.ingest_channels"),
    output:
        meta=path(LAYOUT.meta(1)),
        quarantine=path(LAYOUT.quarantine(1)),
        train=path(LAYOUT.cache(1, "train", "images", SIZE)),
        targets=path(target_file(DATA, "train")),
        test=path(LAYOUT.cache(1, "test", "images", SIZE)),
    params:
        root=folder_of("input", "labels", ROOT, ML_INPUTS.train_labels),
        out=folder_of("output", "meta", DATA, LAYOUT.meta(1)),
        size=SIZE,
        channels=ML_CHANNELS,
        classes=CFG.section("data").get("classes") or [],
        image_format=IMAGE_FORMAT,
        # the group column and films' PatientIDs are hashed with the salt (it reaches ingest as
        # $MEDPIPE_SALT): a new salt re-ingests
        salt_digest=SALT_DIGEST,
    log:
        path(LAYOUT.log("ingest")),
    benchmark:
        path(LAYOUT.benchmark("ingest"))
    threads: heavy_threads
    resources:
        mem_mb=NEEDS["ingest"].request_mb,
        runtime=NEEDS["ingest"].runtime_min,
    shell:
        "medpipe ingest-channels --root {params.root:q} --out {params.out:q} --size {params.size} "
        "--channels {params.channels:q} --classes {params.classes:q} "
        "--image-format {params.image_format:q} --workers {threads} --no-progress > {log:q} 2>&1"


rule make_folds:
    """Folds stratified on the label set (iterative stratification), grouped where groups exist."""
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
