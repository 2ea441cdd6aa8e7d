"""Interactive dynamics: a spectral volume used as an image-space modal basis (Davis et al. 2015).

Every kept frequency bin k = 1 .. K-1 of a spectral volume ``spec_KxHxWx4`` (pixels, channels
(re x, im x, re y, im y)) is one vibration mode j with a complex per-pixel shape
``Phi_j(p) = (Sx_k(p), Sy_k(p)) / s`` and the natural frequency of its bin, ``omega_j = 2 pi k fps / T``
(:func:`gid_jax.motion.spectral.frequencies`). Bin 0 (DC) is *not* a mode: it is the mean position of each
pixel, a static offset with omega = 0, and as a "mode" an impulse would set it drifting forever. It is
dropped, so an untouched scene stays exactly at rest (``disp = 0``, the ``disp[0] = 0`` convention).

Displacement (pixels) is the real part of the modal superposition, ``D_t(p) = Re sum_j Phi_j(p) q_j(t)``,
with complex modal coordinates ``q_j``; each is a decoupled damped oscillator

    q'' + 2 zeta omega q' + omega^2 q = f / m

(real and imaginary parts evolve independently: the coefficients are real).

Poke (an impulse). A poke at pixel p with direction d (a real 2-vector, pixels) and strength alpha changes
every modal velocity by ``dq'_j = alpha * impulse_scale / m * conj(d . Phi_j(p))``: magnitude
``|d . Phi_j(p)|``, phase the *negative* angle of ``d . Phi_j(p)``. The conjugate makes the physics
consistent: a force f delivers power ``f . dD/dt = Re[(f . Phi_j) q'_j]`` while the modal energy grows by
``Re[conj(q'_j) g_j]``, so the modal force must be ``g_j = conj(f . Phi_j)``; then the poked pixel starts
moving along +d in every mode (``Re[(d . Phi_j) conj(d . Phi_j)] = |d . Phi_j|^2 >= 0``). Using the angle
itself (no conjugate) would make the poked pixel move against the push wherever the mode's phase at p is
past 45 degrees. ``Phi(p)`` is averaged over a disk of ``poke_radius_px`` so that a click between two
pixels, or on a noisy sampled pixel, behaves like its neighbourhood.

Units. With the default ``impulse_scale = 2 pi`` (omega of 1 Hz) a poke of strength 1 along a unit mode
shape of a 1 Hz mode gives that pixel a peak displacement of 1 px; a mode of frequency f responds with 1/f
of that (an impulse moves slow, soft modes more, as it should). With the default ``'global'`` normalisation
(below) ``sum_j |Phi_j(p)|^2 <= 1`` at every pixel, so at the most mobile pixel a poke of direction d moves
the pixel by about ``|d| * strength`` px for a scene oscillating near 1 Hz.

Normalisation of the mode shapes (``ModalParams.normalize``):
  * ``'global'`` (default): divide every mode by one scalar, ``s = max_p sqrt(sum_{k>=1} |S_k(p)|^2)``. This
    keeps what the observed (or sampled) motion says about *relative* mobility: which pixels move, and how
    much each frequency contributes, so a tree's slow sway still dominates its fast flutter.
  * ``'per_mode'``: every mode scaled to ``max_p |Phi_j(p)| = 1`` (all modes equally excitable; livelier and
    more high-frequency jitter than the data suggests).
  * ``'none'``: the raw pixel-unit volume.

Integration: semi-implicit (symplectic) Euler, velocity first, then position with the new velocity:

    v <- v + h (f / m - 2 zeta omega v - omega^2 q),      q <- q + h v.

Plain explicit Euler multiplies an undamped oscillator's energy by ``1 + (h omega)^2`` every step (it always
blows up); the symplectic variant keeps an undamped oscillator's energy bounded for ``h omega < 2`` (it
exactly conserves a modified energy within ``O(h omega)`` of the true one) and damping only makes it decay.
A video frame (``1 / fps``) is split into ``ceil(omega_max / fps / max_h_omega)`` substeps, so ``h omega``
stays at most ``max_h_omega = 0.1`` for the fastest mode: far from the stability bound, with frequency error
``(h omega)^2 / 24 < 0.05 %`` and energy ripple under ~5 %. At 30 fps with K = 16 (3 Hz) that is 7 substeps,
on only K - 1 complex numbers: the cost of a frame is the synthesis of the H x W x 2 displacement, one
(2 (K - 1)) x (2 H W) matrix-vector product (a few ms on one CPU core at 160 x 256).

Displayed displacement is clamped to ``max_disp_frac * min(H, W)`` pixels per pixel (magnitude only, the
direction is kept); the clamp touches only what is returned, never the oscillator state, so it does not alter
the dynamics and is exactly linear below the limit.

The oscillators are integrated on the host in float64 numpy (J complex numbers: a jitted loop would cost more
in dispatch than it saves); the synthesis is one jitted matrix product + clamp returning a float32 jax array,
ready for the (jax) renderer. XLA's CPU matmul is used rather than numpy's because multi-threaded OpenBLAS
slows down ~10x for this skinny product when the cores are shared with rendering.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gid_jax.fileio import atomic_path
from gid_jax.motion import spectral

NORMALIZATIONS = ('global', 'per_mode', 'none')


@dataclasses.dataclass(frozen=True)
class ModalParams:
  """Knobs of the modal simulation. Defaults give a visible, springy response that settles in seconds."""
  # Simulation (= output video) frame rate; one step() advances 1 / fps seconds.
  fps: float = 30.0
  # Modal mass, the same for every mode (the supplement's values are unknown; 1 makes strength a pixel scale).
  mass: float = 1.0
  # Damping ratio zeta. Measured damping of trees and plants (structural + aerodynamic) is a few to ~10 %;
  # 0.05 lets a 1 Hz mode ring for ~3 s (1 / (zeta omega)), a 3 Hz flutter ~1 s.
  damping: float = 0.05
  # Substeps per frame; None picks ceil(omega_max / fps / max_h_omega) (see the module docstring).
  substeps: int | None = None
  max_h_omega: float = 0.1
  # Velocity change per unit strength; 2 pi = omega of 1 Hz, so strength reads as pixels for a 1 Hz mode.
  impulse_scale: float = 2.0 * math.pi
  # Force per unit strength for hold(); (2 pi)^2 makes a held strength-1 push deflect a 1 Hz mode by 1 px.
  force_scale: float = (2.0 * math.pi) ** 2
  # Radius (pixels) of the disk over which the mode shapes are averaged at the poked point.
  poke_radius_px: float = 1.5
  normalize: str = 'global'
  # Displayed displacement is clamped to this fraction of the shorter image side (None: no clamp).
  # 0.1 = 16 px at 256 x 160: large enough to see, small enough that splatting leaves few holes.
  max_disp_frac: float | None = 0.1

  def __post_init__(self):
    for name in ('fps', 'mass', 'max_h_omega', 'impulse_scale', 'force_scale'):
      v = getattr(self, name)
      if not (math.isfinite(v) and v > 0):
        raise ValueError(f'ModalParams.{name} must be a positive finite number, got {v}')
    if not (math.isfinite(self.damping) and self.damping >= 0):
      raise ValueError(f'ModalParams.damping must be >= 0, got {self.damping}')
    if self.substeps is not None and (int(self.substeps) != self.substeps or self.substeps < 1):
      raise ValueError(f'ModalParams.substeps must be a positive integer or None, got {self.substeps}')
    if not (math.isfinite(self.poke_radius_px) and self.poke_radius_px >= 0):
      raise ValueError(f'ModalParams.poke_radius_px must be >= 0, got {self.poke_radius_px}')
    if self.normalize not in NORMALIZATIONS:
      raise ValueError(f'ModalParams.normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}')
    if self.max_disp_frac is not None and not (math.isfinite(self.max_disp_frac) and self.max_disp_frac > 0):
      raise ValueError(f'ModalParams.max_disp_frac must be positive or None, got {self.max_disp_frac}')


def _check_volume(spec_KxHxWx4, name: str = 'spectral volume') -> np.ndarray:
  spec = np.asarray(spec_KxHxWx4)
  if spec.ndim != 4 or spec.shape[-1] != 4 or spec.shape[0] < 1 or min(spec.shape[1:3]) < 1:
    raise ValueError(f'{name}: expected shape (K, H, W, 4), got {spec.shape}')
  if not np.issubdtype(spec.dtype, np.number) or np.iscomplexobj(spec):
    raise ValueError(f'{name}: expected real numbers, got dtype {spec.dtype}')
  if not np.all(np.isfinite(spec)):
    raise ValueError(f'{name}: contains non-finite values')
  return spec


def mode_shapes(spec_KxHxWx4, normalize: str = 'global') -> np.ndarray:
  """Complex mode shapes (K - 1, H, W, 2) [x, y] from bins 1 .. K-1, normalised as in the module docstring."""
  spec = _check_volume(spec_KxHxWx4).astype(np.float64)
  if normalize not in NORMALIZATIONS:
    raise ValueError(f'normalize must be one of {NORMALIZATIONS}, got {normalize!r}')
  phi = np.stack([spec[1:, ..., 0] + 1j * spec[1:, ..., 1], spec[1:, ..., 2] + 1j * spec[1:, ..., 3]], -1)
  if normalize == 'global':
    s = np.sqrt(np.max(np.sum(np.abs(phi) ** 2, axis=(0, -1)), initial=0.0))
    phi = phi / s if s > 0 else phi
  elif normalize == 'per_mode':
    s = np.sqrt(np.max(np.sum(np.abs(phi) ** 2, axis=-1), axis=(1, 2), initial=0.0))
    # A mode with no motion anywhere stays zero (it cannot be excited) instead of becoming NaN.
    phi = phi / np.where(s > 0, s, 1.0)[:, None, None, None]
  return phi


@jax.jit
def _synthesize(coef_Nx2J: jax.Array, basis_2JxM: jax.Array, max_disp: jax.Array) -> jax.Array:
  """(N, M) displacements, M = H * W * 2, with every pixel's magnitude clamped to ``max_disp``."""
  disp = jnp.dot(coef_Nx2J, basis_2JxM, precision=jax.lax.Precision.HIGHEST)
  d = disp.reshape(disp.shape[0], -1, 2)
  mag = jnp.sqrt(jnp.sum(jnp.square(d), axis=-1, keepdims=True))
  # Only pixels over the limit are rescaled, so the result is exactly linear below it.
  scale = jnp.where(mag > max_disp, max_disp / jnp.maximum(mag, 1e-30), 1.0)
  return (d * scale).reshape(disp.shape)


