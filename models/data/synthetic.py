"""Deterministic synthetic cardiac phantom (2D short-axis slice or 3D left ventricle) with exact motion.

Each pair is an end-diastole (ED, ``moving``) / end-systole (ES, ``fixed``) couple of cine-MRI-like
images: mid-grey textured tissue, a dark myocardium ring (2D) or truncated ellipsoidal shell (3D)
and a bright blood pool. The motion is defined *backwards* on the ES grid, ``x -> x + disp_gt(x)``,
and the ES frame is rendered by evaluating the analytic ED phantom at those points, so
``moving(x + disp_gt(x)) = fixed(x)`` holds up to interpolation and the nuisances (noise, signal
loss, bias), which are added afterwards and independently per frame.

Motion model (``rho`` = in-plane distance to the ventricle's axis on the ES grid): the matching
ED point lies at radius ``R`` with ``R**2 = rho**2 + q(rho)``. ``q`` is a constant ``c`` over the
ES wall, so ``R dR = rho drho`` there: the wall keeps its area and thickens as it contracts. ``q``
rises from 0 like ``rho**2`` inside the cavity (the blood pool shrinks, the map stays smooth at
the axis) and decays to 0 outside the heart. A twist (rotation by a smooth angle) is added. The
Jacobian determinant is ``1 + q'(rho) / (2 rho)`` in 2D (the twist keeps area): > 1 in the
cavity, 1 on the wall, and kept above ~0.5 outside by the decay length. In 3D (axis 0 = long
axis, apex at low indices) the base also descends towards the apex, the in-plane map absorbs that
long-axis stretch so the wall keeps its volume, and the twist reverses from apex to base.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.special import expit

from models.data.pairs import MYOCARDIUM, PairSample

__all__ = ["BLOOD_POOL", "DROPOUT_TAGS", "PhantomConfig", "make_phantom_pair", "make_phantom_dataset"]

#: Label of the LV cavity in the phantom's masks (0 is background, ``MYOCARDIUM`` the wall).
BLOOD_POOL = 1
SPACING_MM = 1.5
# ``PairSample.tags`` of a pair whose moving (ED) or fixed (ES) frame lost signal in a blob.
DROPOUT_TAGS = ("dropout-moving", "dropout-fixed")
_EDGE = 0.6  # width (voxels) of the sigmoid edges: anti-aliased, not binary, still sharp.
# Independent random streams per pair, so switching a nuisance on or off leaves the rest unchanged.
_ANATOMY, _TEXTURE, _DROPOUT, _BIAS, _NOISE = range(5)


@dataclass(frozen=True)
class PhantomConfig:
    """Parameters of a phantom dataset; every pair is a pure function of ``(config, index)``.

    ``dims`` 2 or 3; grid ``size`` per axis; ``n`` pairs; ``motion`` scales contraction, twist and
    shortening; ``noise`` is the Rician std (intensities in [0, 1]); ``covisibility`` the chance that
    one frame of a pair loses signal in a blob; ``inconsistency`` the strength of the per-frame
    bias field, gain and offset. A nuisance set to 0 is off.
    """

    dims: int = 2
    size: int = 64
    n: int = 16
    seed: int = 0
    motion: float = 1.0
    noise: float = 0.03
    covisibility: float = 0.0
    inconsistency: float = 0.0

    def __post_init__(self) -> None:
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {self.dims}")
        if self.size < 16 or self.n < 0 or self.seed < 0:
            raise ValueError(f"need size >= 16, n >= 0 and seed >= 0, got {self.size}, {self.n}, {self.seed}")
        if min(self.motion, self.noise, self.inconsistency) < 0 or not 0 <= self.covisibility <= 1:
            raise ValueError("motion, noise and inconsistency must be >= 0 and covisibility in [0, 1]")


@dataclass(frozen=True)
class _Heart:
    """One random ventricle, in voxels. Axis 0 is the long axis in 3D; the last two are in-plane."""

    centre: np.ndarray  # (ndim,)
    cavity: np.ndarray  # semi-axes of the blood pool: (A, B) in 2D, (long, A, B) in 3D
    thickness: float  # wall thickness
    angle: float  # in-plane orientation of the ellipse
    base: float  # 3D: height of the base plane above the centre (the shell is open there)
    levels: tuple[float, float, float]  # tissue, myocardium, blood intensities
    texture_amp: float
    squeeze: float  # q on the wall (voxels**2): the contraction
    twist: float  # radians
    shortening: float  # 3D: descent of the base (voxels)


def _rng(config: PhantomConfig, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, index, stream])


@functools.lru_cache(maxsize=8)
def _identity(shape: tuple[int, ...]) -> np.ndarray:
    """Voxel coordinates ``(ndim, *shape)`` (float64, read-only: it is shared between calls)."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    grid.flags.writeable = False
    return grid


