"""Smoke test: the benchmark command runs and prints its table (numbers are for docs, not asserted), and the
one structural property a benchmark measures: sharding K costs no duplicated compute."""

import json
import os
import subprocess
import sys

from benchmarks import extraction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_extraction_benchmark_runs():
  lines = []
  rows = extraction.run('tiny', scenes=1, frames=50, out=lines.append)
  assert [r['targets'] for r in rows] == [label for label, _ in extraction.TARGETS]
  assert all(r['clips_per_min'] > 0 and r['epe'] < 1.0 for r in rows)
  assert any('| dis/medium, lab, video size (default) |' in l for l in lines)
  new = rows[4]
  assert new['probe_bin_exact'] and abs(new['probe_amplitude_ratio'] - 1) < 0.2


def test_input_benchmark_runs_with_grain_workers():
  """Also the regression test of grain workers under our argparse commands (absl flags were unparsed)."""
  from benchmarks import input as input_bench  # pylint: disable=g-import-not-at-top
  r = input_bench.run(scenes=1, batch=2, batches=2, workers=(0, 2))
  assert [row['workers'] for row in r['rows']] == [0, 2] and all(row['examples_per_s'] > 0 for row in r['rows'])
  assert r['need_total'] == 64 / 0.2 and '| 2 |' in input_bench.report(r)


def test_render_benchmark_runs():
  from benchmarks import render
  lines = []
  rows = render.run(frames=6, width=32, height=24, sizes=('tiny',), out=lines.append)
  assert [r['renderer'] for r in rows] == ['fallback', 'tiny'] and all(r['fps'] > 0 for r in rows)


def test_one_command_runs_benchmarks_in_processes_and_prints_one_table(capsys, tmp_path):
  import json

  from benchmarks import __main__ as bench
  assert bench.main(['--quick', '--only', 'representation', '--json', str(tmp_path / 'b.json')]) == 0
  out = capsys.readouterr().out
  table = out[out.index('## All benchmarks'):]
  rows = [l for l in table.splitlines() if l.startswith('| representation')]
  assert any('NumPy float64 rFFT' in l for l in rows)
  peaks = {float(l.rstrip(' |').rsplit('|', 1)[1]) for l in rows}
  assert len(peaks) == 1 and peaks.pop() > 50  # MiB: the benchmark's own process, JAX loaded
  assert set(json.loads((tmp_path / 'b.json').read_text())['rows']) == {'representation'}
  assert bench.main(['--only', 'nope']) == 2
  # The summary of every benchmark's rows (as the full run gives them) has a reference and a ratio.
  rows = bench.summarize('render', [{'renderer': 'fallback', 'seconds': 1.0, 'fps': 100.0},
                                    {'renderer': 'tiny', 'seconds': 10.0, 'fps': 10.0}])
  assert rows[1] == ('render, tiny', 10.0, 'frames/s', 'RGB splat fallback', 100.0, 0.1)


def test_diffusion_benchmark_configs_build_and_trace():
  # Every benchmarked config traces a whole train step (shapes only: no initialiser or step is compiled): the
  # benchmark's configs and facts (training's own model_facts) stay in step with what training builds (e.g. the
  # conditioning channels).
  import jax
  import jax.numpy as jnp

  from benchmarks import diffusion
  from gid_jax.training import loop
  for name, (c, task) in diffusion._configs('tiny').items():
    graphdef, rest, state, tx = loop.init_state(c, task, abstract=True)
    step = loop.make_train_step(graphdef, rest, tx, task, 0.99)
    batch = jax.tree.map(jnp.asarray, diffusion._batch(c, 2))
    _, metrics = jax.eval_shape(step, state, batch, jax.random.PRNGKey(0))
    assert metrics['loss'].shape == (), name


def test_frequency_sharding_costs_the_ideal_per_device():
  """benchmarks.scale on the tiny stage-2 step, 8 fake devices: with K split over freq, every device computes
  its own share only (within 5% of the one-device cost / 8), with 2 or 4 examples per batch shard (the
  benchmark itself also runs the meshes without a freq split)."""
  code = ('import json\nfrom benchmarks import scale\n'
          'one = scale.analyse(None, 1, "float32", "", "tiny")["tflops"]\n'
          'rows = [scale.analyse(m, 8, "float32", "", "tiny") for m in [(4, 1, 2), (2, 1, 4)]]\n'
          'print(json.dumps([r["tflops"] / (one * 8 / 8) for r in rows]))\n')
  # The suite's XLA flags (conftest.py: a faster-compiling backend level; the FLOPs are the HLO's) + 8 devices.
  flags = f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count=8'.strip()
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True,
                       cwd=ROOT)
  ratios = json.loads(out.stdout.strip().splitlines()[-1])
  assert all(0.95 <= r <= 1.05 for r in ratios), ratios
