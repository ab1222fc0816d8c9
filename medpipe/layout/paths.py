"""Where every file of a run lives: the one place that knows the run tree (and the SIIM input layout).

Modelled on nnU-Net v2's ``get_output_folder``: ask :class:`RunLayout` "where is fold 2 of this
model in stage 1" and it answers with a :class:`FoldDir`, which knows its fold number and the
names of what is in it. Nothing else in medpipe joins run-tree path parts, and no fold number is
ever parsed back from a folder name. ``stages/common.smk`` builds every rule path from here.

The words (docs/architecture.md): a *family* is ``segment`` or ``gate``; a *stage* is a competition
stage (1, or 2 once the stage-1 test labels are out); a *step* is one Snakemake rule's job.
Stage and fold arguments may be Snakemake wildcards (``"{stage}"``, ``"{fold}"``): every path
method formats them as given, so the same call yields a rule's output pattern.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FAMILIES",
    "TRAIN_RULE",
    "PREDICT_RULE",
    "SEGMENT",
    "GATE",
    "CLASSIFY",
    "config_section",
    "test_split",
    "FoldDir",
    "StageLayout",
    "RunLayout",
    "InputLayout",
    "cache_file",
    "data_files",
    "fusion_files",
    "booster_file",
    "class_booster_file",
]

SEGMENT, GATE, CLASSIFY = "segment", "gate", "classify"
FAMILIES = (SEGMENT, GATE, CLASSIFY)
# The config's section per family: `segmentation` is the contract's key (DESIGN.md), the only place
# the family is spelled that way; the multi-label classifier's is `classifier`.
_SECTION = {SEGMENT: "segmentation", GATE: GATE, CLASSIFY: "classifier"}

# Each family's Snakemake rules (their names are the CLI's contract: train-seg, train-gate, train-cls).
TRAIN_RULE = {SEGMENT: "train_seg", GATE: "train_gate", CLASSIFY: "train_cls"}
PREDICT_RULE = {SEGMENT: "predict_seg", GATE: "predict_gate", CLASSIFY: "predict_cls"}

Stage = int | str  # a stage number, or the "{stage}" wildcard
Fold = int | str


def config_section(family: str) -> str:
    """The config section of a family's model blocks (``segmentation``, ``gate``, ``classifier``)."""
    try:
        return _SECTION[family]
    except KeyError:
        raise ValueError(
            f"unknown task {family!r}: expected one of {', '.join(FAMILIES)}"
        ) from None


def test_split(stage: int) -> str:
    """The split a stage predicts: stage 1 its test set, stage 2 the new stage-2 test set."""
    return "test" if int(stage) == 1 else "stage2_test"


# The split name of pseudo-labelled training rows: their cache is the variant's own (FoldDir.pseudo_dir).
PSEUDO_SPLIT = "pseudo"


def cache_file(data_dir: str | Path, split: str, kind: str, size: int | str) -> Path:
    """One split's uint8 tensor cache: ``<split>_<kind>_<S>.npy`` (kind ``images`` or ``masks``)."""
    return Path(data_dir) / f"{split}_{kind}_{size}.npy"


def data_files(data_dir: str | Path) -> dict[str, Path]:
    """The tables of a data folder (what ingest and make_folds write): meta, folds, quarantine."""
    d = Path(data_dir)
    return {"meta": d / "meta.csv", "folds": d / "folds.csv", "quarantine": d / "quarantine.csv"}


def fusion_files(fusion_dir: str | Path) -> dict[str, Path]:
    """The files of a fusion folder: features, LightGBM's OOF and test p(finding), importance,
    the fitted embedding PCA (``pca``) and the boosters' index (``boosters``: feature columns,
    folds, best iterations; each fold's booster is :func:`booster_file`)."""
    d = Path(fusion_dir)
    return {
        "features": d / "features.csv",
        "oof": d / "oof.csv",
        "test": d / "test.csv",
        "importance": d / "feature_importance.csv",
        "importance_png": d / "feature_importance.png",
        "pca": d / "embedding_pca.npz",
        "boosters": d / "boosters.json",
    }


def booster_file(fusion_dir: str | Path, fold: int) -> Path:
    """One outer fold's LightGBM booster, in LightGBM's native text format."""
    return Path(fusion_dir) / f"booster_fold{int(fold)}.txt"


