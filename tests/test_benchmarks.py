"""Smoke test: the benchmark command runs and prints its table (numbers are for docs, not asserted)."""

from benchmarks import extraction


def test_extraction_benchmark_runs():
  lines = []
  rows = extraction.run('tiny', scenes=1, frames=50, out=lines.append)
  assert {r['method'] for r in rows} >= {'farneback', 'dis/medium'}
  assert all(r['clips_per_min'] > 0 and r['epe'] < 1.0 for r in rows)
  assert any('| dis/medium |' in l for l in lines)


def test_render_benchmark_runs():
  from benchmarks import render
  lines = []
  rows = render.run(frames=6, width=32, height=24, sizes=('tiny',), out=lines.append)
  assert [r['renderer'] for r in rows] == ['fallback', 'tiny'] and all(r['fps'] > 0 for r in rows)
