"""Tiny VAE / LDM runs shared by the LDM tests (conftest.ldm_runs builds the shared ones)."""

from __future__ import annotations

import os

from gid_jax.configs import data as data_config
from gid_jax.configs import ldm as ldm_config
from gid_jax.configs import ldm_freq as ldm_freq_config
from gid_jax.configs import ldm_volume as ldm_volume_config
from gid_jax.configs import override
from gid_jax.configs import vae as vae_config
from gid_jax.data import build
from gid_jax.training import ldm as ldm_task
from gid_jax.training import loop
from gid_jax.training import vae as vae_task


def build_data(videos: str, out: str, **kw) -> str:
  c = data_config.get_config('size=tiny')
  override(c, **{'flow.method': 'ground_truth', 'filters.camera_motion_px': 0.0, 'frame_pairs_per_clip': 0, **kw})
  build.build(videos, out, c, progress=False)
  return out


def vae_cfg(data_dir, **kw):
  c = vae_config.get_config('size=tiny')
  c.data_dir = data_dir
  c.model.widths = (8, 16)
  c.batch_size = 2
  c.num_steps = 4
  c.log_every = 1
  c.checkpoint_every = 2
  return override(c, **kw)


def ldm_cfg(data_dir, stage=1, **kw):
  module = {1: ldm_config, 2: ldm_freq_config, 'volume': ldm_volume_config}[stage]
  c = module.get_config('size=tiny')
  c.data_dir = data_dir
  c.model.widths = (8, 16)
  c.model.heads = 2
  c.batch_size = 2
  c.num_steps = 4
  c.log_every = 1
  c.checkpoint_every = 2
  c.optimizer.warmup_steps = 1
  c.diffusion.num_timesteps = 100
  return override(c, **kw)


def train_vae(data_dir, workdir, **kw):
  c = vae_cfg(data_dir, **kw)
  return loop.train(c, workdir, vae_task.make_task(c), progress=False)


def train_ldm(data_dir, workdir, stage=1, **kw):
  c = ldm_cfg(data_dir, stage, **kw)
  return loop.train(c, workdir, ldm_task.make_task(c), progress=False)

