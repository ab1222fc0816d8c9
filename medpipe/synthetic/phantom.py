"""A procedural chest radiograph with pneumothorax regions: anatomy, findings and the render.

Drawing happens at a working resolution ``R = min(size, 512)`` with numpy fields and PIL lines
(smooth background fields at ``R/2``), then the film is upsampled to the DICOM size, where fine
quantum noise and the display curve are applied, so a 1024² film costs a few tens of ms.
Coordinates are normalised: ``x`` in [0, 1] left to right as displayed, ``y`` in [0, 1] top to
bottom. Lung ``side`` 0 is the image-left lung (the patient's right, by radiographic
convention), side 1 the image-right lung, which the heart overlaps.

A pneumothorax is drawn the way it looks on a film: a crescent along the lateral or apical chest
wall where the lung has pulled away, so it has no vessel or parenchymal texture and is darker
(more air), bounded on the lung side by the thin bright visceral pleural line. The crescent is a
sublevel set of ``depth / profile(angle)``, whose threshold is solved for the requested area, so
the mask is exactly the drawn region.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> anatomy = sample_anatomy(rng)
    >>> regions = place_regions(rng, [0.01], side=0, angle=60.0, anatomy=anatomy)
    >>> film = sample_film(rng, anatomy, view="PA", female=False, regions=regions, seed=1)
    >>> image, mask = render(film, 256)
    >>> image.shape, image.dtype, bool(mask.any())
    ((256, 256), dtype('uint8'), True)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

__all__ = ["Region", "Anatomy", "Film", "sample_anatomy", "place_regions", "sample_film", "render"]

# Sector angles: degrees from the apex (0) towards the lateral wall (90, the costophrenic angle).
ANGLE_MIN, ANGLE_MAX = -25.0, 85.0
MAX_RENDER = 512
MAX_DEPTH = 0.8  # a collapse never reaches deeper than this fraction of the lung's half-width
_OUTSIDE = -1.0e3  # field value far outside a shape


@dataclass(frozen=True)
class Region:
    """One pneumothorax region: which lung, where along its border, and its target area.

    ``angle`` is the sector centre in degrees from the apex towards the lateral wall,
    ``half_width`` the sector's half-width in degrees, ``area`` a fraction of the whole image.
    """

    side: int
    angle: float
    half_width: float
    area: float


@dataclass(frozen=True)
class Anatomy:
    """A patient's habitus; films of the same patient share it (up to positioning)."""

    body_w: float  # half-width of the chest wall
    neck_w: float
    apex_y: float
    lung_dx: tuple[float, float]  # lung centre distance from the midline
    lung_a: tuple[float, float]  # lateral half-width
    dome_y: tuple[float, float]  # hemidiaphragm height at the lung centre
    dome_h: float
    squareness: float  # superellipse exponent of the lung outline
    heart_w: float
    heart_h: float
    heart_dx: float
    heart_tilt: float  # degrees
    aortic_knob: float
    rib_step: float
    vessel_seed: int


@dataclass(frozen=True)
class Film:
    """Everything needed to draw one radiograph: anatomy after positioning, exposure, findings."""

    anatomy: Anatomy
    seed: int
    view: str
    female: bool
    shift: tuple[float, float]
    scale: float
    rotation: float  # degrees
    inspiration: float  # >1 deeper breath: taller lungs, lower diaphragm
    lung_level: float
    soft_level: float
    gamma: float
    out_lo: float
    out_hi: float
    noise: float  # grey levels (0-255) at the DICOM size
    vessel_amp: float
    mottle_amp: float
    rib_amp: float
    regions: tuple[Region, ...] = ()
    ptx_delta: float = 0.0  # how much darker the no-texture region is
    line_amp: float = 0.0  # brightness of the visceral pleural line
    chest_tube: int = -1  # side of a chest drain, -1 for none
    devices: bool = False  # ECG leads and a central line (mostly portable AP films)
    marker: str = ""
    collimation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    gastric_bubble: bool = False