def _smootherstep(t: np.ndarray) -> np.ndarray:
    """0 for t <= 0, 1 for t >= 1, C2 in between (slope at most 15/8)."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * t * (t * (6.0 * t - 15.0) + 10.0)


def _smootherstep_slope(t: np.ndarray) -> np.ndarray:
    """Derivative of :func:`_smootherstep`."""
    t = np.clip(t, 0.0, 1.0)
    return 30.0 * t * t * (1.0 - t) ** 2


def _sample_heart(config: PhantomConfig, rng: np.random.Generator) -> _Heart:
    """Draw anatomy, contrast and motion; lengths scale with ``size``, the motion with ``motion``."""
    size, ndim = config.size, config.dims
    radius = rng.uniform(0.12, 0.16) * size
    ecc = rng.uniform(0.0, 0.12)
    cavity = [radius * (1 + ecc), radius * (1 - ecc)]
    centre = size / 2 - 0.5 + rng.uniform(-0.06, 0.06, ndim) * size
    if ndim == 3:
        long_axis = rng.uniform(0.30, 0.36) * size
        cavity.insert(0, long_axis)
        centre[0] = size / 2 - 0.5 + 0.4 * long_axis + rng.uniform(-0.03, 0.03) * size
    return _Heart(
        centre=centre, cavity=np.array(cavity), thickness=rng.uniform(0.07, 0.09) * size,
        angle=rng.uniform(0, np.pi), base=rng.uniform(0.0, 0.15) * cavity[0],
        levels=(rng.uniform(0.41, 0.49), rng.uniform(0.21, 0.29), rng.uniform(0.75, 0.85)),
        texture_amp=rng.uniform(0.05, 0.09),
        squeeze=config.motion * rng.uniform(0.45, 0.60) * min(cavity[-2:]) ** 2,
        twist=config.motion * rng.uniform(0.08, 0.14) * rng.choice([-1.0, 1.0]),
        shortening=config.motion * rng.uniform(0.08, 0.12) * cavity[0] if ndim == 3 else 0.0,
    )


def _longitudinal(heart: _Heart, w: np.ndarray, decay: float) -> tuple[np.ndarray, ...]:
    """3D profiles along the long axis, ``w`` = ES height above the ellipsoid centre:

    - ``width``: squared relative cavity radius (1 from the equator up, 0 below the cavity tip),
      so the in-plane contraction follows the cavity and spares the apex cap;
    - ``above``: 1 up to the base plane, then decays to 0 so nothing moves far above the heart;
    - ``descent``: 0 at the apex, 1 at the base (then ``above``), and ``slope``, its derivative
      between apex and base (above the base the tissue is merely compressed);
    - ``spin``: the twist, reversing from apex to base.
    """
    apex = -(heart.cavity[0] + heart.thickness)
    height = heart.base - apex
    width = np.clip(1.0 - (np.minimum(w, 0.0) / heart.cavity[0]) ** 2, 0.0, 1.0)
    t_rise = (w - apex) / height
    rise, above = _smootherstep(t_rise), 1.0 - _smootherstep((w - heart.base) / decay)
    slope = _smootherstep_slope(t_rise) / height * above
    spin = above * (1.0 - _smootherstep((apex - w) / decay)) * np.tanh((w - apex) / (0.5 * height) - 1.0)
    return width, above, rise * above, slope, spin


def _radial_profiles(heart: _Heart, rho2: np.ndarray, width: np.ndarray | float) -> tuple[np.ndarray, ...]:
    """In-plane profiles on the ES grid: ``fall`` (1 up to just outside the ES wall, then 0) and
    ``q / rho**2`` with ``q = c * width * s(rho / rho_a)``, ``s(t) = 1 - (1 - t**2)**3`` for t < 1.

    ``s`` rises like ``rho**2`` (smooth at the axis) up to ``rho_a``, inside the ES cavity, so the
    ES wall sees a constant ``q``. In 3D the cavity narrows towards the apex, and ``rho_a**2`` and
    ``q`` shrink with it (``width``), which spares the apex cap.
    """
    c = heart.squeeze
    inner, outer = min(heart.cavity[-2:]), max(heart.cavity[-2:]) + heart.thickness
    rho_a2 = 0.85**2 * max(inner**2 - c, (0.3 * inner) ** 2)
    t2 = rho2 / np.maximum(rho_a2 * width, 1e-12)
    q_over_rho2 = np.where(t2 < 1, c * (3 - 3 * t2 + t2 * t2) / rho_a2, c * width / np.maximum(rho2, 1e-12))
    # Decay beyond the ES wall; its length keeps det = 1 - c |fall'| / (2 rho) above ~0.5.
    rho_b = np.sqrt(max(outer**2 - c, 0.0)) + 1.0
    fall = 1.0 - _smootherstep((np.sqrt(rho2) - rho_b) / max(0.6 * outer, 2.0 * c / rho_b))
    return fall, q_over_rho2


def _backward_displacement(heart: _Heart, grid: np.ndarray) -> np.ndarray:
    """``disp_gt`` ``(ndim, *spatial)`` on the ES grid: ``x + disp(x)`` is the matching ED point.

    In-plane the ED point is at radius ``R``, ``R**2 = rho**2 / stretch + q``, turned by the twist.
    """
    p = grid - heart.centre.reshape(-1, *([1] * (grid.ndim - 1)))
    u, v = p[-2], p[-1]
    width, above, spin, stretch, disp = 1.0, 1.0, 1.0, 1.0, np.zeros_like(p)
    if grid.shape[0] == 3:
        decay = max(0.5 * heart.cavity[0], 4.0 * heart.shortening)
        width, above, descent, slope, spin = _longitudinal(heart, p[0], decay)
    fall, q_over_rho2 = _radial_profiles(heart, u * u + v * v, width)
    if grid.shape[0] == 3:
        disp[0] = heart.shortening * descent * fall  # ES height z comes from ED height z + disp
        # The in-plane map absorbs the long-axis stretch dZ/dz along the heart, so the wall keeps
        # its volume (det = 1 where q is constant).
        stretch = 1.0 + heart.shortening * slope * fall
    scale = np.sqrt(1.0 / stretch + fall * above * q_over_rho2)
    phi = heart.twist * fall * spin
    cos, sin = np.cos(phi), np.sin(phi)
    disp[-2] = scale * (cos * u - sin * v) - u
    disp[-1] = scale * (sin * u + cos * v) - v
    return disp


def _signed_distance(p: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Approximate signed distance (voxels, < 0 inside) to an axis-aligned ellipse/ellipsoid:
    ``f / |grad f|`` with ``f = sum (p/a)**2 - 1``, exact to first order at the surface."""
    shape = (-1, *([1] * (p.ndim - 1)))
    f = np.sum((p / axes.reshape(shape)) ** 2, axis=0) - 1.0
    grad = 2.0 * np.sqrt(np.sum((p / axes.reshape(shape) ** 2) ** 2, axis=0))
    return f / np.maximum(grad, 1e-9)