def class_booster_file(fusion_dir: str | Path, klass: int, fold: int) -> Path:
    """The multi-label fusion's booster of one class and outer fold (LightGBM's text format)."""
    return Path(fusion_dir) / f"booster_class{int(klass)}_fold{int(fold)}.txt"


@dataclass(frozen=True)
class FoldDir:
    """One trained fold of one model: where it is, which fold it is, and what is in it."""

    family: str
    model: str
    fold: int
    path: Path

    @property
    def checkpoint(self) -> Path:
        """The chosen weights (best epoch by the validation metric)."""
        return self.path / "model.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        """Written every epoch, for resuming a killed run."""
        return self.path / "last.ckpt"

    def snapshot(self, k: int) -> Path:
        """The weights at the end of cosine cycle ``k`` (``snapshots: K``), averaged at prediction."""
        return self.path / f"snapshot_{k}.ckpt"

    def snapshots(self) -> list[Path]:
        """The snapshot checkpoints present, in cycle order."""
        found = {
            int(p.stem.rpartition("_")[2]): p
            for p in self.path.glob("snapshot_*.ckpt")
            if p.stem.rpartition("_")[2].isdigit()
        }
        return [found[k] for k in sorted(found)]

    @property
    def prediction_record(self) -> Path:
        """How this fold's predictions were computed (torch threads, device, precision,
        deterministic flags): what must match to get their bytes again."""
        return self.path / "predict.json"

    @property
    def trained_config(self) -> Path:
        """The whole (salt-redacted) config these weights were trained with: a run's record, which
        export reads instead of today's config (a later dry run or overlay cannot rewrite it)."""
        return self.path / "config.yaml"

    @property
    def resume_stamp(self) -> Path:
        """The data fingerprint ``last.ckpt`` belongs to (a resume on other data is refused)."""
        return self.path / "resume.json"

    @property
    def mlruns(self) -> Path:
        """MLflow's local store, when ``tracking: mlflow``."""
        return self.path / "mlruns"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def log_csv(self) -> Path:
        """One row per epoch: the learning curve."""
        return self.path / "log.csv"

    @property
    def progress_png(self) -> Path:
        return self.path / "progress.png"

    def predictions(self, which: str) -> Path:
        """``which`` = ``oof`` or ``test``: npz maps for segmentation, a csv table for the gate
        and the classifier."""
        if which not in ("oof", "test"):
            raise ValueError(f"predictions: which must be 'oof' or 'test', not {which!r}")
        return self.path / f"{which}.{'npz' if self.family == SEGMENT else 'csv'}"

    @property
    def oof(self) -> Path:
        return self.predictions("oof")

    @property
    def test(self) -> Path:
        return self.predictions("test")

    @property
    def pseudo_dir(self) -> Path:
        """A ``@pl<k>`` variant's pseudo-labelled images: a small cache of its own."""
        return self.path / "pseudo"

    def pseudo_cache(self, kind: str, size: int) -> Path:
        """``kind`` = ``images`` or ``masks``: uint8 ``(N, size, size)``, rows of ``pseudo_rows``."""
        return cache_file(self.pseudo_dir, PSEUDO_SPLIT, kind, int(size))

    @property
    def pseudo_rows(self) -> Path:
        """One row per pseudo-labelled image: id, whether it is a pseudo finding, confidence."""
        return self.pseudo_dir / "rows.csv"

    @property
    def pseudo_provenance(self) -> Path:
        """Which model and fold made the labels, from which files: the guards check it."""
        return self.pseudo_dir / "provenance.json"


