"""Renderer training task: (I_0, F_t, W) -> I_t with L1 + VGG perceptual (+ optional 1 - SSIM, - PSNR / 10)
loss on real (I_0, I_t) pairs.

Evaluation during training (``config.eval_every``): on the held-out batch (the frames dataset's test split),
the renderer's mean per-frame PSNR (dB) and LPIPS (AlexNet, the usual metric; the loss uses VGG) against the
true I_t, next to RGB average splatting's (the paper's "baseline splat", holes filled as in
``gid_jax.render.evaluate``): ``psnr`` / ``lpips``, ``psnr_average_splat`` / ``lpips_average_splat``, and
``psnr_gain`` = ``psnr - psnr_average_splat``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from gid_jax.data import build as build_lib
from gid_jax.data import pipeline
from gid_jax.models import perceptual as perceptual_lib
from gid_jax.models import renderer as renderer_lib
from gid_jax.models import ssim as ssim_lib
from gid_jax.ops import splat
from gid_jax.ops.image import fill_holes
from gid_jax.training import vae as vae_task
from gid_jax.training.loop import Task


def frame_psnr(pred_BxHxWx3: jax.Array, target_BxHxWx3: jax.Array) -> jax.Array:
  """Each frame's PSNR in dB (B,), of images in [-1, 1] scored in [0, 1] as the evaluation scores them."""
  mse = jnp.mean(jnp.square((pred_BxHxWx3 - target_BxHxWx3) / 2), axis=(1, 2, 3))
  return -10.0 * jnp.log10(mse + 1e-10)


def make_eval(cfg):
  """evaluate(model, rng) -> the scores of the module docstring."""
  batch = {k: jnp.asarray(v, jnp.float32) for k, v in
           vae_task.held_out_batch(cfg, name=build_lib.FRAMES_DATASET_NAME).items()
           if k in ('image', 'target', 'flow', 'importance')}
  lpips = perceptual_lib.get('alexnet')

  def scores(pred, target):
    pred = jnp.clip(pred.astype(jnp.float32), -1, 1)
    return jnp.mean(frame_psnr(pred, target)), jnp.mean(lpips(pred, target))

  @jax.jit
  def baseline(b):
    avg, mask = splat.softmax_splat(b['image'], b['flow'], mode='average', return_mask=True)
    return scores(fill_holes(avg, mask), b['target'])

  @nnx.jit
  def rendered(model, b):
    return scores(model(b['image'], b['flow'], b['importance']), b['target'])

  base_psnr, base_lpips = (float(v) for v in baseline(batch))

  def evaluate(model, rng):
    del rng
    p, d = (float(v) for v in rendered(model, batch))
    return {'psnr': p, 'lpips': d, 'psnr_average_splat': base_psnr, 'lpips_average_splat': base_lpips,
            'psnr_gain': p - base_psnr}

  return evaluate


def make_task(config, facts: dict | None = None) -> Task:
  """The task of ``config``; a renderer run derives no facts (``gid_jax.runs``): ``facts`` must be empty."""
  if facts:
    raise ValueError(f'a renderer run has no derived facts, got {sorted(facts)}')
  if not config.data_dir:
    raise ValueError('config.data_dir is empty: pass --config.data_dir=<a python -m gid_jax.data.build --out>')
  for name in ('l1', 'perceptual', 'ssim', 'psnr'):
    weight = config.loss[name]
    if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
      raise ValueError(f'config.loss.{name} must be a finite weight >= 0, got {weight!r}')
  if config.model.rgb_base not in renderer_lib.RGB_BASES:
    raise ValueError(f'config.model.rgb_base must be one of {renderer_lib.RGB_BASES}, '
                     f'got {config.model.rgb_base!r}')
  perceptual = perceptual_lib.get(config.loss.perceptual_net) if config.loss.perceptual > 0 else None

  def loss_fn(model, batch, rng):
    del rng
    pred = model(batch['image'], batch['flow'], batch['importance']).astype(jnp.float32)  # the loss in float32
    l1 = jnp.mean(jnp.abs(pred - batch['target']))
    metrics = {'l1': l1}
    loss = config.loss.l1 * l1
    if perceptual is not None:
      p = jnp.mean(perceptual(pred, batch['target']))
      metrics['perceptual'] = p
      loss = loss + config.loss.perceptual * p
    if config.loss.ssim > 0:
      d = 1.0 - jnp.mean(ssim_lib.ssim(pred, batch['target']))
      metrics['dssim'] = d
      loss = loss + config.loss.ssim * d
    if config.loss.psnr > 0:
      # The mean per-frame PSNR (images in [0, 1], as the evaluation scores them), as a loss: - PSNR / 10 =
      # log10 of each frame's MSE. Unlike L1 or a batch MSE it weighs every frame's error relative to that
      # frame's own, so near-still, high-PSNR frames count as much as the evaluation counts them.
      psnr = frame_psnr(pred, batch['target'])
      metrics['psnr'] = jnp.mean(psnr)
      loss = loss - config.loss.psnr * jnp.mean(psnr) / 10.0
    return loss, metrics

  def make_dataset(cfg):
    return pipeline.make_dataset(cfg.data_dir, 'train', batch_size=vae_task.process_batch_size(cfg),
                                 seed=cfg.seed, name=build_lib.FRAMES_DATASET_NAME,
                                 worker_count=cfg.data_workers, prefetch=cfg.prefetch)

  return Task('renderer', loss_fn, make_dataset, make_eval=make_eval)