# ---------------------------------------------------------------- sampling


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw a patient's habitus; spreads are chosen so films differ visibly between patients."""
    size = float(rng.normal(1.0, 0.05))
    la = 0.165 * size * float(rng.normal(1.0, 0.05))
    apex = float(rng.uniform(0.08, 0.13))
    dome = apex + 0.56 * size * float(rng.normal(1.0, 0.04))
    heart_w = float(rng.uniform(0.145, 0.19))
    return Anatomy(
        body_w=float(np.clip(rng.normal(0.47, 0.03), 0.4, 0.56)),
        neck_w=float(rng.uniform(0.07, 0.1)),
        apex_y=apex,
        lung_dx=(la + float(rng.uniform(0.05, 0.075)), la + float(rng.uniform(0.055, 0.08))),
        lung_a=(la, la * float(rng.uniform(0.92, 1.0))),
        dome_y=(dome, dome + float(rng.uniform(0.005, 0.035))),
        dome_h=float(rng.uniform(0.035, 0.06)),
        squareness=float(rng.uniform(2.1, 2.7)),
        heart_w=heart_w,
        heart_h=heart_w * float(rng.uniform(0.7, 0.82)),
        heart_dx=float(rng.uniform(0.04, 0.07)),
        heart_tilt=float(rng.uniform(10.0, 30.0)),
        aortic_knob=float(rng.uniform(0.0, 0.03)),
        rib_step=(dome - apex) * float(rng.uniform(0.1, 0.112)),
        vessel_seed=int(rng.integers(2**31)),
    )


def place_regions(
    rng: np.random.Generator, areas: Sequence[float], side: int, angle: float, anatomy: Anatomy
) -> tuple[Region, ...]:
    """Put one region per area along the lung borders, separated so they stay distinct.

    The first region goes at ``angle`` on ``side``; later ones take a free arc on the same lung
    when there is room, else the other lung (bilateral or loculated pneumothorax).
    """
    placed: list[Region] = []
    order = [side, 1 - side]
    for i, area in enumerate(areas):
        if i == 0:
            half = _half_width(area, angle, anatomy, side)
            centre = float(np.clip(angle, ANGLE_MIN + half * 0.3, ANGLE_MAX - half * 0.3))
            half = _half_width(area, centre, anatomy, side)
            placed.append(Region(side, centre, half, float(area)))
            continue
        sides = order if rng.random() < 0.5 else order[::-1]
        for shrink in (1.0, 0.5, 0.25):
            spot = None
            for s in sides:
                spot = _free_arc(rng, [r for r in placed if r.side == s], area, anatomy, s, shrink)
                if spot is not None:
                    placed.append(Region(s, spot[0], spot[1], float(area)))
                    break
            if spot is not None:
                break
    return tuple(placed)


def _arc_speed(angle: np.ndarray | float, anatomy: Anatomy, side: int) -> np.ndarray | float:
    """Image units of lung outline per radian of sector angle around ``angle``."""
    la, b = anatomy.lung_a[side], anatomy.dome_y[side] - 0.01 - anatomy.apex_y
    rad = np.radians(angle)
    return np.sqrt((la * np.cos(rad)) ** 2 + (b * np.sin(rad)) ** 2)


def _half_width(
    area: float, angle: np.ndarray | float, anatomy: Anatomy, side: int, shrink: float = 1.0
):
    """Sector half-width in degrees: a crescent about five times longer than it is thick."""
    half_length = 0.5 * math.sqrt(10.0 * area) * shrink
    return np.clip(np.degrees(half_length / _arc_speed(angle, anatomy, side)), 4.0, 70.0)


def _free_arc(
    rng: np.random.Generator,
    taken: list[Region],
    area: float,
    anatomy: Anatomy,
    side: int,
    shrink: float,
    gap: float = 0.05,
) -> tuple[float, float] | None:
    """A random (centre, half-width) whose arc clears the taken ones by ``gap`` image units."""
    centres = np.linspace(ANGLE_MIN, ANGLE_MAX, 61)
    half = _half_width(area, centres, anatomy, side, shrink)
    gap_deg = np.degrees(gap / _arc_speed(centres, anatomy, side))
    ok = (centres >= ANGLE_MIN + 0.3 * half) & (centres <= ANGLE_MAX - 0.3 * half)
    for r in taken:
        ok &= np.abs(centres - r.angle) >= r.half_width + half + gap_deg
    if not ok.any():
        return None
    k = int(rng.choice(np.flatnonzero(ok)))
    return float(centres[k]), float(half[k])


