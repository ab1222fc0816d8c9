"""The embedded demo data of the multi-label task: fields of cells in the Kaggle HPA layout.

``generate`` writes four 8-bit stains per image and the label CSVs exactly as the Human Protein
Atlas Image Classification release lays them out (DESIGN.md §3), so the multi-label pipeline runs
end to end without the real data. As in HPA, the reference stains show the cell (blue nuclei, red
microtubules, yellow endoplasmic reticulum) and the labels say where the green stain, the protein,
sits relative to them. Several classes put green in the same place of the cytoplasm and differ
only in which reference stain it follows (Cytosol: none, Endoplasmic reticulum: yellow,
Microtubules: red), so they can only be told apart with more than one channel.

Each image is a field of 3-15 cells, each with an irregular smooth body, a textured nucleus with
nucleoli, microtubules radiating from near the nucleus and a reticulate, perinuclear-dense ER.
An image carries 1-3 labels (70 % one, 25 % two, 5 % three); each label's pattern shows in most,
not all, of its cells, at a brightness that varies per cell and per image and is sometimes dim.
Cell counts, shapes and sizes, stain brightness, background, illumination, blur and
Poisson/Gaussian noise vary per image. Nothing is drawn to make a score easier.

Class shares follow HPA's ranks, frequent to rare (``RATES``); a subset of classes keeps their
relative shares and the label-count mix. Every random choice comes from ``seed`` (images from
``(seed, index)``), so output is identical for any number of workers.

Example:
    >>> summary = generate("data/hpa", n_train=400, n_test=100, seed=7)  # doctest: +SKIP
    >>> summary["class_rates"]["Nucleoplasm"]  # doctest: +SKIP
    0.41
"""

from __future__ import annotations

import functools
import itertools
import math
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from medpipe.io.atomic import atomic_path
from medpipe.layout.paths import HpaInputLayout
from medpipe.synthetic.folder import MARKER, check_demo_folder

__all__ = [
    "CHANNELS",
    "CLASSES",
    "RATES",
    "ImageSpec",
    "composite",
    "draw_preview",
    "generate",
    "plan",
    "render",
    "resolve_classes",
    "target_rates",
]

CHANNELS = ("red", "green", "blue", "yellow")
# (name, share of images that carry it): HPA's ranks, scaled to 1.35 labels per image. The order
# puts the classes only co-localisation tells apart first, so the first K classes keep them.
_DEFAULTS = (
    ("Nucleoplasm", 0.42),
    ("Cytosol", 0.27),
    ("Endoplasmic reticulum", 0.05),
    ("Microtubules", 0.04),
    ("Plasma membrane", 0.16),
    ("Nucleoli", 0.13),
    ("Mitochondria", 0.11),
    ("Golgi apparatus", 0.09),
    ("Nuclear membrane", 0.06),
    ("Aggresome", 0.02),
)
CLASSES = [name for name, _ in _DEFAULTS]
RATES = dict(_DEFAULTS)
LABEL_COUNTS = (1, 2, 3)
LABEL_COUNT_PROBS = (0.70, 0.25, 0.05)

TRAIN_DIR, TEST_DIR, STAGE2_DIR = "train", "test", "stage2_test"


def _label_files(out: Path) -> tuple[Path, ...]:
    """Every CSV the generator writes (last, so an interrupted run has none)."""
    layout = HpaInputLayout(out)
    return (
        layout.train_labels,
        layout.sample_submission,
        layout.stage2_labels,
        layout.stage2_sample_submission,
        layout.hidden_labels(1),
        layout.hidden_labels(2),
    )


_SPLIT_DIR = {"train": TRAIN_DIR, "test": TEST_DIR, "stage2_test": STAGE2_DIR}
# per stain: median peak grey level and its log-sd over images; the protein is sometimes dim
_EXPOSURE = {
    "red": (130.0, 0.3),
    "green": (100.0, 0.6),
    "blue": (150.0, 0.25),
    "yellow": (110.0, 0.3),
}


@dataclass(frozen=True)
class ImageSpec:
    """One image to draw: its id, split, labels and the seed its pixels come from."""

    index: int
    split: str  # train, test, stage2_test
    image_id: str
    labels: tuple[int, ...]  # class indices in the order drawn (HPA's Target is unordered too)
    patterns: tuple[str, ...]  # the class names of ``labels``: what the green stain shows
    seed: int


# ---------------------------------------------------------------- labels


def resolve_classes(classes: Sequence[str] | int | None = None) -> list[str]:
    """The class names of a draw: all defaults, the first K of them, or the named ones in order.

    Raises:
        ValueError: an unknown or repeated name, or a count outside 1..len(CLASSES).
    """
    if classes is None:
        return list(CLASSES)
    if isinstance(classes, int) and not isinstance(classes, bool):
        if not 1 <= classes <= len(CLASSES):
            raise ValueError(
                f"synth: classes={classes}: the HPA-like demo data draws 1 to {len(CLASSES)} classes"
            )
        return CLASSES[:classes]
    if isinstance(classes, str):
        raise ValueError(f"synth: classes must be a list of names or a count, got {classes!r}")
    names = list(classes)
    unknown = [n for n in names if n not in RATES]
    if unknown:
        raise ValueError(
            f"synth: unknown class {unknown[0]!r}: the HPA-like demo data draws "
            + ", ".join(CLASSES)
        )
    if not names or len(set(names)) != len(names):
        raise ValueError(f"synth: classes must name each class once, got {names}")
    return names