class ModalSimulator:
  """Modal coordinates of a scene, advanced frame by frame. See the module docstring for the model.

  Attributes:
    omega: (J,) natural angular frequencies (rad/s) of the J = K - 1 modes.
    q, v: (J,) complex128 modal coordinates and velocities (pixel-like units).
    shapes_JxHxWx2: complex mode shapes after normalisation.
  """

  def __init__(self, spec_KxHxWx4, params: ModalParams = ModalParams(), num_frames: int = spectral.NUM_FRAMES,
               spectral_fps: float | None = None):
    """Args:
      spec_KxHxWx4: spectral volume in pixel units (numpy or jax), K >= 2.
      params: simulation knobs.
      num_frames: the clip length T the volume was computed over (sets the bin frequencies).
      spectral_fps: frame rate of that clip; defaults to ``params.fps``.
    """
    spec = _check_volume(spec_KxHxWx4)
    if spec.shape[0] < 2:
      raise ValueError(f'a spectral volume needs K >= 2 bins to have any mode (bin 0 is static), got '
                       f'{spec.shape}')
    self.params = params
    self.num_frames = int(num_frames)
    self.spectral_fps = float(params.fps if spectral_fps is None else spectral_fps)
    if not (math.isfinite(self.spectral_fps) and self.spectral_fps > 0):
      raise ValueError(f'spectral_fps must be positive, got {spectral_fps}')
    freqs = spectral.frequencies(spec.shape[0], self.num_frames, self.spectral_fps)[1:]
    self.omega = 2.0 * np.pi * freqs
    self.height, self.width = spec.shape[1:3]
    self.shapes_JxHxWx2 = mode_shapes(spec, params.normalize)
    j = self.omega.shape[0]
    # Real synthesis basis: Re[Phi q] = Re Phi . Re q - Im Phi . Im q, as one (2J, H*W*2) float32 matrix.
    flat = self.shapes_JxHxWx2.reshape(j, -1)
    self._basis = jnp.asarray(np.concatenate([flat.real, -flat.imag]), jnp.float32)
    dt = 1.0 / params.fps
    self.substeps = int(params.substeps or max(1, math.ceil(dt * self.omega.max() / params.max_h_omega)))
    self.h = dt / self.substeps
    if self.h * self.omega.max() >= 2.0:  # symplectic Euler's stability bound for the fastest mode
      raise ValueError(f'{self.substeps} substeps per frame are unstable for a {freqs.max():.3g} Hz mode at '
                       f'{params.fps:g} fps: need h * omega < 2, got {self.h * self.omega.max():.3g}')
    self._max_disp = np.float32(np.inf if params.max_disp_frac is None
                                else params.max_disp_frac * min(self.height, self.width))
    self.reset()

  @property
  def num_modes(self) -> int:
    return self.omega.shape[0]

  def reset(self) -> None:
    """Back to rest: no motion, no held force."""
    self.q = np.zeros(self.num_modes, np.complex128)
    self.v = np.zeros(self.num_modes, np.complex128)
    self.force = np.zeros(self.num_modes, np.complex128)
    self.frame = 0

  def set_state(self, q, v) -> None:
    q = np.asarray(q, np.complex128)
    v = np.asarray(v, np.complex128)
    if q.shape != (self.num_modes,) or v.shape != (self.num_modes,):
      raise ValueError(f'state must be two ({self.num_modes},) arrays, got {q.shape} and {v.shape}')
    self.q, self.v = q.copy(), v.copy()

  def modal_projection(self, x_px: float, y_px: float, dx: float, dy: float) -> np.ndarray:
    """(J,) complex ``d . Phi_j(p)``, Phi averaged over the poke disk around pixel (x, y)."""
    if not (0 <= x_px <= self.width - 1 and 0 <= y_px <= self.height - 1):
      raise ValueError(f'poke at ({x_px}, {y_px}) is outside the {self.width} x {self.height} image '
                       f'(x in [0, {self.width - 1}], y in [0, {self.height - 1}])')
    if not (math.isfinite(dx) and math.isfinite(dy)):
      raise ValueError(f'poke direction must be finite, got ({dx}, {dy})')
    r = self.params.poke_radius_px
    x0, x1 = max(0, math.floor(x_px - r)), min(self.width - 1, math.ceil(x_px + r))
    y0, y1 = max(0, math.floor(y_px - r)), min(self.height - 1, math.ceil(y_px + r))
    ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    inside = (xs - x_px) ** 2 + (ys - y_px) ** 2 <= r * r
    if not inside.any():  # r below half a pixel: the nearest pixel
      inside = (xs == min(max(round(x_px), x0), x1)) & (ys == min(max(round(y_px), y0), y1))
    phi = self.shapes_JxHxWx2[:, y0:y1 + 1, x0:x1 + 1][:, inside].mean(axis=1)  # (J, 2)
    return phi[:, 0] * dx + phi[:, 1] * dy

  def poke(self, x_px: float, y_px: float, dx: float, dy: float, strength: float = 1.0) -> None:
    """An impulse at pixel (x, y) (floats allowed) along (dx, dy): changes the modal velocities now."""
    proj = self.modal_projection(x_px, y_px, dx, dy)
    self.v = self.v + strength * self.params.impulse_scale / self.params.mass * np.conj(proj)

  def hold(self, x_px: float, y_px: float, dx: float, dy: float, strength: float = 1.0) -> None:
    """A constant push (e.g. while dragging) that acts on every following step until release()."""
    proj = self.modal_projection(x_px, y_px, dx, dy)
    self.force = strength * self.params.force_scale * np.conj(proj)

  def release(self) -> None:
    self.force = np.zeros(self.num_modes, np.complex128)

  def energy(self) -> float:
    """sum_j 0.5 m |q'_j|^2 + 0.5 m omega_j^2 |q_j|^2 (the held force's potential not included)."""
    m = self.params.mass
    return float(np.sum(0.5 * m * np.abs(self.v) ** 2 + 0.5 * m * self.omega ** 2 * np.abs(self.q) ** 2))

  def _advance(self) -> None:
    """One frame of semi-implicit Euler substeps (float64; J complex numbers, microseconds)."""
    p = self.params
    w, w2, h = self.omega, self.omega ** 2, self.h
    c = 2.0 * p.damping * w
    a = self.force / p.mass
    q, v = self.q, self.v
    for _ in range(self.substeps):
      v = v + h * (a - c * v - w2 * q)
      q = q + h * v
    self.q, self.v = q, v
    self.frame += 1

  def synthesize(self, q_NxJ) -> jax.Array:
    """Displacements (N, H, W, 2) float32 of N modal states, clamped for display."""
    q = np.asarray(q_NxJ, np.complex128).reshape(-1, self.num_modes)
    coef = np.concatenate([q.real, q.imag], axis=1).astype(np.float32)
    disp = _synthesize(jnp.asarray(coef), self._basis, self._max_disp)
    return disp.reshape(-1, self.height, self.width, 2)

  def displacement(self) -> jax.Array:
    """Current displacement (H, W, 2) float32, pixels."""
    return self.synthesize(self.q[None])[0]

  def step(self) -> jax.Array:
    """Advance one frame (1 / fps seconds) and return the displacement (H, W, 2) at the new time."""
    self._advance()
    return self.displacement()

  def simulate(self, num_frames: int, pokes: Sequence[tuple[int, tuple]] = ()) -> jax.Array:
    """Displacements (num_frames, H, W, 2) from the current state, which is advanced by the call.

    Frame 0 is the current displacement (0 for a fresh simulator, as ``disp[0] = 0`` asks). A poke
    ``(f, (x, y, dx, dy, strength))`` (strength optional) is applied at the time of frame f, before advancing
    to f + 1; an impulse changes velocities, not positions, so it shows from frame f + 1 on.
    """
    if num_frames < 1:
      raise ValueError(f'num_frames must be >= 1, got {num_frames}')
    by_frame: dict[int, list] = {}
    for f, args in pokes:
      if not 0 <= int(f) < num_frames:
        raise ValueError(f'poke at frame {f} is outside 0 .. {num_frames - 1}')
      if not 4 <= len(args) <= 5:
        raise ValueError(f'a poke is (x, y, dx, dy[, strength]), got {args}')
      by_frame.setdefault(int(f), []).append(args)
    q_NxJ = np.empty((num_frames, self.num_modes), np.complex128)
    for f in range(num_frames):
      q_NxJ[f] = self.q
      for args in by_frame.get(f, ()):
        self.poke(*args)
      if f + 1 < num_frames:
        self._advance()
    return self.synthesize(q_NxJ)


