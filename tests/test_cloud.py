"""Run folders in object storage: training, resuming, metrics, TensorBoard events, evaluation during training,
export and the Table-1 evaluation with ``gs://`` paths, against a local GCS emulator (tests/gcs_emulator.py),
through the commands a user runs.

Datasets and videos in a bucket are read from a per-host local mirror (``gid_jax.fileio.download``):
ArrayRecord's C++ reader, given a ``gs://`` path, hung here.
"""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def gcs():
  """The emulator on a free port, and the environment that points gcsfs (etils.epath), google-cloud-storage
  (tensorboardX) and tensorstore (orbax) at it."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'tests', 'gcs_emulator.py'), str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  for _ in range(200):
    try:
      socket.create_connection(('localhost', port), 0.2).close()
      break
    except OSError:
      time.sleep(0.1)
  url = f'http://localhost:{port}'
  env = dict(os.environ, STORAGE_EMULATOR_HOST=url, TENSORSTORE_GCS_HTTP_URL=url,
             GOOGLE_AUTH_TOKEN_FOR_TESTING='test', GOOGLE_CLOUD_PROJECT='test', PYTHONPATH=ROOT)
  yield env
  proc.terminate()
  proc.wait()


def _run(env, *args):
  p = subprocess.run([sys.executable, '-m', *args, '--no-progress'], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=600, check=False)
  assert p.returncode == 0, p.stderr[-3000:]
  return p


def _read(env, code):
  """Run ``code`` in a subprocess with the emulator's environment; its last stdout line."""
  p = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                     check=False)
  assert p.returncode == 0, p.stderr[-3000:]
  return p.stdout.strip().splitlines()[-1]


