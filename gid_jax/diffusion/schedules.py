"""Noise schedules and the training objective of a discrete-time (DDPM) diffusion model.

The forward process over T steps noises a clean ``x0`` (any shape, NHWC for images or latents) as

    z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,   eps ~ N(0, I),   abar_t = prod_{s <= t} (1 - beta_s)

for integer t in [0, T). Timesteps are given per leading batch element: ``t_N`` indexes ``x0_NxHxWxC``
(more generally ``t`` has the shape of a prefix of ``x0``'s shape and broadcasts over the rest).

The network predicts one of two targets (``objective``):

    'eps'   eps                                       (the paper's choice, SPEC.md section 4)
    'v'     v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0  (Salimans & Ho 2022)

and :func:`predict_x0_eps` turns either prediction back into (x0_hat, eps_hat), which is all the
samplers need.
"""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

KINDS = ('linear', 'cosine')
OBJECTIVES = ('eps', 'v')

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


@flax.struct.dataclass
class Schedule:
  """A noise schedule; a frozen dataclass and a JAX pytree, so it can be passed through ``jax.jit``.

  Attributes:
    betas: float32 (T,), per-step noise variances beta_t.
    alphas_cumprod: float32 (T,), abar_t = prod_{s <= t} (1 - beta_s), decreasing from ~1 towards 0.
  """
  betas: jax.Array
  alphas_cumprod: jax.Array

  @property
  def num_timesteps(self) -> int:
    return self.betas.shape[0]


def make_schedule(kind: str = 'linear', num_timesteps: int = 1000, beta_start: float = 0.00085,
                  beta_end: float = 0.012) -> Schedule:
  """Builds a schedule (computed in float64, stored as float32).

  Args:
    kind: 'linear' is the "scaled linear" schedule of LDM / Stable Diffusion, whose defaults are the
      ``beta_start`` / ``beta_end`` above: sqrt(beta) is linear in t, beta_t = linspace(sqrt(beta_start),
      sqrt(beta_end), T)**2. 'cosine' is Nichol & Dhariwal 2021: abar(t) = f(t) / f(0) with
      f(t) = cos((t / T + s) / (1 + s) * pi / 2)**2, s = 0.008, beta_t = min(1 - abar(t+1) / abar(t), 0.999);
      it ignores ``beta_start`` / ``beta_end``.
    num_timesteps: T, at least 2.
    beta_start: first beta of the 'linear' schedule.
    beta_end: last beta of the 'linear' schedule.

  Returns:
    The schedule.

  Raises:
    ValueError: on an unknown kind, T < 2, or betas outside (0, 1).
  """
  if kind not in KINDS:
    raise ValueError(f'make_schedule: kind must be one of {KINDS}, got {kind!r}')
  if int(num_timesteps) != num_timesteps or num_timesteps < 2:
    raise ValueError(f'make_schedule: num_timesteps must be an integer >= 2, got {num_timesteps!r}')
  num_timesteps = int(num_timesteps)
  if kind == 'linear':
    if not (0.0 < beta_start < 1.0 and 0.0 < beta_end < 1.0):
      raise ValueError(f'make_schedule: beta_start and beta_end must lie in (0, 1), got {beta_start}, {beta_end}')
    betas = np.linspace(np.sqrt(beta_start), np.sqrt(beta_end), num_timesteps, dtype=np.float64) ** 2
  else:
    s = 0.008
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((steps + s) / (1 + s) * np.pi / 2) ** 2
    abar = f / f[0]
    # The clip keeps the last step from being a pure-noise step with beta = 1 (abar(T) = 0 exactly).
    betas = np.minimum(1.0 - abar[1:] / abar[:-1], 0.999)
  if not np.all((betas > 0.0) & (betas < 1.0)):
    raise ValueError(f'make_schedule: betas must lie in (0, 1), got range [{betas.min()}, {betas.max()}]')
  alphas_cumprod = np.cumprod(1.0 - betas)
  return Schedule(betas=jnp.asarray(betas, jnp.float32), alphas_cumprod=jnp.asarray(alphas_cumprod, jnp.float32))


def check_objective(objective: str) -> None:
  if objective not in OBJECTIVES:
    raise ValueError(f'objective must be one of {OBJECTIVES}, got {objective!r}')


def _expand(coef_t: jax.Array, x: jax.Array) -> jax.Array:
  """Broadcasts a per-timestep coefficient (shape of t, a prefix of x's shape) over x's trailing axes."""
  coef_t = jnp.asarray(coef_t, jnp.float32)
  if coef_t.ndim > x.ndim or x.shape[:coef_t.ndim] != coef_t.shape:
    raise ValueError(f'timesteps of shape {coef_t.shape} must match the leading axes of an array of shape '
                     f'{x.shape}')
  return coef_t.reshape(coef_t.shape + (1,) * (x.ndim - coef_t.ndim))