# -- spectral volume files ----------------------------------------------------------------------


class SpectralFile(NamedTuple):
  spectral_volume: np.ndarray  # (K, H, W, 4) float32, pixels
  num_frames: int  # T of the clip the bins refer to
  fps: float  # its frame rate


def save_spectral(path: str, spec_KxHxWx4, num_frames: int = spectral.NUM_FRAMES,
                  fps: float = spectral.FPS) -> str:
  """Write ``spectral_volume``, ``num_frames`` and ``fps`` to an .npz, atomically. Returns ``path``."""
  spec = _check_volume(spec_KxHxWx4).astype(np.float32)
  spectral.frequencies(spec.shape[0], int(num_frames), float(fps))  # validates K against T
  if not path.endswith('.npz'):
    raise ValueError(f'{path}: a spectral volume file must end in .npz')
  with atomic_path(path) as tmp:
    with open(tmp, 'wb') as f:
      np.savez_compressed(f, spectral_volume=spec, num_frames=np.int64(num_frames), fps=np.float64(fps))
  return path


def load_spectral(path: str) -> SpectralFile:
  """Read and validate a file written by :func:`save_spectral`; ValueError naming the file if bad."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such spectral volume file')
  try:
    with np.load(path, allow_pickle=False) as z:
      data = {k: z[k] for k in z.files}
  except Exception as e:  # np.load raises OSError, ValueError, zipfile.BadZipFile, EOFError, ...
    raise ValueError(f'{path}: not a readable .npz file ({type(e).__name__})') from e
  missing = [k for k in SpectralFile._fields if k not in data]
  if missing:
    raise ValueError(f'{path}: missing {", ".join(missing)} (has {", ".join(sorted(data)) or "nothing"})')
  spec = _check_volume(data['spectral_volume'], f'{path}: spectral_volume')
  try:
    num_frames, fps = int(data['num_frames']), float(data['fps'])
  except (TypeError, ValueError) as e:
    raise ValueError(f'{path}: num_frames and fps must be scalars') from e
  if not (math.isfinite(fps) and fps > 0):
    raise ValueError(f'{path}: fps must be positive, got {fps}')
  try:
    spectral.frequencies(spec.shape[0], num_frames, fps)
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from e
  return SpectralFile(spec.astype(np.float32), num_frames, fps)
