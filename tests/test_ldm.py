"""Motion diffusion end to end on tiny configs: VAE -> stage 1 -> stage 2 (frozen) -> sampling.

Sharded training and sampling (8 fake devices, K split over a mesh axis) are checked in test_multihost.py.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gid_jax import runs as gid_runs
from gid_jax.data import pipeline
from gid_jax.diffusion import motion_sampler
from gid_jax.eval import motion_metrics as mm
from gid_jax.motion import normalize as norm_lib
from gid_jax.runs import checkpoints
from gid_jax.training import ldm as ldm_task
from gid_jax.training import loop, metrics
from gid_jax.training import vae as vae_task

sys.path.insert(0, os.path.dirname(__file__))
import ldm_runs as runs_lib  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='module')
def runs(ldm_runs):  # pylint: disable=redefined-outer-name
  return ldm_runs


def _batch(data, n=2):
  return next(iter(pipeline.make_dataset(data, 'train', batch_size=n, shuffle=False, shard_index=0,
                                         shard_count=1)))


def test_stage1_config_is_self_contained(runs):
  cfg = checkpoints.read_config(runs['s1'])
  assert cfg.data_info.num_freqs == 8 and cfg.data_info.num_frames == 40
  assert cfg.latent_scale > 0 and cfg.vae.model.widths == (8, 16)
  assert cfg.model.in_channels == 4 and cfg.model.num_freqs == 8
  assert all(np.isfinite(m['loss']) for m in metrics.read_metrics(runs['s1']))
  # The VAE inside the LDM checkpoint is the trained VAE, untouched by LDM training.
  _, vae = checkpoints.load_vae(runs['vae'])
  _, model = ldm_task.load_ldm(runs['s1'])
  a = jax.tree.leaves(nnx.state(vae, nnx.Param))
  b = jax.tree.leaves(nnx.state(model.vae, nnx.Param))
  assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
  # An LDM run (or export) also serves as the vae_workdir of a new run: it hands out that same VAE.
  vae_cfg, inner = checkpoints.load_vae(runs['s1'])
  assert tuple(vae_cfg.model.widths) == (8, 16) and vae_cfg.normalize == ''
  c = jax.tree.leaves(nnx.state(inner, nnx.Param))
  assert len(a) == len(c) and all(np.array_equal(x, y) for x, y in zip(a, c))


def test_stage2_starts_as_stage1_and_trains_only_frequency_attention(runs, tmp_path):
  s2 = str(tmp_path / 's2')
  c2 = runs_lib.ldm_cfg(runs['data'], 2, stage1_workdir=runs['s1'])
  task = ldm_task.make_task(c2)
  graphdef, rest, state, _ = loop.init_state(c2, task, pretrained=True)
  fresh = nnx.merge(graphdef, state['params'], state['frozen'], rest)
  _, s1 = ldm_task.load_ldm(runs['s1'])
  batch = _batch(runs['data'])
  z0 = s1.encode(jnp.asarray(batch['nspec']))
  x = s1.to_samples(z0)
  t = jnp.full((x.shape[0],), 37, jnp.int32)
  cond = s1.condition(jnp.asarray(batch['image']), z0.shape[2:4])
  np.testing.assert_allclose(fresh.denoise(x, t, cond), s1.denoise(x, t, cond), atol=1e-5)
  paths = [p for p, _ in nnx.to_flat_state(state['params'])]
  assert paths and all('freq_attn' in p for p in paths)

  loop.train(c2, s2, task, progress=False)
  _, trained = ldm_task.load_ldm(s2, ema=False)
  frozen_before = dict(nnx.to_flat_state(nnx.state(s1, nnx.Param)))
  after = dict(nnx.to_flat_state(nnx.state(trained, nnx.Param)))
  assert set(frozen_before) < set(after)
  assert all(np.array_equal(frozen_before[p].get_value(), after[p].get_value()) for p in frozen_before)
  changed = [p for p in after if p not in frozen_before and
             not np.array_equal(after[p].get_value(), dict(nnx.to_flat_state(state['params']))[p].get_value())]
  assert changed  # the new layers did train
  # Stopped at step 2 and resumed, the same run gives the identical next losses.
  resumed = str(tmp_path / 'resumed')
  runs_lib.train_ldm(runs['data'], resumed, 2, stage1_workdir=runs['s1'], num_steps=2,
                     **{'optimizer.decay_steps': c2.num_steps})  # the 4-step run's schedule
  runs_lib.train_ldm(runs['data'], resumed, 2, stage1_workdir=runs['s1'])
  a = {m['step']: m['loss'] for m in metrics.read_metrics(s2)}
  b = {m['step']: m['loss'] for m in metrics.read_metrics(resumed)}
  assert sorted(a) == sorted(b) == [1, 2, 3, 4]
  assert a[3] == pytest.approx(b[3], rel=1e-6) and a[4] == pytest.approx(b[4], rel=1e-6)


def test_a_run_saved_in_the_old_format_loads_and_samples_alike(runs, tmp_path):
  """Runs saved before the facts item (config and facts in one config item) load through runs.migrate."""
  new = checkpoints.export(runs['s1'], str(tmp_path / 'new'))
  old = str(tmp_path / 'old')
  shutil.copytree(new, old)
  step_dir = os.path.join(old, 'checkpoints', str(gid_runs.steps(old)[-1]))
  merged = gid_runs.resolve(gid_runs.read_item(new, gid_runs.steps(new)[-1], 'config'),
                            gid_runs.read_item(new, gid_runs.steps(new)[-1], 'facts'))
  merged['model']['mask_head'] = bool(merged['model']['mask_head'])  # the old type
  with open(os.path.join(step_dir, 'config', 'metadata'), 'w', encoding='utf-8') as f:
    json.dump(merged, f)
  shutil.rmtree(os.path.join(step_dir, 'facts'))
  assert gid_runs.read_item(old, gid_runs.steps(old)[-1], 'facts') is None
  assert checkpoints.read_config(old).to_dict() == checkpoints.read_config(new).to_dict()
  image = (np.asarray(_batch(runs['data'], 1)['image'][0]) * 127.5 + 127.5).round().astype(np.uint8)
  a, b = (motion_sampler.sample_spectral_volume(image, r, num_steps=3, eta=0.0, guidance=1.0, seed=4)
          for r in (new, old))
  np.testing.assert_array_equal(a, b)


def test_evaluation_during_training_of_the_vae_and_the_ldm(runs, tmp_path):
  """eval_every: the EMA model on the fixed held-out batch (the test split), logged under eval/; the last
  evaluation recomputed here from the saved runs with the public sampler and metrics."""
  key = jax.random.fold_in(jax.random.PRNGKey(0), 2 ** 31 - 1)
  vae_w = str(tmp_path / 'vae')
  runs_lib.train_vae(runs['data'], vae_w, eval_every=2, eval_examples=3)
  logged = {(m['step'], k): v for m in metrics.read_metrics(vae_w) for k, v in m.items() if k.startswith('eval/')}
  assert {s for s, _ in logged} == {2, 4} and 0 < logged[4, 'eval/recon_rel_l1'] < 5  # 4 steps of training
  cfg, vae = checkpoints.load_vae(vae_w)
  stats = pipeline.training_stats(runs['data'], cfg.normalize, cfg.num_freqs)
  x = vae_task.held_out_batch(cfg, stats=stats)['nspec']
  x = x.reshape(-1, *x.shape[2:])
  assert logged[4, 'eval/recon_l1'] == pytest.approx(float(np.abs(np.asarray(vae(jnp.asarray(x))[0]) - x).mean()),
                                                     rel=1e-4)
  w = str(tmp_path / 's1')
  runs_lib.train_ldm(runs['data'], w, 1, vae_workdir=runs['vae'], eval_every=4, eval_examples=2, eval_ddim_steps=3,
                     aux_mask_weight=0.3)
  logged = {k: v for m in metrics.read_metrics(w) for k, v in m.items() if k.startswith('eval/')}
  assert set(logged) == {'eval/power_log_err', 'eval/moving_auc', 'eval/moving_iou', 'eval/pixel_spectrum_fd',
                         'eval/amp_moving_ratio', 'eval/amp_still_ratio', 'eval/seconds'}
  sampler = motion_sampler.MotionSampler(w)
  stats = norm_lib.NormStats.from_json(sampler.config.norm_stats_json)
  b = vae_task.held_out_batch(sampler.config, stats=stats)
  pred = norm_lib.denormalize(sampler.sample_normalized(b['image'], key, num_steps=3), stats)
  true = norm_lib.denormalize(b['nspec'], stats)
  assert logged['eval/moving_auc'] == pytest.approx(mm.moving_region_auc(pred, true, 0.1), abs=1e-4)
  assert logged['eval/pixel_spectrum_fd'] == pytest.approx(mm.pixel_spectrum_distance(pred, true), rel=1e-3)


def test_k_and_normalisation_ablations_train_from_the_same_dataset(runs, tmp_path):
  # "K = 3" and "w/o adaptive norm" from the K = 8 adaptive dataset; stage 2 inherits both from stage 1.
  s1, s2 = str(tmp_path / 's1'), str(tmp_path / 's2')
  runs_lib.train_ldm(runs['data'], s1, 1, vae_workdir=runs['vae'], num_steps=2, num_freqs=3,
                     normalize='image_size')
  runs_lib.train_ldm(runs['data'], s2, 2, stage1_workdir=s1, num_steps=2)
  for w in (s1, s2):
    cfg = checkpoints.read_config(w)
    stats = json.loads(cfg.norm_stats_json)
    assert cfg.data_info.num_freqs == 3 and cfg.model.num_freqs == 3 and cfg.normalize == 'image_size'
    assert stats['mode'] == 'image_size' and np.allclose(stats['scales'], [[64, 64, 40, 40]] * 3)
  spec = motion_sampler.MotionSampler(s2).sample(np.zeros((40, 64, 3), np.uint8), num_steps=2, seed=0)
  assert spec.shape == (3, 40, 64, 4) and np.isfinite(spec).all()
  batch = next(iter(pipeline.make_dataset(runs['data'], 'train', batch_size=1, shuffle=False, shard_index=0,
                                          shard_count=1, stats=pipeline.training_stats(runs['data'], '', 3))))
  full = _batch(runs['data'], 1)
  np.testing.assert_array_equal(batch['nspec'], full['nspec'][:, :3])
  with pytest.raises(ValueError, match=r'num_freqs must be in \[1, 8\]'):
    pipeline.training_stats(runs['data'], '', 9)
  with pytest.raises(ValueError, match='normalize'):
    pipeline.training_stats(runs['data'], 'log', 0)
  with pytest.raises(ValueError, match="num_freqs is 5 but the stage-1 run used 3"):
    runs_lib.train_ldm(runs['data'], str(tmp_path / 's2b'), 2, stage1_workdir=s1, num_freqs=5)


def test_a_vae_keeps_the_statistics_it_trained_on(runs, tmp_path, caplog):
  # A VAE run records the normalisation it trains on (a fact): resumed after the dataset's statistics were
  # refitted (gid-build --refit-stats) it keeps them, and a stage 1 on the refitted data is warned.
  from gid_jax.data import build  # pylint: disable=g-import-not-at-top
  data, vae = str(tmp_path / 'data'), str(tmp_path / 'vae')
  shutil.copytree(runs['data'], data)
  runs_lib.train_vae(data, vae, num_steps=2)
  fitted = pipeline.load_stats(data)
  assert norm_lib.NormStats.from_json(checkpoints.read_run(vae)[1].norm_stats_json) == fitted
  assert build.main(['--out', data, '--refit-stats', '--config=configs/data.py:size=tiny',
                     '--config.normalize.min_magnitude=0.05']) == 0
  assert pipeline.load_stats(data) != fitted
  from gid_jax import train as train_cli  # pylint: disable=g-import-not-at-top
  assert train_cli.main(['--config=configs/vae.py:size=tiny', f'--config.data_dir={data}', '--config.num_steps=4',
                         '--config.model.widths=(8,16)', '--config.batch_size=2', '--config.log_every=1',
                         '--config.checkpoint_every=2', '--workdir', vae]) == 0  # resumed as a user would
  assert gid_runs.steps(vae)[-1] == 4
  assert norm_lib.NormStats.from_json(checkpoints.read_run(vae)[1].norm_stats_json) == fitted
  caplog.set_level('WARNING', logger='gid_jax')
  ldm_task.make_task(runs_lib.ldm_cfg(data, 1, vae_workdir=vae))  # a fresh stage-1 run derives its facts here
  assert 'normalised with other statistics' in caplog.text
  caplog.clear()
  ldm_task.make_task(runs_lib.ldm_cfg(runs['data'], 1, vae_workdir=runs['vae']))
  assert 'normalised with other statistics' not in caplog.text


def test_a_model_conditioned_on_a_finer_image_than_its_motion(runs, tmp_path):
  # Two scenes at 128 x 80: a dataset at the tiny size (64 x 40) with image_scale 1 and 2.
  from gid_jax.data import build, synthetic, video  # pylint: disable=g-import-not-at-top
  scenes = str(tmp_path / 'scenes')
  synthetic.generate(scenes, 2, seed=3, width=128, height=80, num_frames=50, progress=False)
  d1, d2 = runs_lib.build_data(scenes, str(tmp_path / 'd1')), runs_lib.build_data(scenes, str(tmp_path / 'd2'),
                                                                                  image_scale=2)
  s1, s2 = pipeline.data_source(d1, 'train'), pipeline.data_source(d2, 'train')
  assert len(s1) == len(s2) > 0
  vid = s2[0]['video_id'].decode() if isinstance(s2[0]['video_id'], bytes) else s2[0]['video_id']
  first = next(video.iter_frames(os.path.join(scenes, f'{vid}.mp4'), 30.0))
  for i in range(len(s1)):
    a, b = s1[i], s2[i]
    assert a['video_id'] == b['video_id'] and a['start_frame'] == b['start_frame']
    np.testing.assert_array_equal(a['spectral_volume'], b['spectral_volume'])  # the same motion
    assert a['image'].shape == (40, 64, 3) and b['image'].shape == (80, 128, 3)
    np.testing.assert_array_equal(video.center_crop_resize(b['image'], 64, 40), a['image'])
  assert s2[0]['start_frame'] == 0
  np.testing.assert_array_equal(s2[0]['image'], first)  # the decoded frame itself
  with pytest.raises(build.BuildError, match='image_scale'):
    runs_lib.build_data(scenes, str(tmp_path / 'bad'), image_scale=0)
  # Stage 1 sees it space-to-depth: f = the VAE's 2 times the scale 2, 3 f^2 = 48 channels.
  w = str(tmp_path / 'hr')
  runs_lib.train_ldm(d2, w, 1, vae_workdir=runs['vae'], num_steps=2, **{'model.cond_mode': 'space_to_depth'})
  cfg = checkpoints.read_config(w)
  assert cfg.data_info.image_scale == 2 and cfg.model.cond_channels == 48
  sampler = motion_sampler.MotionSampler(w)
  assert sampler.image_scale == 2 and sampler.image_size((40, 64)) == (80, 128)
  spec = sampler.sample(s2[0]['image'], num_steps=2, seed=0)
  assert spec.shape == (8, 40, 64, 4) and np.isfinite(spec).all()
  # A photo goes to the image size of the model's motion size (gid-sample's path).
  from gid_jax import animate  # pylint: disable=g-import-not-at-top
  opts = animate.Options(steps=2)
  got = animate.sample_motion(sampler, np.asarray(first), opts)
  assert got.shape == (8, 40, 64, 4)
  # Images of another scale are brought to the model's (the evaluations' path).
  np.testing.assert_array_equal(sampler.fit_images(np.stack([s2[0]['image']]), (40, 64))[0], s2[0]['image'])
  assert sampler.fit_images(np.stack([s2[0]['image']]), (20, 32)).shape == (1, 40, 64, 3)
  # The Table-1 evaluation keeps first frames at 4x its size and gives each run its own image size.
  import ml_collections  # pylint: disable=g-import-not-at-top
  from gid_jax import evaluate  # pylint: disable=g-import-not-at-top
  set_cfg = ml_collections.ConfigDict({'videos': scenes, 'max_videos': 0, 'clips_per_video': 1,
                                       'flow': 'ground_truth'})
  es = evaluate.load_set('s', set_cfg, ml_collections.ConfigDict({'size': 'tiny'}))
  assert es.first.shape == (2, 160, 256, 3) and es.images.shape == (2, 40, 64, 3)
  sampling = ml_collections.ConfigDict({'seed': 0, 'num_steps': 2, 'eta': 0.0, 'guidance': 0.0})
  got = evaluate.sample_ldm(w, es, sampling, batch=2)
  x = sampler.fit_images(es.first, (40, 64)).astype(np.float32) / 127.5 - 1.0
  want = norm_lib.denormalize(sampler.sample_normalized(x, jax.random.PRNGKey(0), num_steps=2), sampler.stats)
  np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6)
  assert evaluate.sample_ldm(runs['s1'], es, sampling, batch=2).shape == (2, 8, 40, 64, 4)  # scale 1: es.images
  # Stage 2 must see the images as its stage 1 did.
  with pytest.raises(ValueError, match='image_scale=2, this dataset 1'):
    runs_lib.train_ldm(d1, str(tmp_path / 'bad2'), 2, stage1_workdir=w, **{'model.cond_mode': 'space_to_depth'})


def test_sampling_is_seeded_and_in_pixel_units(runs):
  image = (np.asarray(_batch(runs['data'], 1)['image'][0]) * 127.5 + 127.5).round().astype(np.uint8)
  a = motion_sampler.sample_spectral_volume(image, runs['s1'], num_steps=4, eta=0.0, guidance=0.0, seed=1)
  b = motion_sampler.sample_spectral_volume(image, runs['s1'], num_steps=4, eta=0.0, guidance=0.0, seed=1)
  c = motion_sampler.sample_spectral_volume(image, runs['s1'], num_steps=4, eta=1.0, guidance=1.5, seed=2)
  assert a.shape == (8, 40, 64, 4) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert np.isfinite(c).all() and not np.allclose(a, c)
  sampler = motion_sampler.load(runs['s1'])
  with pytest.raises(ValueError, match='multiples of'):
    sampler.sample(np.zeros((41, 64, 3), np.uint8), num_steps=2)


def test_auxiliary_moving_mask_loss(runs, tmp_path):
  w = str(tmp_path / 'mask')
  runs_lib.train_ldm(runs['data'], w, 1, vae_workdir=runs['vae'], num_steps=2, aux_mask_weight=0.5,
                     aux_mask_at='middle')
  cfg = checkpoints.read_config(w)
  assert cfg.model.mask_head == 'middle'
  logged = metrics.read_metrics(w)
  # loss = mse + 0.5 bce, both logged; BCE of soft targets is positive.
  assert logged and all(m['mask_bce'] > 0 for m in logged)
  for m in logged:
    assert m['loss'] == pytest.approx(m['mse'] + 0.5 * m['mask_bce'], rel=1e-5)
  # The target against a float64 NumPy reference: pixels moving more than the threshold, pooled per latent pixel.
  stats = pipeline.training_stats(runs['data'])
  src = pipeline.data_source(runs['data'], 'train')
  vol = np.stack([np.asarray(src[i]['spectral_volume'], np.float64) for i in range(3)])
  nspec = jnp.asarray(np.stack([norm_lib.normalize(v, stats) for v in vol]))
  threshold = float(np.median(mm.motion_rms(vol)))  # half the pixels move: a real test of the pooling
  got = np.asarray(ldm_task.moving_fraction(nspec, stats, threshold, (10, 16)))
  moving = mm.motion_rms(vol) > threshold
  want = moving.reshape(3, 10, 4, 16, 4).mean(axis=(2, 4))
  assert 0 < want.mean() < 1
  np.testing.assert_array_equal(got, want)
  # Stage 2 on it builds the same head (loaded, frozen) and samples; a stage-1 run without it cannot have one.
  s2 = str(tmp_path / 's2')
  runs_lib.train_ldm(runs['data'], s2, 2, stage1_workdir=w, num_steps=2)
  assert checkpoints.read_config(s2).model.mask_head == 'middle'
  assert motion_sampler.MotionSampler(s2).sample(np.zeros((40, 64, 3), np.uint8), num_steps=2, seed=0).shape[1:] == (40, 64, 4)
  with pytest.raises(ValueError, match='needs a stage-1 run trained with aux_mask_weight'):
    runs_lib.train_ldm(runs['data'], str(tmp_path / 'bad2'), 2, stage1_workdir=runs['s1'], aux_mask_weight=1.0)
  _check_mask_gate(w, runs['s1'], tmp_path)
  for bad in (-1.0, float('inf')):
    with pytest.raises(ValueError, match='aux_mask_weight must be a finite number >= 0'):
      runs_lib.train_ldm(runs['data'], str(tmp_path / 'bad'), 1, vae_workdir=runs['vae'], aux_mask_weight=bad)
  with pytest.raises(ValueError, match='aux_mask_px must be a finite number > 0'):
    runs_lib.train_ldm(runs['data'], str(tmp_path / 'bad'), 1, vae_workdir=runs['vae'], aux_mask_px=0.0)
  with pytest.raises(ValueError, match='aux_mask_at must be one of'):
    runs_lib.train_ldm(runs['data'], str(tmp_path / 'bad'), 1, vae_workdir=runs['vae'], aux_mask_at='first')


def _upsample_linear(a_HxW, h, w):
  """Bilinear upsampling with half-pixel centres and clamped edges, float64 (jax.image.resize 'linear')."""
  def axis(n_in, n_out):
    x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    x0 = np.floor(x).astype(int)
    return np.clip(x0, 0, n_in - 1), np.clip(x0 + 1, 0, n_in - 1), x - x0
  r0, r1, fr = axis(a_HxW.shape[0], h)
  c0, c1, fc = axis(a_HxW.shape[1], w)
  rows = a_HxW[r0] * (1 - fr)[:, None] + a_HxW[r1] * fr[:, None]
  return rows[:, c0] * (1 - fc) + rows[:, c1] * fc


def _check_mask_gate(with_head, without_head, tmp_path):
  """The mask gate against a float64 NumPy reference built from the model's own head logits."""
  from gid_jax import export  # pylint: disable=g-import-not-at-top
  s = motion_sampler.MotionSampler(with_head)
  rng = np.random.default_rng(int.from_bytes(os.urandom(4), 'little'))
  x = jnp.asarray(rng.uniform(-1, 1, (1, 40, 64, 3)), jnp.float32)
  key = jax.random.PRNGKey(int(rng.integers(1 << 30)))
  p = np.asarray(s.moving_probability(x, jax.random.fold_in(key, 1)), np.float64)
  model = s.model
  lhw = (40 // model.vae.downsample, 64 // model.vae.downsample)
  cond = model.condition(x, lhw)
  probs = []
  for k in jax.random.split(jax.random.fold_in(key, 1), motion_sampler.GATE_DRAWS):
    z = model.to_samples(jax.random.normal(k, (1, model.num_freqs, *lhw, model.vae_latent_channels)))
    t = jnp.full((z.shape[0],), s.sched.num_timesteps - 1, jnp.int32)
    logits = np.asarray(model.denoise(z, t, cond, with_mask=True)[1], np.float64)  # (K) x h x w
    probs.append(1.0 / (1.0 + np.exp(-logits)))
  want = _upsample_linear(np.mean(probs, axis=(0, 1)), 40, 64)
  np.testing.assert_allclose(p[0], want, rtol=1e-5, atol=1e-6)
  plain = s.sample_normalized(x, key, num_steps=2)
  np.testing.assert_array_equal(s.sample_normalized(x, key, num_steps=2, mask_gate=0.0), plain)
  gate = float(np.quantile(want, 0.5))  # half the pixels keep their motion, the others fade
  gated = np.asarray(norm_lib.denormalize(s.sample_normalized(x, key, num_steps=2, mask_gate=gate), s.stats),
                     np.float64)
  ref = np.asarray(norm_lib.denormalize(plain, s.stats), np.float64) * np.minimum(1.0, want / gate)[None, None, ..., None]
  np.testing.assert_allclose(gated, ref, rtol=1e-4, atol=1e-7)
  with pytest.raises(ValueError, match=r'mask_gate must be in \[0, 1\]'):
    s.sample_normalized(x, key, num_steps=2, mask_gate=1.5)
  # On a device mesh (4 fake CPU devices, the batch split) the gated sample is the single-device one.
  script = (
      'import sys, jax, numpy as np\n'
      'from gid_jax import sharding\nfrom gid_jax.diffusion import motion_sampler\nfrom gid_jax.runs import checkpoints\n'
      'run, gate = sys.argv[1], float(sys.argv[2])\n'
      'x = np.random.default_rng(0).uniform(-1, 1, (4, 40, 64, 3)).astype(np.float32)\n'
      'mesh = motion_sampler.MotionSampler(run, mesh=sharding.make_mesh(checkpoints.read_config(run)))\n'
      'a = mesh.sample_normalized(x, jax.random.PRNGKey(0), num_steps=2, mask_gate=gate)\n'
      'b = motion_sampler.MotionSampler(run).sample_normalized(x, jax.random.PRNGKey(0), num_steps=2, mask_gate=gate)\n'
      'print(jax.device_count(), float(np.abs(np.asarray(a) - np.asarray(b)).max()))\n')
  flags = f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count=4'.strip()
  r = subprocess.run([sys.executable, '-c', script, with_head, str(gate)], capture_output=True, text=True,
                     env=dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS='cpu'))
  assert r.returncode == 0, r.stderr[-2000:]
  devices, diff = r.stdout.split()
  assert int(devices) == 4 and float(diff) < 1e-5, r.stdout
  with pytest.raises(ValueError, match='needs a model trained with the auxiliary moving-mask loss'):
    motion_sampler.MotionSampler(without_head).sample_normalized(x, key, num_steps=2, mask_gate=0.5)
  # An export stores the default every sampling path reads; a run without the head cannot have one.
  out = str(tmp_path / 'gated')
  assert export.main(['--workdir', with_head, '--out', out, '--mask-gate', str(gate), '--no-progress']) == 0
  gs = motion_sampler.MotionSampler(out)
  assert gs.default_mask_gate() == pytest.approx(gate)
  np.testing.assert_allclose(np.asarray(gs.sample_normalized(x, key, num_steps=2)),
                             np.asarray(s.sample_normalized(x, key, num_steps=2, mask_gate=gate)), rtol=1e-5, atol=1e-6)
  assert export.main(['--workdir', without_head, '--out', str(tmp_path / 'g2'), '--mask-gate', '0.5']) == 2


def test_train_cli_rejects_a_missing_vae(runs, tmp_path):
  r = subprocess.run([sys.executable, '-m', 'gid_jax.train', '--config=configs/ldm.py:size=tiny',
                      f'--config.data_dir={runs["data"]}', f'--workdir={tmp_path / "w"}'],
                     capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert r.returncode == 2 and 'vae_workdir is empty' in r.stderr.strip().splitlines()[-1]