def _abar(sched: Schedule, t: jax.Array, x: jax.Array) -> jax.Array:
  return _expand(jnp.take(sched.alphas_cumprod, jnp.asarray(t)), x)


def add_noise(sched: Schedule, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """Returns z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; ``t`` indexes the leading axes of ``x0``."""
  abar = _abar(sched, t, x0)
  return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def target(sched: Schedule, x0: jax.Array, noise: jax.Array, t: jax.Array, objective: str) -> jax.Array:
  """The regression target for ``objective``: the noise ('eps') or v = sqrt(abar) noise - sqrt(1-abar) x0."""
  check_objective(objective)
  if objective == 'eps':
    return noise
  abar = _abar(sched, t, x0)
  return jnp.sqrt(abar) * noise - jnp.sqrt(1.0 - abar) * x0


def min_snr_weight(sched: Schedule, t: jax.Array, objective: str, gamma: float) -> jax.Array:
  """Per-sample loss weights of Min-SNR-gamma (Hang et al. 2023), shape of ``t``; ``gamma <= 0``: all ones.

  The weight makes the (pred - target)^2 loss of ``objective`` equal to min(SNR, gamma) * |x0_hat - x0|^2
  (up to the constant), SNR = abar / (1 - abar): low-noise steps, which only refine details, stop
  dominating training, and the high-noise steps that decide the layout get a fair share.
  eps: min(SNR, gamma) / SNR; v: min(SNR, gamma) / (SNR + 1).
  """
  check_objective(objective)
  t = jnp.asarray(t)
  if gamma <= 0:
    return jnp.ones(t.shape, jnp.float32)
  abar = jnp.take(sched.alphas_cumprod, t)
  snr = abar / (1.0 - abar)
  clipped = jnp.minimum(snr, gamma)
  return (clipped / snr if objective == 'eps' else clipped / (snr + 1.0)).astype(jnp.float32)


def predict_x0_eps(sched: Schedule, z: jax.Array, t: jax.Array, pred: jax.Array,
                   objective: str) -> tuple[jax.Array, jax.Array]:
  """Turns a model output ``pred`` (in ``objective`` units) at noisy ``z`` and level ``t`` into (x0_hat, eps_hat)."""
  check_objective(objective)
  abar = _abar(sched, t, z)
  return x0_eps_from_abar(z, pred, abar, objective)


def x0_eps_from_abar(z: jax.Array, pred: jax.Array, abar: jax.Array,
                     objective: str) -> tuple[jax.Array, jax.Array]:
  """:func:`predict_x0_eps` with abar given directly (broadcastable to ``z``), for samplers."""
  sa, s1a = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)
  if objective == 'eps':
    return (z - s1a * pred) / sa, pred
  # Since abar + (1 - abar) = 1, the v-parametrisation inverts without any division.
  return sa * z - s1a * pred, s1a * z + sa * pred


def diffusion_loss(sched: Schedule, model_fn: ModelFn, x0: jax.Array, rng: jax.Array,
                   objective: str = 'eps') -> tuple[jax.Array, dict[str, jax.Array]]:
  """The denoising MSE for one batch, with t ~ U{0, ..., T-1} per leading element and fresh noise.

  Args:
    sched: the noise schedule.
    model_fn: ``model_fn(z_NxHxWxC, t_N) -> pred_NxHxWxC`` in ``objective`` units, t int32.
    x0: clean data ``x0_NxHxWxC`` (any shape with a leading batch axis N).
    rng: a ``jax.random`` key.
    objective: 'eps' or 'v'.

  Returns:
    (loss, metrics): loss is the mean over all elements of (pred - target)**2; metrics = {'mse': loss}.
  """
  check_objective(objective)
  x0 = jnp.asarray(x0, jnp.float32)
  rng_t, rng_noise = jax.random.split(rng)
  t_N = jax.random.randint(rng_t, x0.shape[:1], 0, sched.num_timesteps, dtype=jnp.int32)
  noise = jax.random.normal(rng_noise, x0.shape, jnp.float32)
  z = add_noise(sched, x0, noise, t_N)
  pred = model_fn(z, t_N)
  if pred.shape != x0.shape:
    raise ValueError(f'diffusion_loss: model_fn returned shape {pred.shape}, expected {x0.shape}')
  loss = jnp.mean(jnp.square(pred.astype(jnp.float32) - target(sched, x0, noise, t_N, objective)))
  return loss, {'mse': loss}