class StageLayout:
    """One competition stage: its number and its folder (its models' fold folders, its decisions).

    The number is data, never parsed back from the folder name: a command gets it as
    ``--stage N`` and asks :meth:`RunLayout.stage` for this object once.
    """

    def __init__(self, stage_dir: str | Path, number: int | None = None):
        self.dir = Path(stage_dir)
        self.number = None if number is None else int(number)

    def __repr__(self) -> str:
        return f"StageLayout({str(self.dir)!r}, number={self.number})"

    @property
    def is_second(self) -> bool:
        """Stage 2: the released labels, retrained or kept models, the stage-2 test set."""
        if self.number is None:
            raise ValueError(f"{self.dir}: the stage's number is not known (give --stage)")
        return self.number == 2

    def model_dir(self, family: str, model: str) -> Path:
        config_section(family)  # refuses an unknown family
        return self.dir / family / model

    def fold_dir(self, family: str, model: str, fold: Fold) -> Path:
        return self.model_dir(family, model) / f"fold{fold}"

    def fold(self, family: str, model: str, fold: int) -> FoldDir:
        return FoldDir(family, model, int(fold), self.fold_dir(family, model, int(fold)))

    def folds_of(self, family: str, model: str, folds: list[int]) -> list[FoldDir]:
        return [self.fold(family, model, f) for f in folds]

    # -- ensemble.external: a teammate's predictions, imported into medpipe's fold layout
    def external_dir(self, name: str) -> Path:
        """An external source's imported folds (rule import_external): a folder of its own, so
        a source never collides with a trained model's rules."""
        return self.dir / "external" / name

    def external_fold_dir(self, name: str, fold: Fold) -> Path:
        return self.external_dir(name) / f"fold{fold}"

    def external_folds(self, name: str, family: str, folds: list[int]) -> list[FoldDir]:
        """A source's imported folds, read like a trained model's: family ``segment`` for maps
        (``oof.npz``, ``test.npz``), ``gate`` for p(finding) (``oof.csv``, ``test.csv``)."""
        config_section(family)  # refuses an unknown family
        return [FoldDir(family, name, int(f), self.external_fold_dir(name, int(f))) for f in folds]

    def external_pattern(self, name: str, fold: Fold, which: str) -> Path:
        """Rule import_external's output pattern of one fold's ``oof`` or ``test`` file:
        ``{ext}`` is the wildcard of its extension, the one :meth:`FoldDir.predictions` gives
        the source's family (``npz`` for maps, ``csv`` for p(finding))."""
        if which not in ("oof", "test"):
            raise ValueError(f"external_pattern: which must be 'oof' or 'test', not {which!r}")
        return self.external_fold_dir(name, fold) / f"{which}.{{ext}}"

    @staticmethod
    def external_source(family: str, path: str | Path) -> FoldDir:
        """A source folder as a teammate hands it over (docs/ensemble.md): shaped like one fold
        folder, so ``predictions("oof")`` is its ``oof.npz`` (maps) or ``oof.csv`` (p(finding));
        its fold is -1: it holds every fold."""
        config_section(family)
        return FoldDir(family, Path(path).name, -1, Path(path))

    @property
    def fusion_dir(self) -> Path:
        return self.dir / "fusion"

    @property
    def features(self) -> Path:
        return fusion_files(self.fusion_dir)["features"]

    def fused(self, which: str) -> Path:
        """LightGBM's ``oof`` or ``test`` table: ``image_id, p_finding`` (SIIM, rule fuse) or
        ``image_id, p_0 … p_{K-1}`` (multi-label, rule fuse_cls)."""
        if which not in ("oof", "test"):
            raise ValueError(f"fused: which must be 'oof' or 'test', not {which!r}")
        return fusion_files(self.fusion_dir)[which]

    @property
    def feature_importance(self) -> Path:
        return fusion_files(self.fusion_dir)["importance"]

    @property
    def thresholds(self) -> Path:
        """The decision: rule, triplet, ensemble weights (read it with ``layout.read_decision``)."""
        return self.dir / "thresholds.json"

    @property
    def heatmap(self) -> Path:
        return self.dir / "thresholds.png"

    @property
    def cv(self) -> Path:
        return self.dir / "cv.json"

    @property
    def retrain_choice(self) -> Path:
        """Stage 2, ``retrain: auto``: each such model's two CVs and the variant kept."""
        return self.dir / "retrain_choice.json"

    @property
    def submission(self) -> Path:
        return self.dir / "submission.csv"