@functools.lru_cache(maxsize=32)
def _orders(n: int, k: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n), k)), dtype=np.intp).reshape(-1, k)


def _marginals(weights: np.ndarray, counts: Sequence[int], probs: Sequence[float]) -> np.ndarray:
    """Share of images that get each class when k classes are drawn without replacement."""
    total = np.zeros(len(weights))
    for k, pk in zip(counts, probs, strict=True):
        seqs = _orders(len(weights), int(k))
        w = weights[seqs]
        drawn_before = np.cumsum(w, axis=1) - w
        p = np.prod(w / (weights.sum() - drawn_before), axis=1)
        np.add.at(total, seqs.ravel(), np.repeat(p * pk, int(k)))
    return total


@functools.lru_cache(maxsize=16)
def _draw_weights(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class draw weights whose marginal shares hit the target rates, and the count mix."""
    counts = np.minimum(LABEL_COUNTS, len(names))
    mix: dict[int, float] = {}
    for k, p in zip(counts, LABEL_COUNT_PROBS, strict=True):
        mix[int(k)] = mix.get(int(k), 0.0) + p
    ks, ps = np.array(list(mix)), np.array(list(mix.values()))
    target = np.array([RATES[n] for n in names])
    target *= float(ks @ ps) / target.sum()  # a subset keeps the labels-per-image mix
    weights = target.copy()
    for _ in range(200):  # multiplicative fit: the marginals are monotone in each weight
        weights *= target / np.maximum(_marginals(weights, ks, ps), 1e-12)
        weights /= weights.sum()
    return weights, ks, ps


def target_rates(classes: Sequence[str] | int | None = None) -> dict[str, float]:
    """The expected share of images carrying each class (the marginals of the draw)."""
    names = tuple(resolve_classes(classes))
    weights, ks, ps = _draw_weights(names)
    return dict(zip(names, _marginals(weights, ks, ps).round(4).tolist(), strict=True))


def plan(
    n_train: int,
    n_test: int,
    n_stage2_test: int = 0,
    seed: int = 0,
    classes: Sequence[str] | int | None = None,
) -> list[ImageSpec]:
    """Decide every image's id, split and labels without drawing anything."""
    if min(n_train, n_test, n_stage2_test) < 0 or n_train == 0:
        raise ValueError(
            f"synth: need n_train > 0 and non-negative counts, got {n_train}, {n_test}, {n_stage2_test}"
        )
    names = tuple(resolve_classes(classes))
    weights, ks, ps = _draw_weights(names)
    rng = np.random.default_rng([seed, 0])
    specs: list[ImageSpec] = []
    taken: set[str] = set()
    splits = ["train"] * n_train + ["test"] * n_test + ["stage2_test"] * n_stage2_test
    for index, split in enumerate(splits):
        image_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        while image_id in taken:
            image_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        taken.add(image_id)
        k = int(rng.choice(ks, p=ps))
        labels = tuple(int(c) for c in rng.choice(len(names), size=k, replace=False, p=weights))
        specs.append(
            ImageSpec(
                index=index,
                split=split,
                image_id=image_id,
                labels=labels,
                patterns=tuple(names[c] for c in labels),
                seed=int(np.random.SeedSequence([seed, index]).generate_state(1)[0]),
            )
        )
    return specs


# ---------------------------------------------------------------- drawing helpers


def _blob(
    dy: np.ndarray, dx: np.ndarray, radius: float, angle: float, stretch: float, shape: np.ndarray
) -> np.ndarray:
    """Normalised radius of a smooth random blob: < 1 inside, 1 on the outline, linear on rays.

    The outline is ``radius * (1 + Re sum_k shape[k] z^(k+2))`` in a frame rotated by ``angle``
    and stretched by ``stretch`` (area kept), with ``z`` the unit direction: low harmonics only,
    so it is irregular but smooth, as cells and nuclei are.
    """
    c, s = math.cos(angle), math.sin(angle)
    root = math.sqrt(stretch)
    u = (c * dx + s * dy) / root
    v = (c * dy - s * dx) * root
    r = np.hypot(u, v) + 1e-6
    z = (u + 1j * v) / r
    zk = z * z
    outline = np.ones_like(r)
    for coeff in shape:
        outline += (coeff * zk).real
        zk = zk * z
    return r / (radius * outline)


def _shape(rng: np.random.Generator, roughness: float) -> np.ndarray:
    """Complex harmonic coefficients k = 2..6 of an outline; higher ones smaller."""
    k = np.arange(2, 7)
    amp = rng.normal(0.0, roughness, k.size) * (2.0 / k)
    return amp * np.exp(1j * rng.uniform(0, 2 * np.pi, k.size))


def _splat(size: int, ys: np.ndarray, xs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Bilinear deposit of weighted points onto a size x size image."""
    y0, x0 = np.floor(ys), np.floor(xs)
    fy, fx = ys - y0, xs - x0
    y0, x0 = y0.astype(np.intp), x0.astype(np.intp)
    flat = np.zeros(size * size)
    for oy, ox, w in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy, xx = y0 + oy, x0 + ox
        ok = (yy >= 0) & (yy < size) & (xx >= 0) & (xx < size)
        flat += np.bincount(yy[ok] * size + xx[ok], weights=(weights * w)[ok], minlength=size**2)
    return flat.reshape(size, size).astype(np.float32)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(image, sigma, truncate=3.0)


def _bandpass(rng: np.random.Generator, size: int, fine: float, coarse: float) -> np.ndarray:
    """Unit-variance band-pass noise: texture with grain between ``fine`` and ``coarse`` px."""
    white = rng.standard_normal((size, size), dtype=np.float32)
    band = _blur(white, fine) - _blur(white, coarse)
    return band / (band.std() + 1e-6)


def _smooth_field(rng: np.random.Generator, size: int, cells: int = 6) -> np.ndarray:
    """Slowly varying field around 0 (sd ~1): illumination and expression gradients."""
    knots = (np.arange(cells) + 0.5) * size / cells
    pixels = np.arange(size) + 0.5
    weights = np.exp(-0.5 * ((pixels[:, None] - knots[None, :]) / (0.6 * size / cells)) ** 2)
    weights /= weights.sum(axis=1, keepdims=True)
    field = weights @ rng.standard_normal((cells, cells)) @ weights.T
    return (field / (field.std() + 1e-6)).astype(np.float32)


# ---------------------------------------------------------------- the field of cells


@dataclass
class _Field:
    """Geometry of one image's cells, as per-pixel maps and per-cell arrays."""

    size: int
    unit: float  # pixels per pixel of a 256-pixel field: sizes scale with the image
    n: int
    owner: np.ndarray  # cell index per pixel, -1 outside every cell
    dn: np.ndarray  # distance outside the owner's nucleus along the ray from its centre (px)
    t: np.ndarray  # 0 at the nuclear edge, 1 at the cell edge (cytoplasm), 0 elsewhere
    nucleus: np.ndarray  # soft nuclear mask 0..1
    cytoplasm: np.ndarray  # soft cytoplasm mask 0..1
    nucleoli: np.ndarray  # nucleoli 0..1, inside nuclei
    nuc_y: np.ndarray
    nuc_x: np.ndarray
    nuc_r: np.ndarray  # nucleus radius (px) towards the centrosome
    radius: np.ndarray  # cell radius (px)
    mtoc: np.ndarray  # direction of the centrosome (Golgi, aggresome) from the nuclear centre
    visible: np.ndarray  # pixels per cell in the frame

    def per_pixel(self, values: np.ndarray) -> np.ndarray:
        """A per-cell value at every pixel of that cell (0 outside cells)."""
        return np.append(values, 0.0).astype(np.float32)[self.owner]


def _place_cells(rng: np.random.Generator, size: int, unit: float) -> list[tuple[float, ...]]:
    """Centres and radii of a field of cells: partly out of frame, touching, rarely overlapping."""
    mean_r = rng.uniform(20.0, 40.0) * unit
    confluence = rng.uniform(0.35, 0.95)
    want = int(np.clip(round(confluence * size**2 / (math.pi * mean_r**2)), 3, 15))
    cells: list[tuple[float, ...]] = []
    for _ in range(60 * want):
        if len(cells) == want:
            break
        r = mean_r * float(np.exp(rng.normal(0.0, 0.16)))
        y, x = rng.uniform(-0.06 * size, 1.06 * size, 2)
        if all((y - cy) ** 2 + (x - cx) ** 2 > (0.8 * (r + cr)) ** 2 for cy, cx, cr in cells):
            cells.append((float(y), float(x), r))
    return cells


def _draw_field(rng: np.random.Generator, size: int) -> _Field:
    unit = size / 256
    placed = _place_cells(rng, size, unit)
    n = len(placed)
    best = np.ones((size, size), np.float32)  # < 1 inside a cell; nuclei below 0 win overlaps
    owner = np.full((size, size), -1, np.int32)
    dn = np.full((size, size), np.inf, np.float32)
    dc = np.zeros((size, size), np.float32)
    nucleoli = np.zeros((size, size), np.float32)
    nuc_y, nuc_x, nuc_r, mtoc = (np.zeros(n) for _ in range(4))
    radius = np.array([r for _, _, r in placed])
    for i, (cy, cx, r) in enumerate(placed):
        angle, stretch = rng.uniform(0, np.pi), rng.uniform(1.0, 1.8)
        cell_shape = _shape(rng, 0.10)
        # nucleus: off-centre, along the cell's axis, a third to a half of its radius
        rn = r * rng.uniform(0.34, 0.48)
        along, across = rng.normal(0.0, 0.14 * r), rng.normal(0.0, 0.06 * r)
        ny = cy + along * math.sin(angle) + across * math.cos(angle)
        nx = cx + along * math.cos(angle) - across * math.sin(angle)
        n_angle, n_stretch = angle + rng.normal(0.0, 0.3), rng.uniform(1.0, 1.35)
        nuc_shape = _shape(rng, 0.045)
        # an outline never reaches beyond radius * (1 + sum |c_k|) * sqrt(stretch)
        reach = r * (1 + np.abs(cell_shape).sum()) * math.sqrt(stretch)
        nuc_reach = rn * (1 + np.abs(nuc_shape).sum()) * math.sqrt(n_stretch)
        half = int(math.ceil(max(reach, math.hypot(ny - cy, nx - cx) + nuc_reach))) + 2
        y0, y1 = max(0, int(cy) - half), min(size, int(cy) + half + 1)
        x0, x1 = max(0, int(cx) - half), min(size, int(cx) + half + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        rho_c = _blob(yy - cy, xx - cx, r, angle, stretch, cell_shape)
        rho_n = _blob(yy - ny, xx - nx, rn, n_angle, n_stretch, nuc_shape)
        eff = np.where(rho_n < 1.0, rho_n - 1.0, rho_c)
        win = best[y0:y1, x0:x1]
        take = eff < win
        win[take] = eff[take]
        owner[y0:y1, x0:x1][take] = i
        dist_n = np.hypot(yy - ny, xx - nx)
        dn[y0:y1, x0:x1][take] = (dist_n * (1.0 - 1.0 / rho_n))[take]
        dist_c = np.hypot(yy - cy, xx - cx)
        dc[y0:y1, x0:x1][take] = np.maximum(dist_c * (1.0 / rho_c - 1.0), 0.0)[take]
        # centrosome side: Golgi and aggresome sit there, microtubules start there
        mtoc[i] = rng.uniform(0, 2 * np.pi)
        probe = _blob(
            np.array([math.sin(mtoc[i])]),
            np.array([math.cos(mtoc[i])]),
            rn,
            n_angle,
            n_stretch,
            nuc_shape,
        )
        nuc_y[i], nuc_x[i], nuc_r[i] = ny, nx, 1.0 / float(probe[0])
        # nucleoli: 1-4 DAPI-dim, protein-dense spots in the inner nucleus
        for _ in range(int(rng.integers(1, 5))):
            a, d = rng.uniform(0, 2 * np.pi), rn * 0.5 * math.sqrt(rng.uniform())
            s = rn * rng.uniform(0.08, 0.16)
            qy, qx = ny + d * math.sin(a), nx + d * math.cos(a)
            spot = np.exp(-((yy - qy) ** 2 + (xx - qx) ** 2) / (2 * s * s))
            np.maximum(nucleoli[y0:y1, x0:x1], spot, out=nucleoli[y0:y1, x0:x1])
    inside = owner >= 0
    soft_edge = 0.7 * unit
    nucleus = np.where(inside, 1.0 / (1.0 + np.exp(np.clip(dn / soft_edge, -30, 30))), 0.0)
    nucleus = nucleus.astype(np.float32)
    cytoplasm = np.where(inside, 1.0 - nucleus, 0.0).astype(np.float32)
    dn = np.where(inside, dn, np.inf).astype(np.float32)
    out = np.where(inside & (dn > 0), dn, 0.0)
    t = np.where(out > 0, out / np.maximum(out + dc, 1e-3), 0.0).astype(np.float32)
    visible = np.bincount(owner[inside], minlength=n)
    return _Field(
        size=size,
        unit=unit,
        n=n,
        owner=owner,
        dn=dn,
        t=np.clip(t, 0.0, 1.0),
        nucleus=nucleus,
        cytoplasm=cytoplasm,
        nucleoli=(nucleoli * nucleus).astype(np.float32),
        nuc_y=nuc_y,
        nuc_x=nuc_x,
        nuc_r=nuc_r,
        radius=radius,
        mtoc=mtoc,
        visible=visible,
    )


@dataclass
class _Filaments:
    """Traced microtubules: points along each filament, which filament, and its cell."""

    ys: np.ndarray
    xs: np.ndarray
    fil: np.ndarray
    cell: np.ndarray
    weight: np.ndarray  # per point: dimmer over the nucleus (out of focus)
    cell_of: np.ndarray  # per filament
    step: float

    @property
    def count(self) -> int:
        return self.cell_of.size


def _trace_filaments(rng: np.random.Generator, f: _Field) -> _Filaments:
    """Thin curved filaments radiating from near the nucleus until the cell's edge."""
    starts_y, starts_x, heading, cell_of, length = [], [], [], [], []
    for i in range(f.n):
        if f.visible[i] == 0:
            continue
        k = int(f.radius[i] / f.unit * rng.uniform(1.5, 2.5))
        from_mtoc = rng.random(k) < 0.35
        ring = rng.uniform(0, 2 * np.pi, k)
        ring = np.where(from_mtoc, f.mtoc[i] + rng.normal(0, 0.5, k), ring)
        dist = f.nuc_r[i] * rng.uniform(0.95, 1.5, k)
        starts_y.append(f.nuc_y[i] + dist * np.sin(ring))
        starts_x.append(f.nuc_x[i] + dist * np.cos(ring))
        heading.append(ring + rng.normal(0.0, np.where(from_mtoc, 1.0, 0.6)))
        cell_of.append(np.full(k, i))
        length.append(f.radius[i] * rng.uniform(0.6, 2.5, k))
    if not cell_of:
        empty, none = np.zeros(0), np.zeros(0, np.intp)
        return _Filaments(empty, empty, none, none, empty, none, 1.0)
    y0, x0 = np.concatenate(starts_y), np.concatenate(starts_x)
    theta0, cells = np.concatenate(heading), np.concatenate(cell_of)
    lengths = np.concatenate(length)
    step = 0.8 * f.unit
    steps = int(math.ceil(lengths.max() / step))
    count = cells.size
    bend = 0.09 * rng.standard_normal((count, steps), dtype=np.float32)
    bend += rng.normal(0.0, 0.02, (count, 1)).astype(np.float32)
    theta = theta0[:, None].astype(np.float32) + np.cumsum(bend, axis=1)
    ys = y0[:, None] + step * np.cumsum(np.sin(theta), axis=1)
    xs = x0[:, None] + step * np.cumsum(np.cos(theta), axis=1)
    iy = np.clip(np.rint(ys).astype(np.intp), 0, f.size - 1)
    ix = np.clip(np.rint(xs).astype(np.intp), 0, f.size - 1)
    in_frame = (ys >= 0) & (ys <= f.size - 1) & (xs >= 0) & (xs <= f.size - 1)
    own = in_frame & (f.owner[iy, ix] == cells[:, None])
    alive = np.logical_and.accumulate(own, axis=1)  # a filament ends where its cell does
    alive &= (np.arange(1, steps + 1) * step)[None, :] <= lengths[:, None]
    fil = np.broadcast_to(np.arange(count)[:, None], ys.shape)[alive]
    over_nucleus = f.dn[iy, ix][alive] < 0
    return _Filaments(
        ys=ys[alive],
        xs=xs[alive],
        fil=fil,
        cell=cells[fil],
        weight=np.where(over_nucleus, 0.3, 1.0),
        cell_of=cells,
        step=step,
    )


def _filament_image(f: _Field, mt: _Filaments, per_filament: np.ndarray) -> np.ndarray:
    """Render filaments at unit peak brightness each; crossings near the centrosome add up."""
    sigma = 0.5 * f.unit
    lines = _splat(f.size, mt.ys, mt.xs, mt.weight * per_filament[mt.fil] * mt.step)
    lines = _blur(lines, sigma) * (math.sqrt(2 * math.pi) * sigma)
    return (1.6 * np.tanh(lines / 1.6)).astype(np.float32)


def _reticulum(rng: np.random.Generator, f: _Field) -> np.ndarray:
    """The ER: a reticulate network, densest around the nucleus, continuous with its envelope."""
    band = _bandpass(rng, f.size, 1.2 * f.unit, 4.0 * f.unit)
    net = np.exp(-((band / 0.5) ** 2))  # the zero contours of band-pass noise form a mesh
    reach = rng.uniform(0.4, 1.0)
    envelope = np.exp(-f.t / reach) * f.cytoplasm
    rim = np.exp(-0.5 * (f.dn / (1.2 * f.unit)) ** 2)
    return (envelope * (0.1 + 0.9 * net) + 0.2 * rim + 0.05 * f.nucleus).astype(np.float32)


def _vary(field: np.ndarray, amount: float) -> np.ndarray:
    """A positive factor around 1 that follows ``field`` by ``amount``."""
    return np.maximum(1.0 + amount * field, 0.2)


def _thickness(f: _Field) -> np.ndarray:
    """Cells are thick at the nucleus and thin at their edge: cytoplasmic signal follows."""
    return (f.cytoplasm * (1.0 - 0.6 * f.t)).astype(np.float32)


def _rim(distance: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-0.5 * (distance / width) ** 2).astype(np.float32)


def _membranes(f: _Field) -> np.ndarray:
    """Cell outlines: where the owning cell changes, including against the background."""
    own = f.owner
    edge = np.zeros(own.shape, bool)
    edge[:, 1:] |= own[:, 1:] != own[:, :-1]
    edge[:, :-1] |= own[:, :-1] != own[:, 1:]
    edge[1:, :] |= own[1:, :] != own[:-1, :]
    edge[:-1, :] |= own[:-1, :] != own[1:, :]
    return edge & (own >= 0)


def _cytoplasm_points(
    rng: np.random.Generator, f: _Field, cell: int, count: int, falloff: float
) -> tuple[np.ndarray, np.ndarray]:
    """Random points in one cell's cytoplasm, denser towards the nucleus."""
    r = f.radius[cell] * 1.6
    ys = f.nuc_y[cell] + rng.uniform(-r, r, 6 * count)
    xs = f.nuc_x[cell] + rng.uniform(-r, r, 6 * count)
    iy, ix = np.rint(ys).astype(np.intp), np.rint(xs).astype(np.intp)
    ok = (iy >= 0) & (iy < f.size) & (ix >= 0) & (ix < f.size)
    ys, xs, iy, ix = ys[ok], xs[ok], iy[ok], ix[ok]
    keep = (f.owner[iy, ix] == cell) & (f.dn[iy, ix] > 1.0 * f.unit)
    keep &= rng.random(ys.size) < np.exp(-f.t[iy, ix] / falloff)
    return ys[keep][:count], xs[keep][:count]


def _centrosome_spot(f: _Field, cell: int, gap: float) -> tuple[float, float]:
    a = f.mtoc[cell]
    d = f.nuc_r[cell] + gap
    return f.nuc_y[cell] + d * math.sin(a), f.nuc_x[cell] + d * math.cos(a)


# ---------------------------------------------------------------- protein patterns
# Each draws one class's green pattern, ~1 at its brightest, scaled per cell by ``expr``.

Pattern = Callable[[np.random.Generator, _Field, "_Stains", np.ndarray], np.ndarray]


@dataclass
class _Stains:
    """What the reference stains are drawn from, shared with the patterns that follow them."""

    filaments: _Filaments
    reticulum: np.ndarray
    fine: np.ndarray  # fine nuclear texture
    smooth: np.ndarray  # slow variation


def _nucleoplasm(rng, f, s, expr):
    speckle = 0.8 + 0.2 * np.clip(s.fine, -2, 2) / 2
    return f.per_pixel(expr) * f.nucleus * (1.0 - 0.85 * f.nucleoli) * speckle


def _nuclear_membrane(rng, f, s, expr):
    return 1.1 * f.per_pixel(expr) * _rim(f.dn, 0.9 * f.unit)


def _nucleoli(rng, f, s, expr):
    return 1.1 * f.per_pixel(expr) * f.nucleoli


def _cytosol(rng, f, s, expr):
    return 0.8 * f.per_pixel(expr) * _thickness(f) * _vary(s.smooth, 0.15) + 0.05 * f.nucleus


def _endoplasmic_reticulum(rng, f, s, expr):
    # mostly the calreticulin network itself; a share in ER domains the reference does not show
    own = np.exp(-((_bandpass(rng, f.size, 1.2 * f.unit, 4.0 * f.unit) / 0.5) ** 2))
    domains = own * f.cytoplasm * np.exp(-f.t / 0.6)
    return 0.9 * f.per_pixel(expr) * (0.75 * s.reticulum + 0.25 * domains)


def _microtubules(rng, f, s, expr):
    mt = s.filaments
    per_filament = expr[mt.cell_of] * rng.uniform(0.5, 1.3, mt.count)
    return 0.9 * _filament_image(f, mt, per_filament)


def _plasma_membrane(rng, f, s, expr):
    edges = _membranes(f) * f.per_pixel(expr) * rng.uniform(0.7, 1.0, f.owner.shape)
    sigma = 0.8 * f.unit
    return 1.6 * _blur(edges.astype(np.float32), sigma) * (math.sqrt(2 * math.pi) * sigma) / 2


def _mitochondria(rng, f, s, expr):
    ys, xs, ws = [], [], []
    for i in np.flatnonzero(expr > 0):
        count = int(rng.uniform(25, 60) * (f.radius[i] / (30 * f.unit)) ** 2)
        py, px = _cytoplasm_points(rng, f, i, count, falloff=0.6)
        a = rng.uniform(0, 2 * np.pi, py.size)
        half = rng.uniform(0.5, 2.5, py.size) * f.unit
        for frac in np.linspace(-1, 1, 5):  # a short rod or, when short, a punctum
            ys.append(py + frac * half * np.sin(a))
            xs.append(px + frac * half * np.cos(a))
            ws.append(np.full(py.size, expr[i]) * (0.4 * f.unit))
    if not ys:
        return np.zeros(f.owner.shape, np.float32)
    sigma = 0.7 * f.unit
    rods = _splat(f.size, np.concatenate(ys), np.concatenate(xs), np.concatenate(ws))
    return 0.8 * _blur(rods, sigma) * (math.sqrt(2 * math.pi) * sigma)


def _golgi_apparatus(rng, f, s, expr):
    ys, xs, ws = [], [], []
    for i in np.flatnonzero(expr > 0):
        k = int(rng.integers(8, 18))
        # stacks hug the nucleus on the centrosome side, in an arc
        a = f.mtoc[i] + rng.normal(0.0, 0.28, k)
        d = f.nuc_r[i] + rng.uniform(0.5, 4.0, k) * f.unit
        ys.append(f.nuc_y[i] + d * np.sin(a))
        xs.append(f.nuc_x[i] + d * np.cos(a))
        ws.append(expr[i] * rng.uniform(0.5, 1.0, k))
    if not ys:
        return np.zeros(f.owner.shape, np.float32)
    sigma = 1.3 * f.unit
    spots = _splat(f.size, np.concatenate(ys), np.concatenate(xs), np.concatenate(ws))
    return 1.4 * np.tanh(_blur(spots, sigma) * (2 * math.pi * sigma**2) / 2.5)


def _aggresome(rng, f, s, expr):
    ys, xs, ws = [], [], []
    for i in np.flatnonzero(expr > 0):
        y, x = _centrosome_spot(f, i, rng.uniform(1.0, 4.0) * f.unit)
        ys.append(y)
        xs.append(x)
        ws.append(expr[i])
    if not ys:
        return np.zeros(f.owner.shape, np.float32)
    sigma = rng.uniform(1.4, 2.4) * f.unit
    spots = _splat(f.size, np.array(ys), np.array(xs), np.array(ws))
    return 1.5 * _blur(spots, sigma) * (2 * math.pi * sigma**2)


_PATTERNS: dict[str, Pattern] = {
    "Nucleoplasm": _nucleoplasm,
    "Cytosol": _cytosol,
    "Endoplasmic reticulum": _endoplasmic_reticulum,
    "Microtubules": _microtubules,
    "Plasma membrane": _plasma_membrane,
    "Nucleoli": _nucleoli,
    "Mitochondria": _mitochondria,
    "Golgi apparatus": _golgi_apparatus,
    "Nuclear membrane": _nuclear_membrane,
    "Aggresome": _aggresome,
}


def _expression(rng: np.random.Generator, f: _Field) -> np.ndarray:
    """Per-cell level of one label's protein: most cells, varying, at least one visible cell."""
    share = rng.uniform(0.65, 1.0)
    expr = np.exp(rng.normal(0.0, 0.35, f.n)) * (rng.random(f.n) < share)
    expr[f.visible == 0] = 0.0
    if not expr.any():
        expr[int(np.argmax(f.visible))] = float(np.exp(rng.normal(0.0, 0.35)))
    return expr


# ---------------------------------------------------------------- the image


def render(spec: ImageSpec, size: int) -> dict[str, np.ndarray]:
    """Draw one image's four stains (uint8, size x size), keyed by channel name.

    Example:
        >>> spec = plan(n_train=1, n_test=0, seed=3)[0]
        >>> sorted(render(spec, 128))
        ['blue', 'green', 'red', 'yellow']
    """
    rng = np.random.default_rng(spec.seed)
    f = _draw_field(rng, size)
    mt = _trace_filaments(rng, f)
    stains = _Stains(
        filaments=mt,
        reticulum=_reticulum(rng, f),
        fine=_bandpass(rng, size, 0.7 * f.unit, 2.5 * f.unit),
        smooth=_smooth_field(rng, size),
    )
    cell_level = {c: np.exp(rng.normal(0.0, s, f.n)) for c, s in (("red", 0.2), ("yellow", 0.2))}
    dna = rng.uniform(0.75, 1.5, f.n)  # G1 to G2 nuclei
    chromatin = 0.72 + 0.28 * np.tanh(stains.fine)
    blue = f.per_pixel(dna) * f.nucleus * chromatin * (1.0 - 0.6 * f.nucleoli)
    blue += 0.15 * f.per_pixel(dna) * _rim(f.dn + 1.0 * f.unit, 1.2 * f.unit)  # peripheral DNA
    per_filament = np.exp(rng.normal(0.0, 0.25, mt.count))
    red = _filament_image(f, mt, per_filament) * f.per_pixel(cell_level["red"])
    red += (0.12 * _thickness(f) + 0.05 * f.nucleus) * f.per_pixel(
        cell_level["red"]
    )  # free tubulin
    yellow = stains.reticulum * f.per_pixel(cell_level["yellow"])

    green = np.zeros((size, size), np.float32)
    for name in spec.patterns:
        expr = _expression(rng, f)
        green += float(np.exp(rng.normal(0.0, 0.3))) * _PATTERNS[name](rng, f, stains, expr)
    # unspecific staining: a faint haze over every cell, as antibodies give
    haze = rng.uniform(0.02, 0.1)
    green += haze * (f.cytoplasm + 0.6 * f.nucleus) * _vary(stains.smooth, 0.3)

    sigma = rng.uniform(0.45, 1.3) * f.unit  # focus
    illumination = np.clip(1.0 + rng.uniform(0.0, 0.25) * _smooth_field(rng, size, 3), 0.5, 1.5)
    photons = rng.uniform(0.4, 2.5)  # photons per grey level: low means noisy
    out = {}
    for name, signal in (("red", red), ("green", green), ("blue", blue), ("yellow", yellow)):
        median, spread = _EXPOSURE[name]
        # exposure is set per image so the brightest structure does not saturate
        peak = min(median * float(np.exp(rng.normal(0.0, spread))), 245.0)
        light = _blur(signal, sigma) * illumination
        mean = rng.uniform(1.0, 14.0) + light * (peak / max(float(light.max()), 1e-6))
        # Poisson shot noise (its variance and photon quantisation) plus camera read noise
        shot = mean * photons
        shot += np.sqrt(shot) * rng.standard_normal(shot.shape, dtype=np.float32)
        value = np.rint(np.maximum(shot, 0.0)) / photons
        value += rng.uniform(0.5, 2.5) * rng.standard_normal(shot.shape, dtype=np.float32)
        out[name] = np.clip(np.rint(value), 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------- writing


def _write_image(spec: ImageSpec, out: Path, size: int) -> str:
    """Render and atomically write the four PNGs of one image; return its id."""
    folder = out / _SPLIT_DIR[spec.split]
    for channel, pixels in render(spec, size).items():
        with atomic_path(folder / f"{spec.image_id}_{channel}.png") as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG", compress_level=3)
    return spec.image_id


def _write_chunk(args: tuple[list[ImageSpec], str, int]) -> list[str]:
    specs, out, size = args
    return [_write_image(s, Path(out), size) for s in specs]


def _csv(path: Path, header: str, rows: list[tuple[str, str]]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join([header, *(f"{a},{b}" for a, b in rows)]) + "\n")


def _targets(specs: list[ImageSpec]) -> list[tuple[str, str]]:
    return [(s.image_id, " ".join(map(str, s.labels))) for s in specs]


def _prepare(out: Path, keep: set[str]) -> None:
    """Remove stale outputs of an earlier run (never files this module did not write)."""
    check_demo_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / MARKER) as tmp:
        tmp.write_text("written by medpipe synth; its files here may be replaced\n")
    for path in _label_files(out):  # first, so an interrupted rerun is visibly incomplete
        path.unlink(missing_ok=True)
    for folder in (TRAIN_DIR, TEST_DIR, STAGE2_DIR):
        if (out / folder).is_dir():
            for f in (out / folder).glob("*.png"):
                if f.name not in keep:
                    f.unlink()
    stage2 = out / STAGE2_DIR
    if stage2.is_dir() and not any(stage2.iterdir()):
        stage2.rmdir()


def generate(
    out: str | Path,
    *,
    n_train: int,
    n_test: int,
    n_stage2_test: int = 0,
    size: int = 256,
    seed: int = 0,
    classes: Sequence[str] | int | None = None,
    workers: int = 1,
    preview: str | Path | None = None,
) -> dict:
    """Write the synthetic HPA-like dataset to ``out`` and return a summary.

    Layout: ``train/<Id>_{red,green,blue,yellow}.png``, the same for ``test/``, ``train.csv``
    (``Id,Target``), ``sample_submission.csv`` (``Id,Predicted``, the test ids in the order a
    submission keeps, which is not sorted), test labels only in ``hidden/test_labels.csv``; with
    ``n_stage2_test > 0`` also ``stage2_test/``, ``stage2_train.csv`` (train + stage-1 test
    labels), ``stage2_sample_submission.csv`` and ``hidden/stage2_test_labels.csv``. The CSVs
    are written last, so an interrupted run has none.

    ``classes``: None for all of ``CLASSES``, an int K for the first K, or a list of names
    (index = position in the list).

    Example:
        >>> s = generate("/tmp/hpa", n_train=60, n_test=20, size=128, seed=1)  # doctest: +SKIP
        >>> s["n_train"], s["label_count_shares"]  # doctest: +SKIP
        (60, {'1': 0.7, '2': 0.25, '3': 0.05})
    """
    if size < 64:
        raise ValueError(f"synth: size must be at least 64 pixels, got {size}")
    out = Path(out)
    names = resolve_classes(classes)
    start = time.perf_counter()
    specs = plan(n_train, n_test, n_stage2_test, seed, names)
    _prepare(out, {f"{s.image_id}_{c}.png" for s in specs for c in CHANNELS})
    for folder in (TRAIN_DIR, TEST_DIR):  # present even when empty, like the release
        (out / folder).mkdir(exist_ok=True)
    if n_stage2_test:
        (out / STAGE2_DIR).mkdir(exist_ok=True)
    workers = max(1, int(workers))
    chunk = max(1, min(16, math.ceil(len(specs) / (4 * workers))))
    chunks = [(specs[i : i + chunk], str(out), size) for i in range(0, len(specs), chunk)]
    if workers == 1:
        for c in chunks:
            _write_chunk(c)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_chunk, chunks))
    by_split = {k: [s for s in specs if s.split == k] for k in _SPLIT_DIR}
    layout = HpaInputLayout(out)
    _csv(layout.hidden_labels(1), "Id,Target", _targets(by_split["test"]))
    if n_stage2_test:
        stage2 = by_split["stage2_test"]
        _csv(layout.hidden_labels(2), "Id,Target", _targets(stage2))
        _csv(layout.stage2_sample_submission, "Id,Predicted", [(s.image_id, "") for s in stage2])
        _csv(layout.stage2_labels, "Id,Target", _targets(by_split["train"] + by_split["test"]))
    _csv(layout.sample_submission, "Id,Predicted", [(s.image_id, "") for s in by_split["test"]])
    _csv(layout.train_labels, "Id,Target", _targets(by_split["train"]))
    seconds = time.perf_counter() - start
    if preview:
        draw_preview(out, preview, classes=names)
    return _summary(specs, names, size, seed, workers, seconds)


def _summary(
    specs: list[ImageSpec], names: list[str], size: int, seed: int, workers: int, seconds: float
) -> dict:
    train = [s for s in specs if s.split == "train"]
    hot = np.zeros((len(train), len(names)))
    for row, s in enumerate(train):
        hot[row, list(s.labels)] = 1
    counts = hot.sum(axis=1)
    return {
        "size": size,
        "seed": seed,
        "classes": names,
        "n_train": len(train),
        "n_test": sum(s.split == "test" for s in specs),
        "n_stage2_test": sum(s.split == "stage2_test" for s in specs),
        "class_rates": dict(zip(names, hot.mean(axis=0).round(4).tolist(), strict=True)),
        "target_rates": target_rates(names),
        "label_count_shares": {
            str(k): round(float(np.mean(counts == k)), 4) for k in sorted(set(LABEL_COUNTS))
        },
        "workers": workers,
        "seconds": round(seconds, 2),
        "images_per_second": round(len(specs) / max(seconds, 1e-9), 1),
    }


# ---------------------------------------------------------------- preview


def composite(channels: dict[str, np.ndarray]) -> np.ndarray:
    """RGB view of the four stains as HPA shows them: yellow added to red and green."""
    yellow = channels["yellow"].astype(np.float32) * 0.5
    rgb = np.stack(
        [
            channels["red"] + yellow,
            channels["green"].astype(np.float32) + yellow,
            channels["blue"].astype(np.float32),
        ],
        axis=-1,
    )
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_preview(
    root: str | Path,
    out_png: str | Path,
    *,
    classes: Sequence[str] | int | None = None,
    n: int = 12,
) -> Path:
    """Contact sheet of training images as RGB composites, each captioned with its labels.

    Images are picked so that every class shows at least once where ``n`` allows.

    Example:
        >>> draw_preview("data/hpa", "preview.png")  # doctest: +SKIP
    """
    root = Path(root)
    names = resolve_classes(classes)
    lines = (root / "train.csv").read_text().splitlines()[1:]
    rows = [(i, [int(c) for c in t.split()]) for i, t in (line.split(",", 1) for line in lines)]
    chosen, seen = [], set()
    for image_id, labels in rows:  # first, images that show a class not yet shown
        if len(chosen) < n and not set(labels) <= seen:
            chosen.append((image_id, labels))
            seen |= set(labels)
    chosen += [r for r in rows if r not in chosen][: n - len(chosen)]
    if not chosen:
        raise ValueError(f"draw_preview: {root / 'train.csv'} lists no training image")
    tile, caption = 256, 30
    cols = min(4, len(chosen))
    rows_n = math.ceil(len(chosen) / cols)
    sheet = Image.new("RGB", (cols * tile, rows_n * (tile + caption)), (255, 255, 255))
    draw, font = ImageDraw.Draw(sheet), _font(11)
    for k, (image_id, labels) in enumerate(chosen):
        channels = {}
        for c in CHANNELS:
            with Image.open(root / TRAIN_DIR / f"{image_id}_{c}.png") as img:
                channels[c] = np.asarray(img.convert("L"))
        thumb = Image.fromarray(composite(channels)).resize((tile, tile), Image.BILINEAR)
        x, y = (k % cols) * tile, (k // cols) * (tile + caption)
        sheet.paste(thumb, (x, y))
        text = ", ".join(names[c] if c < len(names) else str(c) for c in labels)
        wrapped = "\n".join(_wrap(text, 42))
        draw.multiline_text((x + 3, y + tile + 1), wrapped, fill=(0, 0, 0), font=font, spacing=1)
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        sheet.save(tmp, format="PNG")
    return out_png


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line][:2]
