"""Run every benchmark of the project and print one table: ``python -m benchmarks [--quick] [--only a,b]``.

Each benchmark runs in its own process (so that its peak memory is its own: ``os.wait4``'s max resident set
size) and prints its detailed tables as it goes; at the end one summary table lists every headline number
with the reference measured in the same run and their ratio, the wall time and the peak memory of each
benchmark. ``--quick`` runs each at its smallest size (a smoke test); the default sizes are the ones
docs/RESULTS.md reports. ``--json PATH`` also writes every row. Each benchmark is also runnable alone:
``python -m benchmarks.<name>``.
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

# (module, full-size kwargs, quick kwargs).
BENCHMARKS = (
    ('representation', {}, {'t_': 40, 'k': 8, 'h': 40, 'w': 64}),
    ('extraction', {'size': 'small', 'scenes': 2, 'frames': 180}, {'size': 'tiny', 'scenes': 1, 'frames': 60}),
    ('splat', {}, {'sizes': ((1, 160, 256, 16),), 'repeats': 3}),
    ('render', {}, {'frames': 20, 'width': 64, 'height': 40, 'sizes': ('tiny',)}),
    ('diffusion', {}, {'steps': 1, 'sample_steps': 5, 'paper': False}),
    ('loops', {}, {'num_frames': 30, 'steps': 2}),
    ('input', {}, {'scenes': 1, 'batch': 2, 'batches': 2, 'workers': (0, 2)}),
)


def _ratio(a, b):
  return None if a is None or b is None or not b else a / b


def summarize(name: str, result) -> list[tuple]:
  """(measure, value, unit, reference, reference value, ratio) rows: the headline numbers of a benchmark."""
  rows = []
  if name == 'representation':
    rows.append(('to_spectral_volume', result['fwd_ms'], 'ms', 'NumPy float64 rFFT', result['numpy_ms'],
                 _ratio(result['numpy_ms'], result['fwd_ms'])))
    rows.append(('max error vs float64', result['fwd_err'], 'px', '', None, None))
  elif name == 'extraction':
    ref = next((r for r in result if '(old default)' in r['targets']), None)
    for r in result:
      if '(default)' in r['targets'] or r['targets'].startswith('farneback'):
        rows.append((f'{r["targets"]} targets (EPE {r["epe"]:.3f} px, probe amplitude '
                     f'{r["probe_amplitude_ratio"]:.2f})', r['clips_per_min'], 'clips/min', 'old default targets',
                     ref and ref['clips_per_min'], _ratio(r['clips_per_min'], ref and ref['clips_per_min'])))
  elif name == 'splat':
    for r in result:
      what = f'softmax splat {r["size"]} {r["pass"]}'
      rows.append((what, r['jax_ms'], 'ms', 'torch index_add_', r['torch_ms'], r['torch_over_jax']))
      if r['numpy_ms'] is not None:
        rows.append((what, r['jax_ms'], 'ms', 'NumPy np.add.at', r['numpy_ms'], r['numpy_over_jax']))
      rows.append((what, r['jax_ms'], 'ms', 'memory-bandwidth floor', r['floor_ms'], _ratio(r['floor_ms'],
                                                                                             r['jax_ms'])))
  elif name == 'render':
    ref = result[0]['fps']
    for r in result:
      rows.append((f'render, {r["renderer"]}', r['fps'], 'frames/s', 'RGB splat fallback', ref,
                   _ratio(r['fps'], ref)))
  elif name == 'diffusion':
    ref = next((r for r in result['train'] if r['config'].startswith('ldm (')), result['train'][0])
    for r in result['train']:
      rows.append((f'train {r["config"]} (tiny, batch {r["batch"]})', r['examples_per_sec'], 'examples/s',
                   'stage 1', ref['examples_per_sec'], _ratio(r['examples_per_sec'], ref['examples_per_sec'])))
    s = result['sampling']
    rows.append((f'sample one volume, {result["sample_steps"]} DDIM steps', s[0]['seconds'], 's', '', None, None))
    for r in result.get('paper', []):
      rows.append((f'paper {r["config"]}: TFLOPs / step / device', r['flops'] / 1e12, 'TFLOPs', '', None, None))
      rows.append((f'paper {r["config"]}: compiled memory / device', (r['arg_bytes'] + r['temp_bytes']) / 2**30,
                   'GiB', '', None, None))
  elif name == 'loops':
    ref = result[0]['position']
    for r in result[1:2]:
      rows.append((f'loop closure error, {r["sampling"]}', r['position'], 'px', result[0]['sampling'], ref,
                   _ratio(ref, r['position'])))
  elif name == 'input':
    by = {r['workers']: r['examples_per_s'] for r in result['rows']}
    best = max(by, key=by.get)
    rows.append((f'input examples/s ({best} workers)', by[best], 'ex/s', 'one pod host needs', result['need_per_host'],
                 _ratio(by[best], result['need_per_host'])))
  return rows


def _child(name: str, kwargs: dict, out_path: str) -> None:
  mod = importlib.import_module(f'benchmarks.{name}')
  result = mod.run(**kwargs)
  with open(out_path, 'w') as f:
    json.dump(result, f, default=lambda o: o.tolist() if hasattr(o, 'tolist') else str(o))


def _fmt(v, unit=''):
  if v is None:
    return '-'
  if isinstance(v, str):
    return v
  return (f'{v:.3g}' if abs(v) < 1000 else f'{v:.0f}') + (f' {unit}' if unit else '')


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--quick', action='store_true', help='smallest sizes, for a smoke test')
  ap.add_argument('--only', default=None, help='comma-separated benchmark names')
  ap.add_argument('--json', default=None, help='also write every row here')
  ap.add_argument('--_child', nargs=3, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args._child:  # pylint: disable=protected-access
    name, kwargs, out_path = args._child  # pylint: disable=protected-access
    _child(name, json.loads(kwargs), out_path)
    return 0
  names = [b[0] for b in BENCHMARKS]
  only = args.only.split(',') if args.only else names
  for n in only:
    if n not in names:
      print(f'error: no benchmark {n!r} (have {", ".join(names)})', file=sys.stderr)
      return 2
  summary, every, failed = [], {}, []
  with tempfile.TemporaryDirectory() as tmp:
    for name, full, quick in BENCHMARKS:
      if name not in only:
        continue
      out_path = os.path.join(tmp, name + '.json')
      kwargs = quick if args.quick else full
      t0 = time.perf_counter()
      proc = subprocess.Popen([sys.executable, '-m', 'benchmarks', '--_child', name, json.dumps(kwargs), out_path])
      _, status, usage = os.wait4(proc.pid, 0)
      wall = time.perf_counter() - t0
      peak = usage.ru_maxrss / 1024.0  # KiB on Linux
      if os.waitstatus_to_exitcode(status) != 0 or not os.path.exists(out_path):
        failed.append(name)
        summary.append((name, 'FAILED', None, '', '', None, None, wall, peak))
        continue
      with open(out_path) as f:
        result = json.load(f)
      every[name] = result
      for measure, value, unit, ref_name, ref, ratio in summarize(name, result):
        summary.append((name, measure, value, unit, ref_name, ref, ratio, wall, peak))
  print(f'\n## All benchmarks ({"quick" if args.quick else "full"} sizes; {os.cpu_count()} cores, load '
        f'{os.getloadavg()[0]:.1f} at the end)\n')
  print('| benchmark | measure | value | reference | reference value | ratio | wall s | peak RSS MiB |')
  print('|---|---|---:|---|---:|---:|---:|---:|')
  for name, measure, value, unit, ref_name, ref, ratio, wall, peak in summary:
    print(f'| {name} | {measure} | {_fmt(value, unit)} | {ref_name} | {_fmt(ref, unit)} | '
          f'{"-" if ratio is None else f"{ratio:.2f}x"} | {wall:.0f} | {peak:.0f} |')
  print('\nratio: how many times better than the reference (speed: reference time / ours; throughput: ours / '
        'reference; loop error: reference / ours).')
  if args.json:
    from gid_jax.fileio import atomic_write_text  # pylint: disable=g-import-not-at-top
    atomic_write_text(args.json, json.dumps({'rows': every, 'summary': summary}, indent=1, default=str))
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