class RunLayout:
    """Every path below ``run_dir`` (DESIGN.md, "Outputs below run_dir").

    Example:
        >>> run = RunLayout("runs/default")
        >>> run.fold(1, "segment", "unet_regnetx", 2).oof.as_posix()
        'runs/default/stage1/segment/unet_regnetx/fold2/oof.npz'
        >>> run.fold_dir("{stage}", "gate", "{model}", "{fold}").as_posix()
        'runs/default/stage{stage}/gate/{model}/fold{fold}'
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def __repr__(self) -> str:
        return f"RunLayout({str(self.run_dir)!r})"

    # -- data: ingest's and make_folds' outputs; stage 2 has its own folder
    def data_dir(self, stage: Stage = 1) -> Path:
        """Stage 1 reads run_dir/data; stage 2 adds the released labels and its own test set."""
        return self.run_dir / "data" if int(stage) == 1 else self.stage_dir(2) / "data"

    def meta(self, stage: Stage = 1) -> Path:
        return data_files(self.data_dir(stage))["meta"]

    def folds(self, stage: Stage = 1) -> Path:
        return data_files(self.data_dir(stage))["folds"]

    def quarantine(self, stage: Stage = 1) -> Path:
        return data_files(self.data_dir(stage))["quarantine"]

    def cache(self, stage: Stage, split: str, kind: str, size: int | str) -> Path:
        return cache_file(self.data_dir(stage), split, kind, size)

    # -- one competition stage (its folder: StageLayout)
    def stage_dir(self, stage: Stage) -> Path:
        return self.run_dir / f"stage{stage}"

    def stage(self, stage: Stage) -> StageLayout:
        number = int(stage) if str(stage).isdigit() else None  # a "{stage}" wildcard has none
        return StageLayout(self.stage_dir(stage), number)

    def model_dir(self, stage: Stage, family: str, model: str) -> Path:
        return self.stage(stage).model_dir(family, model)

    def fold_dir(self, stage: Stage, family: str, model: str, fold: Fold) -> Path:
        return self.stage(stage).fold_dir(family, model, fold)

    def fold(self, stage: Stage, family: str, model: str, fold: int) -> FoldDir:
        return self.stage(stage).fold(family, model, fold)

    def folds_of(self, stage: Stage, family: str, model: str, folds: list[int]) -> list[FoldDir]:
        return self.stage(stage).folds_of(family, model, folds)

    def trained_fold(
        self, stage: int, family: str, model: str, fold: int, retrained: bool
    ) -> FoldDir:
        """Where a fold's weights are: stage 2 reuses stage 1's unless the model is retrained."""
        own = int(stage) == 1 or retrained
        return self.fold(int(stage) if own else 1, family, model, fold)

    def external_dir(self, stage: Stage, name: str) -> Path:
        return self.stage(stage).external_dir(name)

    def external_folds(
        self, stage: Stage, name: str, family: str, folds: list[int]
    ) -> list[FoldDir]:
        return self.stage(stage).external_folds(name, family, folds)

    def fusion_dir(self, stage: Stage) -> Path:
        return self.stage(stage).fusion_dir

    def features(self, stage: Stage) -> Path:
        return self.stage(stage).features

    def fused(self, stage: Stage, which: str) -> Path:
        return self.stage(stage).fused(which)

    def feature_importance(self, stage: Stage) -> Path:
        return self.stage(stage).feature_importance

    def thresholds(self, stage: Stage) -> Path:
        return self.stage(stage).thresholds

    def heatmap(self, stage: Stage) -> Path:
        return self.stage(stage).heatmap

    def cv(self, stage: Stage) -> Path:
        return self.stage(stage).cv

    def stage_submission(self, stage: Stage) -> Path:
        return self.stage(stage).submission

    # -- the run as a whole
    @property
    def submission(self) -> Path:
        """The current stage's submission (the ``submission`` target)."""
        return self.run_dir / "submission.csv"

    @property
    def resolved_config(self) -> Path:
        """The merged config every command reads."""
        return self.run_dir / "config.resolved.yaml"

    @property
    def reports_dir(self) -> Path:
        return self.run_dir / "reports"

    @property
    def report_html(self) -> Path:
        return self.reports_dir / "report.html"

    @property
    def plots_dir(self) -> Path:
        return self.reports_dir / "plots"

    def nifti_dir(self, which: str) -> Path:
        """``medpipe export-masks``' NIfTI masks and probabilities of ``oof`` or ``test``."""
        return self.reports_dir / f"nifti_{which}"

    def reproduce(self, what: str = "doc") -> Path:
        """Stage 2's reproducibility files: ``doc`` (REPRODUCE.md), ``lock``, ``manifest``."""
        names = {"doc": "REPRODUCE.md", "lock": "requirements.lock", "manifest": "reproduce.json"}
        return self.stage_dir(2) / names[what]

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def benchmarks_dir(self) -> Path:
        """One Snakemake ``benchmark:`` file per job (REPRODUCE.md sums their wall times)."""
        return self.run_dir / "benchmarks"

    def log(self, step: str, name: str | None = None, stage: Stage | None = None) -> Path:
        """One job's log: ``logs/[stage<k>/]<step>[/<name>].log``."""
        return self._per_job("logs", step, name, stage, ".log")

    def benchmark(self, step: str, name: str | None = None, stage: Stage | None = None) -> Path:
        """One job's timing (Snakemake ``benchmark:``), beside its log's name."""
        return self._per_job("benchmarks", step, name, stage, ".tsv")

    def _per_job(
        self, kind: str, step: str, name: str | None, stage: Stage | None, ext: str
    ) -> Path:
        base = self.run_dir / kind
        if stage is not None:
            base = base / f"stage{stage}"
        return base / step / f"{name}{ext}" if name else base / f"{step}{ext}"

    @staticmethod
    def fold_job(model: str, fold: Fold) -> str:
        """A per-fold job's name in its log and benchmark file names: ``<model>_fold<i>``."""
        return f"{model}_fold{fold}"


