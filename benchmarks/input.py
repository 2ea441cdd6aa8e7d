"""Benchmark: input throughput of the training pipeline (grain over ArrayRecord) at the paper's size.

    python -m benchmarks.input [--scenes 4] [--batch 8] [--batches 20] [--workers 0,2,4] [--step-s 0.2]

A ``size=paper`` motion dataset (256 x 160, T = 150 frames, K = 16, exact motion: no flow cost) is built from
plants-world scenes (``gid_jax.data.synthetic``, the bundled scikit-image photos), then
``pipeline.make_dataset`` (decode, normalise, batch: exactly what a training process reads) is timed with 0,
2 and 4 grain worker processes. Per setting: examples per second after the first batch (the pool starts and
warms up), and the resident memory it holds (this process and its workers, peak while reading).

The last table is what a pod needs: a data-parallel step consumes the global batch, so a run of global batch
B at S seconds a step needs B / S examples per second in all, and each of its H hosts (one training process
each) B / (S H). ``--step-s``: the step time to size it for (default 0.2 s, the H100 step time the training
issue measured for the paper-size LDM; docs/SCALING.md), global batch 64 (configs/ldm.py size=paper) on 64
chips (16 hosts of 4).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks import extraction
from gid_jax.configs import data as data_config
from gid_jax.configs import override
from gid_jax.data import build, pipeline, synthetic


def make_data(root: str, scenes: int) -> str:
  videos, out = os.path.join(root, 'scenes'), os.path.join(root, 'ds')
  synthetic.generate(videos, scenes, width=256, height=160, num_frames=240, progress=False, world='plants')
  c = data_config.get_config('size=paper')
  override(c, **{'flow.method': 'ground_truth', 'filters.camera_motion_px': 0.0, 'filters.static_px': 0.0,
                 'frame_pairs_per_clip': 0})
  build.build(videos, out, c, progress=False)
  return out


def run(scenes: int = 4, batch: int = 8, batches: int = 20, workers=(0, 2, 4), step_s: float = 0.2,
        global_batch: int = 64, hosts: int = 16) -> dict:
  rows = []
  with tempfile.TemporaryDirectory() as root:
    t0 = time.perf_counter()
    data = make_data(root, scenes)
    build_s = time.perf_counter() - t0
    n = len(pipeline.data_source(data, 'train'))
    for w in workers:
      with extraction.PeakRSS(children=True) as peak:
        it = iter(pipeline.make_dataset(data, 'train', batch_size=batch, seed=0, worker_count=w, prefetch=4,
                                        shard_index=0, shard_count=1))
        first = time.perf_counter()
        b = next(it)
        started = time.perf_counter()
        for _ in range(batches):
          b = next(it)
        done = time.perf_counter()
        del it
      mb = sum(v.nbytes for v in b.values()) / 2 ** 20
      rows.append({'workers': w, 'examples_per_s': batches * batch / (done - started),
                   'first_batch_s': started - first, 'peak_rss_gib': peak.peak / 2 ** 30, 'batch_mib': mb})
  need = global_batch / step_s
  return {'rows': rows, 'train_examples': n, 'build_s': build_s, 'batch': batch,
          'need_total': need, 'need_per_host': need / hosts, 'step_s': step_s, 'global_batch': global_batch,
          'hosts': hosts}


def report(r: dict) -> str:
  lines = [f'paper-size dataset: {r["train_examples"]} training examples (256 x 160, T = 150, K = 16), built in '
           f'{r["build_s"]:.0f} s; batch {r["batch"]}', '',
           '| grain workers | examples / s | first batch (s) | peak memory, process + workers (GiB) | batch (MiB) |',
           '|---:|---:|---:|---:|---:|']
  for row in r['rows']:
    lines.append(f'| {row["workers"]} | {row["examples_per_s"]:.1f} | {row["first_batch_s"]:.2f} | '
                 f'{row["peak_rss_gib"]:.2f} | {row["batch_mib"]:.1f} |')
  best = max(row['examples_per_s'] for row in r['rows'])
  lines += ['', '| needed by | examples / s | best measured here / needed |', '|---|---:|---:|',
            f'| the pod: global batch {r["global_batch"]} at {r["step_s"]} s a step | {r["need_total"]:.0f} | '
            f'{best / r["need_total"]:.2f} |',
            f'| each of its {r["hosts"]} hosts | {r["need_per_host"]:.1f} | {best / r["need_per_host"]:.2f} |']
  return '\n'.join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--scenes', type=int, default=4)
  ap.add_argument('--batch', type=int, default=8)
  ap.add_argument('--batches', type=int, default=20)
  ap.add_argument('--workers', default='0,2,4')
  ap.add_argument('--step-s', type=float, default=0.2)
  a = ap.parse_args()
  print(report(run(a.scenes, a.batch, a.batches, tuple(int(x) for x in a.workers.split(',')), a.step_s)))


if __name__ == '__main__':
  main()