def test_train_resume_evaluate_and_export_in_gcs(gcs, ldm_runs, tmp_path):
  train = ['gid_jax.train', '--config=configs/vae.py:size=tiny', f'--config.data_dir={ldm_runs["data"]}',
           '--config.model.widths=(8,16)', '--config.batch_size=2', '--config.log_every=1',
           '--config.checkpoint_every=2', '--config.eval_every=2', '--config.eval_examples=2']
  _run(gcs, *train, '--workdir', 'gs://gid/vae', '--config.num_steps=4')
  _run(gcs, *train, '--workdir', 'gs://gid/vae', '--config.num_steps=6')  # resumes from gs://gid/vae step 4
  local = str(tmp_path / 'vae')
  _run(gcs, *train, '--workdir', local, '--config.num_steps=6')  # uninterrupted, on the local disk
  from gid_jax.training import metrics  # pylint: disable=g-import-not-at-top
  code = ('import json; from gid_jax.training import metrics; '
          'print(json.dumps(metrics.read_metrics("gs://gid/vae")))')
  import json  # pylint: disable=g-import-not-at-top
  remote = json.loads(_read(gcs, code))
  loss = lambda ms: {m['step']: m['loss'] for m in ms if 'loss' in m}
  assert sorted(loss(remote)) == [1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose([loss(remote)[s] for s in range(1, 7)],
                             [loss(metrics.read_metrics(local))[s] for s in range(1, 7)], rtol=1e-5)
  assert [m['step'] for m in remote if 'eval/recon_l1' in m] == [2, 4, 6]
  names = _read(gcs, 'from etils import epath; p = epath.Path("gs://gid/vae"); '
                     'print(sorted(q.name for q in p.iterdir()), sorted(q.name for q in (p / "checkpoints").iterdir()), '
                     'len(list((p / "tensorboard").iterdir())))')
  assert names == "['checkpoints', 'metrics.jsonl', 'tensorboard'] ['2', '4', '6'] 2"  # two runs, two event files
  # Export from gs:// to gs://; the export loads with the weights of the local run.
  _run(gcs, 'gid_jax.export', '--workdir', 'gs://gid/vae', '--out', 'gs://gid/export')
  p = subprocess.run([sys.executable, '-m', 'gid_jax.export', '--workdir', 'gs://gid/vae', '--out',
                      'gs://gid/vae', '--no-progress'], cwd=ROOT, env=gcs, capture_output=True, text=True,
                     check=False)
  assert p.returncode == 2 and '--out must differ from --workdir' in p.stderr
  code = ('import jax, numpy as np; from flax import nnx; from gid_jax.runs import checkpoints; '
          f'a = checkpoints.load_vae("gs://gid/export")[1]; b = checkpoints.load_vae("{local}")[1]; '
          'la, lb = (jax.tree.leaves(nnx.state(m, nnx.Param)) for m in (a, b)); '
          'print(max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(la, lb)))')
  assert float(_read(gcs, code)) < 1e-5


def test_the_table1_evaluation_reads_a_run_and_writes_its_report_in_gcs(gcs, ldm_runs, synthetic_dir):
  """gid-export from a local run into the bucket, then gid-evaluate with that run and its out_dir in the bucket;
  run again, the features come from the bucket's cache (same table)."""
  _run(gcs, 'gid_jax.export', '--workdir', ldm_runs['s1'], '--out', 'gs://gid/s1')
  one = subprocess.run([sys.executable, '-m', 'gid_jax.evaluate', '--config=configs/eval.py:size=tiny',
                        '--config.out_dir=gs://gid/eval_one', '--config.order=repeat_i0', '--config.renderer=none',
                        f'--config.train_data={ldm_runs["data"]}', f'--config.sets.synthetic.videos={synthetic_dir}',
                        '--config.sets.synthetic.max_videos=1', '--config.sets.real.videos=', '--no-progress'],
                       cwd=ROOT, env=gcs, capture_output=True, text=True, timeout=300, check=False)
  assert one.returncode == 2 and 'the video metrics need at least 2' in one.stderr, one.stderr[-2000:]
  args = ['gid_jax.evaluate', '--config=configs/eval.py:size=tiny', '--config.out_dir=gs://gid/eval',
          '--config.methods.ours.run=gs://gid/s1', '--config.order=ours,repeat_i0', '--config.renderer=none',
          f'--config.train_data={ldm_runs["data"]}', f'--config.sets.synthetic.videos={synthetic_dir}',
          '--config.sets.synthetic.max_videos=2', '--config.sets.real.videos=', '--config.sampling.num_steps=2',
          '--config.fvd_frames=(16,)', '--config.fid_frame_stride=10', '--config.sliding_fid_window=20']
  _run(gcs, *args)
  code = ('import json; from etils import epath; p = epath.Path("gs://gid/eval"); '
          'r = json.loads((p / "results.json").read_text()); '
          'print(json.dumps([r["sets"]["synthetic"]["methods"]["ours"]["fvd"], "| Repeat I_0 |" in '
          '(p / "results.md").read_text(), sorted([q.name, q.stat().mtime] for q in (p / "cache").iterdir())]))')
  import json  # pylint: disable=g-import-not-at-top
  fvd, has_row, cache = json.loads(_read(gcs, code))
  assert np.isfinite(fvd) and has_row and len(cache) == 3  # the real clips' features, ours, repeat I_0
  time.sleep(1.5)  # object times are in seconds: a rewritten cache entry would show a later one
  _run(gcs, *args)  # again, no --overwrite: an interrupted or extended evaluation reads the bucket's cache
  assert json.loads(_read(gcs, code)) == [fvd, True, cache]  # same table, no cache entry written again


def test_build_into_gcs_and_train_from_it(gcs, ldm_runs, synthetic_dir, tmp_path):
  """gid-build --out gs://...: built in the local mirror and uploaded; training with that data_dir reads it
  through a fresh host's mirror (GID_JAX_CACHE) and sees the same examples as the local dataset."""
  env = dict(gcs, GID_JAX_CACHE=str(tmp_path / 'builder_host'))
  _run(env, 'gid_jax.data.build', '--videos', synthetic_dir, '--out', 'gs://gid/data', '--config=configs/data.py:size=tiny',
       '--config.flow.method=ground_truth', '--config.filters.camera_motion_px=0', '--config.frame_pairs_per_clip=0')
  train = ['gid_jax.train', '--config=configs/vae.py:size=tiny', '--config.model.widths=(8,16)',
           '--config.batch_size=2', '--config.log_every=1', '--config.num_steps=2']
  _run(dict(gcs, GID_JAX_CACHE=str(tmp_path / 'trainer_host')), *train, '--config.data_dir=gs://gid/data',
       '--workdir', 'gs://gid/vae_on_gcs_data')
  assert os.path.isdir(tmp_path / 'trainer_host' / 'mirror' / 'gs' / 'gid' / 'data' / 'gid_motion')
  local = str(tmp_path / 'local')
  _run(gcs, *train, f'--config.data_dir={ldm_runs["data"]}', '--workdir', local)
  import json  # pylint: disable=g-import-not-at-top
  from gid_jax.training import metrics  # pylint: disable=g-import-not-at-top
  remote = json.loads(_read(gcs, 'import json; from gid_jax.training import metrics; '
                                 'print(json.dumps(metrics.read_metrics("gs://gid/vae_on_gcs_data")))'))
  np.testing.assert_allclose([m['loss'] for m in remote], [m['loss'] for m in metrics.read_metrics(local)],
                             rtol=1e-6)
  p = subprocess.run([sys.executable, '-m', 'gid_jax.train', '--config=configs/vae.py:size=tiny',
                      '--config.data_dir=gs://gid/nothing', '--workdir', 'gs://gid/refused'], cwd=ROOT, env=gcs,
                     capture_output=True, text=True, timeout=300, check=False)
  assert p.returncode == 2 and 'gs://gid/nothing: no such folder' in p.stderr