class InputLayout:
    """The SIIM-ACR input layout below ``data.root`` (DESIGN.md, "Input data")."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def train_labels(self) -> Path:
        return self.root / "train-rle.csv"

    @property
    def stage2_labels(self) -> Path:
        """Stage 2's labels: train + the stage-1 test set, released between the stages."""
        return self.root / "stage_2_train.csv"

    def dicom_dir(self, split: str) -> Path:
        names = {
            "train": "dicom-images-train",
            "test": "dicom-images-test",
            "stage2_test": "stage_2_images",
        }
        return self.root / names[split]

    def test_dicom_dir(self, stage: int) -> Path:
        return self.dicom_dir(test_split(stage))

    def hidden_labels(self, stage: int) -> Path:
        """The synthetic set's answers for a stage's test set; no pipeline rule reads them."""
        name = "test-rle.csv" if int(stage) == 1 else "stage2-test-rle.csv"
        return self.root / "hidden" / name

    @property
    def preview(self) -> Path:
        return self.root / "preview.png"


# ---------------------------------------------------------------- the multi-label family's input

__all__ += ["target_file", "HpaInputLayout"]


def target_file(data_dir: str | Path, split: str) -> Path:
    """A labelled split's K-hot targets: ``<split>_targets.npy``, uint8 ``(N, K)``, row ``i``
    the image with ``cache_index == i`` (ingest of channel images writes it)."""
    return Path(data_dir) / f"{split}_targets.npy"


class HpaInputLayout:
    """The Human Protein Atlas input layout below ``data.root`` (DESIGN.md, "Input data: the
    multi-label layout"): ``<split>/<Id>_<channel>.png``, ``train.csv``, ``sample_submission.csv``."""

    # What a folder to predict holds, as messages and help texts spell it.
    TEST_FOLDER = "test/<Id>_<channel>.png and sample_submission.csv"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def train_labels(self) -> Path:
        return self.root / "train.csv"

    @property
    def sample_submission(self) -> Path:
        """The test Ids, in the order the submission keeps."""
        return self.root / "sample_submission.csv"

    def image_dir(self, split: str) -> Path:
        """The flat folder of a split's channel PNGs: ``train/``, ``test/`` or ``stage2_test/``."""
        return self.root / split

    @property
    def stage2_labels(self) -> Path:
        """Stage 2's released labels: train plus the stage-1 test set, ``Id,Target``."""
        return self.root / "stage2_train.csv"

    @property
    def stage2_sample_submission(self) -> Path:
        """The stage-2 test Ids, in the order the stage-2 submission keeps."""
        return self.root / "stage2_sample_submission.csv"

    def hidden_labels(self, stage: int) -> Path:
        """The demo set's answers for a stage's test set; no pipeline rule reads them."""
        name = "test_labels.csv" if int(stage) == 1 else "stage2_test_labels.csv"
        return self.root / "hidden" / name

    @property
    def preview(self) -> Path:
        return self.root / "preview.png"
