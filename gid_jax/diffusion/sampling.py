"""DDIM sampling with classifier-free guidance and universal (self-)guidance, as one compiled loop.

A sample ``z_NxHxWxC`` (any shape with a leading batch axis N) starts as N(0, I) at the noisiest training
level and is denoised by DDIM (Song et al. 2021) along :func:`ddim_timesteps`. At each step, with
a = abar_t and a' = abar_prev (a' = 1 after the last step, which lands on x0):

    x0_hat, eps_hat = from model_fn(z, t)                                 (either objective)
    eps_hat <- eps_hat + u sqrt(1 - a) grad_z L(x0_hat(z))                 (guidance_fn = L, u = guidance_scale)
    x0_hat  <- (z - sqrt(1 - a) eps_hat) / sqrt(a)                         (consistent with the guided eps)
    sigma   = eta sqrt((1 - a') / (1 - a)) sqrt(1 - a / a')
    z_prev  = sqrt(a') x0_hat + sqrt(1 - a' - sigma^2) eps_hat + sigma n

The guidance term is the universal guidance of Bansal et al. 2023 (forward guidance through the predicted
clean sample), used by SPEC.md section 6 for seamless loops with L = the loop-closure loss. Its
self-recurrence (``recurrence = r``) re-noises z_prev back to level t,
z_t = sqrt(a / a') z_prev + sqrt(1 - a / a') n, and repeats the step, r times in all.

Classifier-free guidance is a transformation of the model (:func:`classifier_free`), so the sampler only
ever sees one ``model_fn(z, t_N)``.
"""

from __future__ import annotations

import functools
import numbers
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gid_jax.diffusion.schedules import ModelFn, Schedule, check_objective, x0_eps_from_abar


def ddim_timesteps(num_train: int, num_steps: int) -> np.ndarray:
  """The descending integer timesteps that DDIM visits, evenly spaced ("trailing" spacing).

  t_i = round(T - i T / S) - 1 for i = 0..S-1, e.g. T = 1000, S = 50 gives 999, 979, ..., 19, and the
  sampler's final step goes from t = 19 to x0. Unlike the "leading" spacing of the DDIM code (0, 20, ...,
  980) it starts at T - 1, the level whose marginal is closest to the N(0, I) we start from, and every
  step, the last one to x0 included, spans T / S training steps (Lin et al. 2024, "Common Diffusion Noise
  Schedules and Sample Steps are Flawed"). The values are distinct for any S <= T.

  Args:
    num_train: T, the number of training timesteps.
    num_steps: S, the number of sampling steps, 1 <= S <= T.

  Returns:
    int64 array of shape (S,), strictly decreasing, from T - 1 down to round(T / S) - 1 >= 0.
  """
  if int(num_steps) != num_steps or not 1 <= num_steps <= num_train:
    raise ValueError(f'ddim_timesteps: num_steps must be an integer in [1, num_train={num_train}], got {num_steps!r}')
  ts = np.round(num_train - np.arange(int(num_steps)) * (num_train / num_steps)).astype(np.int64) - 1
  return ts


