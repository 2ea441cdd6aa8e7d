"""Spectral VAE training task: every example's K normalised frequency slices are independent samples.

Evaluation during training (``config.eval_every``): the reconstruction of the held-out batch's slices from
the posterior mean, ``recon_l1`` (mean absolute error, normalised units) and ``recon_rel_l1`` (that over the
slices' mean absolute value), and ``recon_rel_l1_im`` for the imaginary channels alone (a VAE that drops them
scores about 1 there: docs/RESULTS.md, "The VAE drops the imaginary parts").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gid_jax.data import pipeline
from gid_jax.models import vae as vae_lib
from gid_jax.motion import normalize as norm_lib
from gid_jax.training.loop import Task


def require_data_dir(config) -> None:
  if not config.data_dir:
    raise ValueError('config.data_dir is empty: pass --config.data_dir=<a python -m gid_jax.data.build --out>')


def process_batch_size(cfg) -> int:
  """This process's share of the global ``cfg.batch_size``; a one-line error if processes cannot share it."""
  if cfg.batch_size % jax.process_count():
    raise ValueError(f'batch_size {cfg.batch_size} is not divisible by {jax.process_count()} processes')
  return cfg.batch_size // jax.process_count()


def motion_dataset(cfg, split: str = 'train', stats=None):
  """Batches of image_BxHxWx3 / nspec_BxKxHxWx4, the global batch split over processes, normalised with
  ``stats`` (default: the dataset's, of ``cfg.normalize`` and ``cfg.num_freqs``)."""
  batch_size = process_batch_size(cfg)
  if stats is None:
    stats = pipeline.training_stats(cfg.data_dir, cfg.normalize, cfg.num_freqs)
  return pipeline.make_dataset(cfg.data_dir, split, batch_size=batch_size, seed=cfg.seed, stats=stats,
                               worker_count=cfg.data_workers, prefetch=cfg.prefetch)


def held_out_batch(cfg, name: str = pipeline.DATASET_NAME, stats=None) -> dict:
  """The fixed evaluation batch (numpy): the first ``cfg.eval_examples`` examples of the data's ``test`` split
  (videos never trained on) in their stored order, read once by every process."""
  try:
    ds = pipeline.make_dataset(cfg.data_dir, 'test', batch_size=cfg.eval_examples, shuffle=False, num_epochs=1,
                               drop_remainder=False, shard_index=0, shard_count=1, name=name, stats=stats)
    return next(iter(ds))
  except (ValueError, FileNotFoundError, StopIteration) as e:
    raise ValueError(f'config.eval_every > 0 needs held-out examples in {cfg.data_dir}: '
                     f'{e or "its test split is empty"} (or set --config.eval_every=0)') from e


def make_eval(cfg, stats=None):
  """evaluate(model, rng) -> the reconstruction errors of the module docstring (``stats``: as motion_dataset)."""
  if stats is None:
    stats = pipeline.training_stats(cfg.data_dir, cfg.normalize, cfg.num_freqs)
  nspec = held_out_batch(cfg, stats=stats)['nspec']
  x = jnp.asarray(nspec.reshape(-1, *nspec.shape[2:]), jnp.float32)
  scale = np.abs(nspec).mean()
  scale_im = np.abs(nspec[..., 1::2]).mean()

  @nnx.jit
  def errors(model, x):
    err = jnp.abs(model(x)[0].astype(jnp.float32) - x)
    return err.mean(), err[..., 1::2].mean()

  def evaluate(model, rng):
    del rng  # the posterior mean: deterministic
    l1, l1_im = (float(v) for v in errors(model, x))
    return {'recon_l1': l1, 'recon_rel_l1': l1 / max(scale, 1e-12), 'recon_rel_l1_im': l1_im / max(scale_im, 1e-12)}

  return evaluate


def make_task(config, facts: dict | None = None) -> Task:
  """The task of ``config``. A vae run's one derived fact (``gid_jax.runs``) is ``norm_stats_json``, the
  normalisation it trains on: a resumed run keeps it although the dataset's statistics may have been refitted
  since (``gid-build --refit-stats``), and an LDM built on the VAE is warned when its data's differ. Runs saved
  before the fact existed (empty ``facts``) use the dataset's, as they did."""
  require_data_dir(config)
  if facts is None:
    facts = {'norm_stats_json': pipeline.training_stats(config.data_dir, config.normalize,
                                                        config.num_freqs).to_json()}
  if set(facts) - {'norm_stats_json'}:
    raise ValueError(f'a vae run derives only norm_stats_json, got {sorted(facts)}')
  stats = norm_lib.NormStats.from_json(facts['norm_stats_json']) if facts else None
  facts = dict(facts)

  def loss_fn(model, batch, rng):
    nspec = batch['nspec']
    x = nspec.reshape(-1, *nspec.shape[2:])  # (B*K) x H x W x 4
    recon, mean, logvar = (a.astype(jnp.float32) for a in model(x, rng))  # the loss in float32
    return vae_lib.vae_loss(x, recon, mean, logvar, grad_weight=config.loss.grad_weight,
                            kl_weight=config.loss.kl_weight, num_scales=config.loss.grad_scales)

  return Task('vae', loss_fn, lambda cfg: motion_dataset(cfg, stats=stats),
              make_eval=lambda cfg: make_eval(cfg, stats), facts=facts)
