"""Spectral VAE training task: every example's K normalised frequency slices are independent samples."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gid_jax.data import pipeline
from gid_jax.models import vae as vae_lib
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


def make_task(config, facts: dict | None = None) -> Task:
  """The task of ``config``; a vae run derives no facts (``gid_jax.runs``): ``facts`` must be empty."""
  if facts:
    raise ValueError(f'a vae run has no derived facts, got {sorted(facts)}')
  require_data_dir(config)

  def loss_fn(model, batch, rng):
    nspec = batch['nspec']
    x = nspec.reshape(-1, *nspec.shape[2:])  # (B*K) x H x W x 4
    recon, mean, logvar = (a.astype(jnp.float32) for a in model(x, rng))  # the loss in float32
    return vae_lib.vae_loss(x, recon, mean, logvar, grad_weight=config.loss.grad_weight,
                            kl_weight=config.loss.kl_weight, num_scales=config.loss.grad_scales)

  return Task('vae', loss_fn, motion_dataset)