def ddim_step(z: jax.Array, pred: jax.Array, abar_t: jax.Array, abar_prev: jax.Array,
              noise: Optional[jax.Array] = None, *, eta: float = 0.0, objective: str = 'eps',
              clip_x0: Optional[float] = None, eps_shift: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
  """One DDIM update from level abar_t to abar_prev (the equations in the module docstring).

  Args:
    z: noisy sample at level abar_t.
    pred: the model output at z, in ``objective`` units.
    abar_t: abar at the current step (scalar, or broadcastable to z).
    abar_prev: abar at the next (less noisy) step; 1 for the final step to x0.
    noise: N(0, I) of z's shape; needed only when eta > 0.
    eta: 0 for deterministic DDIM, 1 for DDPM-like ancestral noise.
    objective: 'eps' or 'v'.
    clip_x0: if given, x0_hat is clipped to [-clip_x0, clip_x0] and eps_hat re-derived from it.
    eps_shift: added to eps_hat before the update (the guidance term).

  Returns:
    (z_prev, x0_hat).
  """
  abar_t = jnp.asarray(abar_t, jnp.float32)
  abar_prev = jnp.asarray(abar_prev, jnp.float32)
  x0_hat, eps_hat = x0_eps_from_abar(z, pred, abar_t, objective)
  if eps_shift is not None:
    eps_hat = eps_hat + eps_shift
    x0_hat = (z - jnp.sqrt(1.0 - abar_t) * eps_hat) / jnp.sqrt(abar_t)
  if clip_x0 is not None:
    x0_hat = jnp.clip(x0_hat, -clip_x0, clip_x0)
    eps_hat = (z - jnp.sqrt(abar_t) * x0_hat) / jnp.sqrt(1.0 - abar_t)
  sigma = eta * jnp.sqrt((1.0 - abar_prev) / (1.0 - abar_t)) * jnp.sqrt(1.0 - abar_t / abar_prev)
  # Rounding can push 1 - a' - sigma^2 a hair below 0 when eta = 1 and a' -> a.
  z_prev = jnp.sqrt(abar_prev) * x0_hat + jnp.sqrt(jnp.maximum(1.0 - abar_prev - sigma**2, 0.0)) * eps_hat
  if noise is not None:
    z_prev = z_prev + sigma * noise
  return z_prev, x0_hat


def _is_zero(x) -> bool:
  return isinstance(x, numbers.Number) and x == 0


def ddim_sample(model_fn: ModelFn, sched: Schedule, shape: Sequence[int], rng: jax.Array, *,
                num_steps: int = 50, eta: float = 0.0, objective: str = 'eps',
                guidance_fn: Optional[Callable[[jax.Array], jax.Array]] = None, guidance_scale: float = 0.0,
                recurrence: int = 1, clip_x0: Optional[float] = None,
                progress: Optional[Callable[[int, int], None]] = None,
                init_noise: Optional[jax.Array] = None,
                noise_fn: Optional[Callable[[jax.Array], jax.Array]] = None) -> jax.Array:
  """Draws samples x0 of ``shape`` by DDIM.

  The steps run in one ``jax.lax.fori_loop`` over precomputed timestep / abar arrays, so the model is
  traced once whatever ``num_steps`` is. The sampler is jitted inside, with the callables and the other
  Python arguments static (callables hash by identity: pass the same ``model_fn`` object to reuse the
  executable); ``sched``, ``rng``, ``eta``, ``guidance_scale`` and ``init_noise`` are traced. It may also be
  called inside an outer ``jax.jit``.

  Args:
    model_fn: ``model_fn(z_NxHxWxC, t_N) -> pred_NxHxWxC`` in ``objective`` units; t_N is int32 of shape
      (N,) = (shape[0],). Wrap with :func:`classifier_free` for guidance by a null condition.
    sched: the training noise schedule.
    shape: the sample shape, batch first, e.g. (N, H, W, C).
    rng: a ``jax.random`` key; the same key gives the same samples.
    num_steps: number of DDIM steps (see :func:`ddim_timesteps` for the spacing).
    eta: 0 = deterministic given the initial noise, 1 = ancestral (DDPM-like) noise.
    objective: what ``model_fn`` predicts, 'eps' or 'v'.
    guidance_fn: ``L(x0_hat) -> scalar`` loss to minimise (universal guidance); its gradient w.r.t. z flows
      through ``model_fn``. None for no guidance.
    guidance_scale: u in eps_hat + u sqrt(1 - abar_t) grad_z L.
    recurrence: self-recurrence count r >= 1 (1 = plain DDIM).
    clip_x0: clip x0_hat to [-clip_x0, clip_x0] at every step (None: no clipping, right for latents).
    progress: ``progress(steps_done, num_steps)``, called after every step through ``jax.debug.callback``, so
      a progress bar works without breaking the single compiled loop (cost: one host callback per step,
      negligible next to a U-Net). Under multi-device execution it may be called once per device for the
      same step, so set the bar's position from ``steps_done`` rather than incrementing it.
    init_noise: the starting z of ``shape``; drawn from ``rng`` when None.
    noise_fn: ``noise_fn(key) -> N(0, 1) noise of shape``, for every draw (default: ``jax.random.normal``).
      A model whose samples are a permutation of a logical array draws it in the logical order and permutes
      it, so that the permutation never changes the samples (``diffusion.motion_sampler``).

  Returns:
    float32 samples of ``shape``.
  """
  check_objective(objective)
  shape = tuple(int(s) for s in shape)
  if len(shape) < 1:
    raise ValueError(f'ddim_sample: shape needs a leading batch axis, got {shape}')
  if int(recurrence) != recurrence or recurrence < 1:
    raise ValueError(f'ddim_sample: recurrence must be an integer >= 1, got {recurrence!r}')
  if isinstance(eta, numbers.Number) and eta < 0:
    raise ValueError(f'ddim_sample: eta must be >= 0, got {eta}')
  if guidance_fn is None and not _is_zero(guidance_scale):
    raise ValueError(f'ddim_sample: guidance_scale={guidance_scale} given without a guidance_fn')
  if init_noise is not None and tuple(init_noise.shape) != shape:
    raise ValueError(f'ddim_sample: init_noise has shape {tuple(init_noise.shape)}, expected {shape}')
  return _ddim_sample(sched, rng, eta, guidance_scale, init_noise, model_fn=model_fn, shape=shape,
                      num_steps=int(num_steps), objective=objective, guidance_fn=guidance_fn,
                      recurrence=int(recurrence), clip_x0=clip_x0, progress=progress, need_noise=not _is_zero(eta),
                      noise_fn=noise_fn)


# Jitted with the callables static (hashed by identity): repeated calls with the same model_fn reuse one
# executable, and small eager ops around the loop do not each dispatch and compile on their own.
@functools.partial(jax.jit, static_argnames=('model_fn', 'shape', 'num_steps', 'objective', 'guidance_fn',
                                             'recurrence', 'clip_x0', 'progress', 'need_noise', 'noise_fn'))
def _ddim_sample(sched, rng, eta, guidance_scale, init_noise, *, model_fn, shape, num_steps, objective,
                 guidance_fn, recurrence, clip_x0, progress, need_noise, noise_fn):
  draw = noise_fn or (lambda key: jax.random.normal(key, shape, jnp.float32))
  ts_S = ddim_timesteps(sched.num_timesteps, num_steps)
  t_S = jnp.asarray(ts_S, jnp.int32)
  abar_t_S = sched.alphas_cumprod[ts_S]
  abar_prev_S = jnp.concatenate([sched.alphas_cumprod[ts_S[1:]], jnp.ones((1,), jnp.float32)])

  rng_init, rng_loop = jax.random.split(rng)
  if init_noise is None:
    z = draw(rng_init)
  else:
    z = jnp.asarray(init_noise, jnp.float32)

  def step(z_t, t_N, abar_t, abar_prev, key):
    if guidance_fn is None:
      pred, eps_shift = model_fn(z_t, t_N), None
    else:
      def loss(z_):
        pred_ = model_fn(z_, t_N)
        x0_, _ = x0_eps_from_abar(z_, pred_, abar_t, objective)
        return guidance_fn(x0_), pred_
      grad_z, pred = jax.grad(loss, has_aux=True)(z_t)
      eps_shift = guidance_scale * jnp.sqrt(1.0 - abar_t) * grad_z
    noise = draw(key) if need_noise else None
    z_prev, _ = ddim_step(z_t, pred, abar_t, abar_prev, noise, eta=eta, objective=objective, clip_x0=clip_x0,
                          eps_shift=eps_shift)
    return z_prev

  def body(i, z_t):
    t_N = jnp.full(shape[:1], t_S[i], jnp.int32)
    abar_t, abar_prev = abar_t_S[i], abar_prev_S[i]
    key = jax.random.fold_in(rng_loop, i)
    if recurrence == 1:
      z_prev = step(z_t, t_N, abar_t, abar_prev, key)
    else:
      ratio = abar_t / abar_prev

      def repeat(j, carry):
        z_j, _ = carry
        key_step, key_renoise = jax.random.split(jax.random.fold_in(key, j))
        z_prev_j = step(z_j, t_N, abar_t, abar_prev, key_step)
        # The re-noised sample after the last repeat is unused; computing it anyway keeps one loop body.
        z_j = jnp.sqrt(ratio) * z_prev_j + jnp.sqrt(1.0 - ratio) * draw(key_renoise)
        return z_j, z_prev_j

      _, z_prev = jax.lax.fori_loop(0, recurrence, repeat, (z_t, z_t))
    if progress is not None:
      jax.debug.callback(lambda k: progress(int(k) + 1, len(ts_S)), i)
    return z_prev

  return jax.lax.fori_loop(0, len(ts_S), body, z)


def classifier_free(model_fn_cond_uncond: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
                    w: float) -> ModelFn:
  """Builds the classifier-free guided ``model_fn(z, t)`` from a model with an optional condition.

  pred = (1 + w) f(z, t; c) - w f(z, t; null), so w = 0 is plain conditional sampling. The combination has
  weights summing to 1, so it means the same for either objective: mixing v predictions this way gives
  exactly the eps (and x0) that mixing eps predictions would.

  Args:
    model_fn_cond_uncond: ``f(z_MxHxWxC, t_M, use_cond_M)``, ``use_cond_M`` a bool array: True where the
      sample uses its condition, False where it uses the null condition. For w != 0 it is called once on
      M = 2N: the batch is [z; z] with use_cond [True] * N + [False] * N, so a model holding a per-sample
      condition of batch N tiles it twice along the batch axis.
    w: the guidance weight (SPEC.md section 6 uses 1.75). A Python 0 skips the null half entirely.

  Returns:
    ``model_fn(z_NxHxWxC, t_N)``.
  """
  f = model_fn_cond_uncond

  def guided(z, t_N):
    n = z.shape[0]
    if _is_zero(w):
      return f(z, t_N, jnp.ones((n,), bool))
    use_cond = jnp.concatenate([jnp.ones((n,), bool), jnp.zeros((n,), bool)])
    out = f(jnp.concatenate([z, z]), jnp.concatenate([t_N, t_N]), use_cond)
    cond, uncond = out[:n], out[n:]
    return cond + w * (cond - uncond)

  return guided