def sample_film(
    rng: np.random.Generator,
    anatomy: Anatomy,
    view: str,
    female: bool,
    regions: Sequence[Region] = (),
    seed: int = 0,
    chest_tube: int = -1,
) -> Film:
    """Positioning, exposure and finding conspicuity of one film of ``anatomy``.

    Portable AP films are noisier, magnify the heart, sit at shallower inspiration and usually
    carry monitoring devices; a quarter of findings are subtle (faint line, little darkening).
    """
    ap = view == "AP"
    a = anatomy
    if ap:  # the AP projection magnifies the heart and widens the mediastinum
        a = dataclasses.replace(a, heart_w=a.heart_w * 1.12, heart_h=a.heart_h * 1.06)
    subtle = rng.random() < 0.25
    edges = rng.uniform(0.0, 0.05, 4) * (rng.random(4) < 0.5)
    collim = tuple(float(v) for v in edges) if rng.random() < 0.25 else (0.0, 0.0, 0.0, 0.0)
    return Film(
        anatomy=a,
        seed=int(seed),
        view=view,
        female=bool(female),
        shift=(float(rng.normal(0, 0.02)), float(rng.normal(0.0, 0.02) + (0.02 if ap else 0.0))),
        scale=float(rng.normal(0.97 if ap else 1.0, 0.035)),
        rotation=float(rng.normal(0, 2.0)),
        inspiration=float(rng.normal(0.93 if ap else 1.0, 0.03)),
        lung_level=float(rng.uniform(0.12, 0.22)),
        soft_level=float(rng.uniform(0.42, 0.55)),
        gamma=float(rng.uniform(0.8, 1.2)),
        out_lo=float(rng.uniform(0.0, 0.06)),
        out_hi=float(rng.uniform(0.9, 1.0)),
        noise=float(rng.uniform(3.0, 6.0) if ap else rng.uniform(2.0, 4.0)),
        vessel_amp=float(rng.uniform(0.06, 0.1)),
        mottle_amp=float(rng.uniform(0.015, 0.025)),
        rib_amp=float(rng.uniform(0.1, 0.15)),
        regions=tuple(regions),
        ptx_delta=float(rng.uniform(0.045, 0.09) if subtle else rng.uniform(0.09, 0.18)),
        line_amp=float(rng.uniform(0.05, 0.09) if subtle else rng.uniform(0.09, 0.18)),
        chest_tube=int(chest_tube),
        devices=bool(rng.random() < (0.6 if ap else 0.05)),
        marker=str(rng.choice(["", "R", "L"], p=[0.3, 0.35, 0.35])),
        collimation=collim,  # type: ignore[arg-type]
        gastric_bubble=bool(rng.random() < 0.6),
    )


# ---------------------------------------------------------------- geometry helpers


@functools.lru_cache(maxsize=8)
def _base_grid(r: int) -> np.ndarray:
    return ((np.arange(r, dtype=np.float32) + 0.5) / r).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


@functools.lru_cache(maxsize=2)
def _noise_tile(size: int) -> np.ndarray:
    """A fixed Gaussian tile a little larger than the film; each film takes a random window."""
    return np.random.default_rng(20190627).standard_normal((size + 64, size + 64), dtype=np.float32)