def _render(heart: _Heart, coords: np.ndarray, texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate the ED phantom at ED-frame points ``coords`` ``(ndim, *spatial)``: (image, labels).

    ``texture`` is the ED texture already sampled at ``coords`` (same spatial shape).
    """
    p = coords - heart.centre.reshape(-1, *([1] * (coords.ndim - 1)))
    cos, sin = np.cos(heart.angle), np.sin(heart.angle)
    p[-2], p[-1] = cos * p[-2] + sin * p[-1], cos * p[-1] - sin * p[-2]  # into the ellipse frame
    d_in = _signed_distance(p, heart.cavity)
    d_out = _signed_distance(p, heart.cavity + heart.thickness)
    # The 3D ventricle is cut open at its base plane, like a left ventricle.
    d_cap = p[0] - heart.base if coords.shape[0] == 3 else np.full(d_in.shape, -np.inf)
    cap = expit(-d_cap / _EDGE)
    blood = expit(-d_in / _EDGE) * cap
    heart_frac = expit(-d_out / _EDGE) * cap
    tissue_level, myo_level, blood_level = heart.levels
    image = (tissue_level * (1.0 - heart_frac) + myo_level * np.clip(heart_frac - blood, 0.0, None)
             + blood_level * blood)
    # Multiplicative (proton-density-like) texture: dark tissue stays dark, unlike signal loss.
    image *= 1.0 + heart.texture_amp * texture
    labels = np.where(d_out < 0, MYOCARDIUM, 0)
    labels = np.where(d_in < 0, BLOOD_POOL, labels) * (d_cap < 0)
    return image, labels.astype(np.uint8)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise with zero mean and unit std, ``shape``."""
    field = gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (field - field.mean()) / max(float(field.std()), 1e-12)


def _dropout(rng: np.random.Generator, labels: np.ndarray, thickness: float) -> np.ndarray:
    """Signal-loss factor: ~0.03 inside a smooth blob centred on a random myocardium voxel (so it
    straddles the wall and the blood pool boundary), 1 elsewhere. ``labels`` is that frame's map."""
    wall = np.flatnonzero(labels == MYOCARDIUM)
    centre = np.array(np.unravel_index(wall[rng.integers(wall.size)], labels.shape), dtype=np.float64)
    radii = rng.uniform(0.8, 1.4, labels.ndim) * thickness + 1.0
    p = _identity(labels.shape) - centre.reshape(-1, *([1] * labels.ndim))
    blob = expit(-_signed_distance(p, radii))  # a soft edge about a voxel wide
    return 1.0 - 0.97 * blob


def _bias(rng: np.random.Generator, shape: tuple[int, ...], strength: float) -> np.ndarray:
    """Smooth multiplicative bias ``exp(linear + quadratic)`` over ``[-1, 1]`` coordinates, times a
    global gain; each frame draws its own, so the two frames disagree in intensity."""
    u = _identity(shape) / np.reshape([max(n - 1, 1) for n in shape], (-1, *([1] * len(shape)))) * 2 - 1
    slope, curve = rng.standard_normal((2, len(shape), *([1] * len(shape))))
    log_bias = np.sum(slope * u + 0.5 * curve * u * u, axis=0) / np.sqrt(len(shape))
    gain = 1.0 + 0.3 * strength * rng.uniform(-1, 1)
    return gain * np.exp(0.25 * strength * log_bias)


def _acquire(signal: np.ndarray, config: PhantomConfig, rng_bias: np.random.Generator,
             rng_noise: np.random.Generator) -> np.ndarray:
    """Apply intensity inconsistency then Rician noise to one frame; float32 clipped to [0, 1]."""
    if config.inconsistency > 0:
        offset = 0.05 * config.inconsistency * rng_bias.uniform(-1, 1)
        signal = np.clip(signal * _bias(rng_bias, signal.shape, config.inconsistency) + offset, 0, None)
    if config.noise > 0:  # magnitude of a complex signal with Gaussian noise on both channels
        real, imag = rng_noise.standard_normal((2, *signal.shape)) * config.noise
        signal = np.hypot(signal + real, imag)
    return np.clip(signal, 0.0, 1.0).astype(np.float32)


def make_phantom_pair(config: PhantomConfig, index: int) -> PairSample:
    """Pair ``index`` of the dataset ``config``: ED ``moving``, ES ``fixed``, their label maps
    (0 background, 1 blood pool, 2 myocardium) and the exact ``disp_gt`` ``(ndim, *spatial)``."""
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    shape = (config.size,) * config.dims
    heart = _sample_heart(config, _rng(config, index, _ANATOMY))
    texture = _smooth_field(_rng(config, index, _TEXTURE), shape, 0.03 * config.size)
    grid = _identity(shape)
    disp = _backward_displacement(heart, grid)
    src = grid + disp
    # Linear texture lookup, as in models.warp, so the ES texture is exactly the warped ED texture.
    es_texture = map_coordinates(texture, src, order=1, mode="nearest")
    frames = [_render(heart, grid, texture), _render(heart, src, es_texture)]
    signals = [frames[0][0], frames[1][0]]
    rng = _rng(config, index, _DROPOUT)
    hit, which = rng.random() < config.covisibility, int(rng.integers(2))
    if hit:  # one frame only; the label maps keep the anatomy, which is still there
        signals[which] = signals[which] * _dropout(rng, frames[which][1], heart.thickness)
    rng_bias, rng_noise = _rng(config, index, _BIAS), _rng(config, index, _NOISE)
    moving, fixed = (_acquire(s, config, rng_bias, rng_noise) for s in signals)
    pair_id = f"phantom-{config.dims}d-s{config.seed}-{index:04d}"
    tags = (DROPOUT_TAGS[which],) if hit else ()
    return PairSample(moving=moving, fixed=fixed, pair_id=pair_id, subject_id=pair_id,
                      moving_mask=frames[0][1], fixed_mask=frames[1][1],
                      spacing_mm=(SPACING_MM,) * config.dims, disp_gt=disp.astype(np.float32), tags=tags)


def make_phantom_dataset(config: PhantomConfig) -> list[PairSample]:
    """``config.n`` pairs, indices ``0 .. n-1``; pair ``i`` does not depend on ``n``."""
    return [make_phantom_pair(config, i) for i in range(config.n)]