class _Pose:
    """Maps anatomy coordinates to image pixels (and back) for one film's positioning."""

    def __init__(self, film: Film, r: int):
        self.r = r
        self.s = film.scale
        th = math.radians(film.rotation)
        self.cos, self.sin = math.cos(th), math.sin(th)
        self.shift = film.shift

    @property
    def px(self) -> float:
        """Pixels per anatomy unit."""
        return self.s * self.r

    def to_pixels(self, pts: np.ndarray) -> np.ndarray:
        """(..., 2) anatomy (x, y) -> (..., 2) pixel coordinates (PIL convention)."""
        dx, dy = pts[..., 0] - 0.5, pts[..., 1] - 0.5
        x = 0.5 + self.s * (self.cos * dx - self.sin * dy) + self.shift[0]
        y = 0.5 + self.s * (self.sin * dx + self.cos * dy) + self.shift[1]
        return np.stack([x, y], axis=-1) * self.r

    def grid(
        self, rows: slice = slice(None), cols: slice = slice(None)
    ) -> tuple[np.ndarray, np.ndarray]:
        """Anatomy coordinates of the pixel centres in a window of the film."""
        base = _base_grid(self.r)
        gx = (base[cols][None, :] - 0.5 - self.shift[0]) / self.s
        gy = (base[rows][:, None] - 0.5 - self.shift[1]) / self.s
        return 0.5 + self.cos * gx + self.sin * gy, 0.5 - self.sin * gx + self.cos * gy

    def window(
        self, x0: float, y0: float, x1: float, y1: float, pad: int = 3
    ) -> tuple[slice, slice]:
        """Pixel slices covering an anatomy-space box after positioning."""
        corners = self.to_pixels(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
        lo = np.floor(corners.min(0)).astype(int) - pad
        hi = np.ceil(corners.max(0)).astype(int) + pad
        lo, hi = np.clip(lo, 0, self.r), np.clip(hi, 0, self.r)
        return slice(int(lo[1]), int(hi[1])), slice(int(lo[0]), int(hi[0]))


def _soft(field_px: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Anti-aliased indicator of ``field > 0`` from a field in pixel units."""
    return np.clip(0.5 + field_px / width, 0.0, 1.0)


def _resize(a: np.ndarray, shape: tuple[int, int], resample: int = Image.BILINEAR) -> np.ndarray:
    if a.shape == shape:
        return a
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), "F")
    return np.asarray(img.resize((shape[1], shape[0]), resample))


def _polyline(draw: ImageDraw.ImageDraw, pts: np.ndarray, width: float, fill: float) -> None:
    """A thick polyline as one filled polygon (fast, and no gaps at the joints)."""
    d = np.empty_like(pts)
    d[1:-1] = pts[2:] - pts[:-2]
    d[0], d[-1] = pts[1] - pts[0], pts[-1] - pts[-2]
    n = np.stack([-d[:, 1], d[:, 0]], 1) / np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)[:, None]
    half = max(width, 1.0) / 2
    ring = np.concatenate([pts + half * n, (pts - half * n)[::-1]])
    draw.polygon([tuple(p) for p in ring.tolist()], fill=fill)


def _heart_window(a: Anatomy) -> tuple[float, float, float, float]:
    hx, hy = 0.5 + a.heart_dx, a.dome_y[1] - 0.6 * a.heart_h
    ext = max(a.heart_w, a.heart_h) * 1.05
    return hx - ext, hy - ext, hx + ext, hy + ext


class _Lungs:
    """Signed lung and heart fields in R-pixels (positive inside), each on its own window."""

    def __init__(self, film: Film, pose: _Pose):
        a = film.anatomy
        insp = film.inspiration
        px = pose.px
        self.dome = [a.apex_y + (d - a.apex_y) * insp for d in a.dome_y]
        # heart: a tilted ellipse resting on the left hemidiaphragm
        hx, hy = 0.5 + a.heart_dx, self.dome[1] - 0.6 * a.heart_h
        self.heart_xy = (hx, hy)
        self.heart_win = pose.window(*_heart_window(a))
        x, y = pose.grid(*self.heart_win)
        th = math.radians(a.heart_tilt)
        u = (math.cos(th) * (x - hx) + math.sin(th) * (y - hy)) / a.heart_w
        v = (-math.sin(th) * (x - hx) + math.cos(th) * (y - hy)) / a.heart_h
        self.heart = (1.0 - np.sqrt(u * u + v * v)) * a.heart_h * px  # > 0 inside the heart
        self.fields: list[np.ndarray] = []
        self.windows: list[tuple[slice, slice]] = []
        self.frames: list[tuple[float, float, float, float]] = []
        self.rho: list[np.ndarray] = []
        self.xy: list[tuple[np.ndarray, np.ndarray]] = []
        for side in (0, 1):
            lat = -1.0 if side == 0 else 1.0
            la = a.lung_a[side]
            cx = 0.5 + lat * a.lung_dx[side]
            cy = self.dome[side] - 0.01
            b = cy - a.apex_y
            win = pose.window(cx - 1.1 * la, a.apex_y - 0.01, cx + 1.1 * la, self.dome[side] + 0.05)
            x, y = pose.grid(*win)
            p = a.squareness
            rho = (np.abs((x - cx) / la) ** p + np.abs((y - cy) / b) ** p) ** (1.0 / p)
            ell = (1.0 - rho) * la * px
            dome = self.dome[side] - a.dome_h * (1.0 - ((x - cx) / (la * 1.1)) ** 2)
            dia = (dome - y) * px
            knob = (
                a.aortic_knob * np.exp(-(((y - a.apex_y - 0.15) / 0.04) ** 2)) if side == 1 else 0.0
            )
            med = (lat * (x - 0.5) - 0.04 - knob - 0.015 * np.clip((y - a.apex_y) / 0.3, 0, 1)) * px
            field = np.minimum(np.minimum(ell, dia), med)
            field = self._minus_heart(field, win, pad=0.0 if side == 1 else 0.015 * px)
            self.fields.append(field.astype(np.float32))
            self.windows.append(win)
            self.frames.append((cx, cy, la, b))
            self.rho.append(rho)
            self.xy.append((x, y))

    def _minus_heart(self, field: np.ndarray, win: tuple[slice, slice], pad: float) -> np.ndarray:
        """Cut the heart silhouette (padded by ``pad`` pixels) out of a lung field."""
        (r0, r1), (c0, c1) = (win[0].start, win[0].stop), (win[1].start, win[1].stop)
        (h0, h1), (k0, k1) = (
            (self.heart_win[0].start, self.heart_win[0].stop),
            (
                self.heart_win[1].start,
                self.heart_win[1].stop,
            ),
        )
        rr, cc = slice(max(r0, h0), min(r1, h1)), slice(max(c0, k0), min(c1, k1))
        if rr.start >= rr.stop or cc.start >= cc.stop:
            return field
        field = field.copy()
        sub = (slice(rr.start - r0, rr.stop - r0), slice(cc.start - c0, cc.stop - c0))
        hsub = (slice(rr.start - h0, rr.stop - h0), slice(cc.start - k0, cc.stop - k0))
        field[sub] = np.minimum(field[sub], -(self.heart[hsub] + pad))
        return field


def _paste(canvas: np.ndarray, patch: np.ndarray, win: tuple[slice, slice], op=np.maximum) -> None:
    canvas[win] = op(canvas[win], patch)


# ---------------------------------------------------------------- drawing layers


def _background(
    film: Film, r: int, dome: list[float], heart_xy: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth fields at half resolution: soft-tissue brightness and lung brightness."""
    a = film.anatomy
    h = max(r // 2, 32)
    pose = _Pose(film, h)
    x, y = pose.grid()
    px = pose.px
    neck = np.clip((y - 0.0) / 0.16, 0.0, 1.0)
    half = a.neck_w + (a.body_w - a.neck_w) * np.sqrt(neck * (2 - neck))
    body = _soft((half - np.abs(x - 0.5)) * px, 2.0)
    central = np.exp(-(((x - 0.5) / 0.1) ** 2))
    spine = np.exp(-(((x - 0.5) / 0.033) ** 4))
    dome_line = (
        np.where(x < 0.5, dome[0], dome[1])
        - a.dome_h * 0.6
        + 0.6 * np.maximum(np.abs(x - 0.5) - 0.3, 0)
    )
    below = _soft((y - dome_line) * px, 8.0)
    tissue = film.soft_level + 0.18 * central + 0.1 * spine + 0.12 * below * (1 - central)
    hx, hy = heart_xy
    hr = ((x - hx) / (a.heart_w * 1.02)) ** 2 + ((y - hy) / (a.heart_h * 1.02)) ** 2
    tissue = tissue + 0.12 * _soft((1.0 - hr) * 0.05 * px, 2.0) * (1.0 - below) * (1.0 - central)
    trachea = _soft((0.016 - np.abs(x - 0.503)) * px, 1.0) * _soft((a.apex_y + 0.2 - y) * px, 3.0)
    tissue = 0.03 + body * (tissue - 0.03 - 0.1 * trachea)
    if film.gastric_bubble:
        bub = ((x - 0.6) / 0.06) ** 2 + ((y - dome[1] - 0.045) / 0.028) ** 2
        tissue = tissue - 0.14 * _soft((1.0 - bub) * 0.02 * px, 1.5)
    ymid = 0.5 * (dome[0] + dome[1])
    apex = np.clip((a.apex_y + 0.22 - y) / 0.22, 0.0, 1.0) ** 2
    level = film.lung_level + 0.08 * apex + 0.04 * np.clip((y - ymid + 0.2) / 0.2, 0.0, 1.0)
    level = level + 0.05 * np.exp(
        -(((np.abs(x - 0.5) - 0.1) / 0.04) ** 2 + ((y - ymid + 0.3) / 0.07) ** 2)
    )
    if film.female:  # breast shadows brighten the lower lateral lung fields
        for lat in (-1.0, 1.0):
            br = ((x - 0.5 - lat * 0.27) / 0.15) ** 2 + ((y - ymid + 0.02) / 0.11) ** 2
            level = level + 0.07 * _soft((1.0 - br) * 0.05 * px, 4.0)
    return _resize(tissue, (r, r)), _resize(level, (r, r))


def _vessels(film: Film, pose: _Pose, lungs: _Lungs) -> np.ndarray:
    """Branching vascular trees from each hilum: PIL polygons for trunks, stamped pixels for twigs."""
    r = pose.r
    layer = Image.new("F", (r, r), 0.0)
    draw = ImageDraw.Draw(layer)
    rng = np.random.default_rng([film.anatomy.vessel_seed, film.seed])
    w0 = 0.011 * pose.px
    twigs: list[tuple[np.ndarray, np.ndarray, float, int]] = []
    for side in (0, 1):
        cx, cy, la, b = lungs.frames[side]
        lat = -1.0 if side == 0 else 1.0
        hilum = np.array([0.5 + lat * 0.085, cy - 0.42 * b])
        roots = np.array([265.0, 235.0, 200.0, 165.0, 130.0, 100.0]) + rng.normal(0, 6, 6)
        ang = np.where(lat < 0, roots, 180.0 - roots)
        pts = np.repeat(hilum[None, :], len(ang), axis=0)
        length, width = 0.16 * b, w0
        for _gen in range(7):
            step = length * rng.uniform(0.7, 1.3, len(ang))
            rad = np.radians(ang)
            ends = pts + np.stack([np.cos(rad), np.sin(rad)], 1) * step[:, None]
            p0, p1 = pose.to_pixels(pts), pose.to_pixels(ends)
            fill = 0.4 + 0.6 * math.sqrt(width / w0)
            if width >= 2.2:
                for (x0, y0), (x1, y1) in zip(p0.tolist(), p1.tolist(), strict=True):
                    draw.line([(x0, y0), (x1, y1)], fill=fill, width=int(round(width)))
            else:
                twigs.append((p0, p1, fill, 2 if width >= 1.2 else 1))
            pts = np.repeat(ends, 2, axis=0)
            spread = rng.uniform(12.0, 30.0, len(pts)) * np.tile([-1.0, 1.0], len(ends))
            ang = np.repeat(ang, 2) + spread + rng.normal(0, 5, len(pts))
            length *= 0.76
            width *= 0.7
    out = np.array(layer)
    for p0, p1, fill, thick in twigs:
        n = int(np.ceil(np.hypot(*(p1 - p0).T).max() / 0.7)) + 1
        t = np.linspace(0.0, 1.0, n, dtype=np.float32)[None, :, None]
        pts = (p0[:, None, :] + t * (p1 - p0)[:, None, :]).reshape(-1, 2)
        for off in range(thick):
            xi = np.clip(pts[:, 0].astype(np.int64) + off, 0, r - 1)
            yi = np.clip(pts[:, 1].astype(np.int64), 0, r - 1)
            out[yi, xi] = np.maximum(out[yi, xi], fill)
    return out


def _bones_and_devices(
    film: Film, pose: _Pose, lungs: _Lungs, rng: np.random.Generator
) -> np.ndarray:
    """Ribs (bright cortical margins), clavicles, scapulae, plus radio-opaque devices and marker."""
    r = pose.r
    layer = Image.new("F", (r, r), 0.0)
    draw = ImageDraw.Draw(layer)
    a = film.anatomy
    ap = film.view == "AP"
    t = np.linspace(0.0, 1.0, 14)[:, None]
    w = 0.02 * pose.px
    for side in (0, 1):
        lat = -1.0 if side == 0 else 1.0
        cx, cy, la, b = lungs.frames[side]
        p = a.squareness
        for k in range(10):
            yk = a.apex_y - 0.015 + k * a.rib_step * film.inspiration
            yw = min(yk + 0.04, cy)
            width = la * max(1.0 - abs((yw - cy) / b) ** p, 0.0) ** (1.0 / p)
            reach = max(a.lung_dx[side] + width + 0.02 - 0.5 * la * (yw - a.apex_y < 0.03), 0.08)
            drop = 0.07 + 0.05 * min(max(yk - a.apex_y, 0.0) / b, 1.0)
            # posterior rib: up and out from the spine, then curving down to the chest wall
            ctrl = np.array(
                [
                    [0.5 + lat * 0.025, yk],
                    [0.5 + lat * (0.025 + 0.55 * reach), yk - 0.06],
                    [0.5 + lat * (0.025 + reach), yk + drop],
                ]
            )
            pts = (1 - t) ** 2 * ctrl[0] + 2 * t * (1 - t) * ctrl[1] + t**2 * ctrl[2]
            px_pts = pose.to_pixels(pts)
            _polyline(draw, px_pts, w, 1.0)
            _polyline(draw, px_pts, w * 0.55, 0.6)
            # anterior rib: fainter, from the chest wall down and in towards the sternum
            end = ctrl[2]
            ctrl = np.array(
                [end, [end[0] - lat * 0.1, end[1] + 0.0], [0.5 + lat * 0.13, end[1] + 0.13]]
            )
            pts = (1 - t) ** 2 * ctrl[0] + 2 * t * (1 - t) * ctrl[1] + t**2 * ctrl[2]
            _polyline(draw, pose.to_pixels(pts), w * 0.8, 0.45)
        t1 = t[:, 0]
        wall = a.lung_dx[side] + la + 0.015
        lift = -0.025 if ap else 0.0  # clavicles project higher on AP films
        xs = 0.5 + lat * (0.035 + t1 * 0.26)
        ys = a.apex_y + 0.045 + lift - 0.05 * t1 + 0.012 * np.sin(2 * np.pi * t1)
        pts = pose.to_pixels(np.stack([xs, ys], 1))
        _polyline(draw, pts, 0.022 * pose.px, 1.3)
        _polyline(draw, pts, 0.011 * pose.px, 0.9)
        if ap:  # the scapular border projects over the lung when the arms are not rotated out
            xs = 0.5 + lat * (wall - 0.03 - 0.06 * t1)
            ys = a.apex_y + 0.04 + 0.28 * t1
            _polyline(draw, pose.to_pixels(np.stack([xs, ys], 1)), 0.006 * pose.px, 0.5)
    dev = 1.0 / max(film.rib_amp, 1e-3) * 0.45  # devices are denser than bone
    if film.devices:
        for _ in range(int(rng.integers(2, 5))):
            c = pose.to_pixels(np.array([rng.uniform(0.15, 0.85), rng.uniform(0.12, 0.75)]))
            rad = 0.013 * pose.px
            draw.ellipse(
                [c[0] - rad, c[1] - rad, c[0] + rad, c[1] + rad],
                outline=dev,
                width=max(1, int(rad / 3)),
            )
            draw.ellipse([c[0] - rad / 3, c[1] - rad / 3, c[0] + rad / 3, c[1] + rad / 3], fill=dev)
        lat = float(rng.choice([-1.0, 1.0]))
        xs = 0.5 + lat * (0.3 - 0.29 * t1) + 0.02 * np.sin(np.pi * t1)
        ys = a.apex_y + 0.25 * t1**1.3
        _polyline(draw, pose.to_pixels(np.stack([xs, ys], 1)), 0.004 * pose.px, dev)
    if film.chest_tube >= 0:
        lat = -1.0 if film.chest_tube == 0 else 1.0
        wall = a.lung_dx[film.chest_tube] + a.lung_a[film.chest_tube]
        xs = 0.5 + lat * (wall + 0.06 - 0.1 * t1 - 0.05 * np.sin(np.pi * t1))
        ys = lungs.dome[film.chest_tube] - 0.02 - 0.4 * t1
        pts = pose.to_pixels(np.stack([xs, ys], 1))
        _polyline(draw, pts, 0.011 * pose.px, dev * 0.9)
        _polyline(draw, pts, 0.004 * pose.px, dev * 0.4)
    if film.marker:
        corner = int(rng.integers(2))
        at = (0.06 * r, 0.05 * r) if corner == 0 else (0.9 * r, 0.05 * r)
        draw.text(at, film.marker, fill=dev * 1.5, font=_font(max(6, int(0.045 * r))))
    return np.asarray(layer)


def _pneumothorax(film: Film, lungs: _Lungs, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed region field (R-pixels, > 0 inside any region) and the pleural-line intensity.

    Each region is ``depth / profile(angle) < t`` inside its lung, where depth is how far in from
    the lung outline a pixel sits and the profile is a bump over the region's arc, so the region
    is a crescent hugging the chest wall. ``t`` is the order statistic that gives the target
    pixel count, so areas follow the sampled distribution.
    """
    g = np.full((r, r), -50.0, dtype=np.float32)
    line = np.zeros((r, r), dtype=np.float32)
    for reg in film.regions:
        win, lung_px = lungs.windows[reg.side], lungs.fields[reg.side]
        x, y = lungs.xy[reg.side]
        cx, cy, la, b = lungs.frames[reg.side]
        lat = -1.0 if reg.side == 0 else 1.0
        depth = 1.0 - lungs.rho[reg.side]
        phi = np.degrees(np.arctan2(lat * (x - cx) / la, (cy - y) / b))
        prof = np.clip(1.0 - ((phi - reg.angle) / reg.half_width) ** 2, 0.0, 1.0)
        prof = np.where((phi < ANGLE_MIN - 20.0) | (phi > 95.0), 0.0, prof)
        s = np.clip(depth / np.maximum(prof, 1e-3), -1.0, 20.0).astype(np.float32)
        cand = s[(lung_px > 0) & (prof > 0)]
        want = int(round(reg.area * r * r))
        if cand.size == 0 or want <= 0:
            continue
        t = float(np.partition(cand, want)[want]) if want < cand.size else float(cand.max()) + 1e-4
        t = min(t, MAX_DEPTH)
        gy, gx = np.gradient(s)
        d = (t - s) / np.maximum(np.hypot(gx, gy), 1e-4)  # R-pixels to the collapsed-lung edge
        _paste(g, np.minimum(d, lung_px), win)
        w = max(0.6, 0.75 * r / MAX_RENDER)
        edge = np.exp(-0.5 * ((d + 1.2 * w) / w) ** 2) * _soft(lung_px - 1.0, 1.5) * (prof > 0.02)
        _paste(line, edge.astype(np.float32), win)
    return g, line


# ---------------------------------------------------------------- render


def render(film: Film, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``film`` as a ``(size, size)`` uint8 MONOCHROME2 image and its boolean finding mask."""
    r = min(size, MAX_RENDER)
    rng = np.random.default_rng([film.seed, 1])
    pose = _Pose(film, r)
    lungs = _Lungs(film, pose)
    tissue, level = _background(film, r, lungs.dome, lungs.heart_xy)

    lung = np.zeros((r, r), dtype=np.float32)
    for side in (0, 1):
        _paste(lung, _soft(lungs.fields[side], 1.2), lungs.windows[side])

    texture = film.vessel_amp * _vessels(film, pose, lungs)
    texture += film.mottle_amp * _resize(
        rng.standard_normal((r // 6, r // 6)).astype(np.float32), (r, r), Image.BICUBIC
    )
    lung_img = level + texture
    g = None
    if film.regions:
        g, pleural = _pneumothorax(film, lungs, r)
        gap = _soft(g, 1.0)
        lung_img = level + texture * (1.0 - gap) - film.ptx_delta * gap + film.line_amp * pleural
    img = tissue + lung * (lung_img - tissue)

    below = 1.0 - np.clip((pose.grid()[1] - max(lungs.dome)) / 0.08, 0.0, 0.8)
    img += film.rib_amp * _bones_and_devices(film, pose, lungs, rng) * below
    img = ndimage.gaussian_filter(img, 0.5 * r / MAX_RENDER + 0.25)
    t, bt, le, ri = (int(round(c * r)) for c in film.collimation)
    if t or bt or le or ri:  # unexposed plate edges read white
        img[:t] = img[r - bt :] = 1.1
        img[:, :le] = img[:, r - ri :] = 1.1

    full = _resize(img * (255.0 / 1.2), (size, size))
    oy, ox = (int(v) for v in rng.integers(0, 64, 2))
    full = full + film.noise * _noise_tile(size)[oy : oy + size, ox : ox + size]
    curve = np.linspace(0.0, 1.0, 256) ** film.gamma  # display curve applied as a lookup table
    lut = np.round(255.0 * (film.out_lo + (film.out_hi - film.out_lo) * curve)).astype(np.uint8)
    out = lut[np.clip(full, 0, 255).astype(np.uint8)]

    mask = np.zeros((size, size), dtype=bool)
    if g is not None:
        smallest = min(reg.area for reg in film.regions) * size * size
        mask = _region_mask(g, size, min_px=max(4.0, 0.2 * smallest))
    return out, mask


def _region_mask(g: np.ndarray, size: int, min_px: float) -> np.ndarray:
    """Threshold the upsampled region field on its bounding window; drop sub-pixel tip specks."""
    r = g.shape[0]
    rows, cols = np.nonzero((g > -3).any(1))[0], np.nonzero((g > -3).any(0))[0]
    mask = np.zeros((size, size), dtype=bool)
    if rows.size == 0:
        return mask
    f = size / r
    r0, r1 = max(rows[0] - 3, 0), min(rows[-1] + 4, r)
    c0, c1 = max(cols[0] - 3, 0), min(cols[-1] + 4, r)
    if f == 1:
        sub = g[r0:r1, c0:c1] > 0
    else:
        img = Image.fromarray(np.ascontiguousarray(g), "F")
        box = (c0, r0, c1, r1)
        shape = (int(round((c1 - c0) * f)), int(round((r1 - r0) * f)))
        sub = np.asarray(img.resize(shape, Image.BILINEAR, box=box)) > 0
    labels, n = ndimage.label(sub, structure=np.ones((3, 3)))
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        sub = (sizes >= min(min_px, sizes.max()))[labels - 1] & sub
    y0, x0 = int(round(r0 * f)), int(round(c0 * f))
    mask[y0 : y0 + sub.shape[0], x0 : x0 + sub.shape[1]] = sub
    return mask
