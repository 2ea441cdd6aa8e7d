"""Benchmark: motion extraction (decode -> flow from frame 0 to every frame -> spectral volume).

    python -m benchmarks.extraction [--size paper|small|tiny] [--scenes 2] [--frames 180]

Synthetic scenes (real photos, exact ground truth) are rendered, encoded as H.264 and decoded again, then
every clip (T frames, a new one every 10 frames) is processed by the builder's own code path. For every flow
method it prints clips per minute, the speed ratio against Farneback measured in the same run (the classic
coarse-to-fine reference), accuracy against the ground truth (mean end-point error over all pixels and
frames, on moving and on static pixels, and the share of clearly-dominant moving pixels whose dominant
frequency bin is recovered exactly), the process's peak resident memory while extracting, how much of it
extraction added on top of what the process held before, and how much resident memory grew from the second
clip to the last (flat memory = ~0).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import numpy as np
import psutil

from gid_jax.configs import data as data_config
from gid_jax.data import build, synthetic, video
from gid_jax.motion import flow, spectral

METHODS = (('farneback', 'medium'), ('dis', 'ultrafast'), ('dis', 'fast'), ('dis', 'medium'),
           ('dis', 'fine'))


class _PeakRSS:
  """Samples this process's resident memory every 5 ms: peak and starting value over a block."""

  def __enter__(self):
    self.proc = psutil.Process(os.getpid())
    self.start = self.peak = self.proc.memory_info().rss
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._poll, daemon=True)
    self._thread.start()
    return self

  def _poll(self):
    while not self._stop.wait(0.005):
      self.peak = max(self.peak, self.proc.memory_info().rss)

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, self.proc.memory_info().rss)


def run(size: str = 'paper', scenes: int = 2, frames: int = 180, out=print) -> list[dict]:
  cfg = data_config.get_config(f'size={size}')
  w, h, t_, k = cfg.width, cfg.height, cfg.num_frames, cfg.num_freqs
  tmp = tempfile.mkdtemp(prefix='gid_bench_')
  paths = synthetic.generate(tmp, scenes, width=w, height=h, num_frames=frames, progress=False)
  truth = {}
  for p in paths:
    scene = synthetic.Scene.load(synthetic.scene_path(p))
    for start in range(0, frames - t_ + 1, cfg.start_stride):
      g = np.asarray(spectral.amplitude(spectral.to_spectral_volume(
          synthetic.trajectories(scene, start, t_), k)))[1:]
      truth[(p, start)] = (scene, g)
  rows = []
  for method, preset in METHODS:
    est = flow.FlowEstimator(method, preset)
    # Pass 1, timed and memory-sampled: exactly the builder's per-clip work, nothing else held.
    with _PeakRSS() as mem:
      n, t0, rss = 0, time.perf_counter(), []
      for p in paths:
        for _, clip in build.iter_clips(p, cfg):
          np.asarray(spectral.to_spectral_volume(flow.extract_trajectories(clip, estimator=est), k))
          n += 1
          rss.append(mem.proc.memory_info().rss)
      elapsed = time.perf_counter() - t0
    # Pass 2: accuracy against the ground truth.
    epe, epe_mov, epe_static, agree = [], [], [], []
    for p in paths:
      for start, clip in build.iter_clips(p, cfg):
        disp = flow.extract_trajectories(clip, estimator=est)
        scene, g = truth[(p, start)]
        e = np.linalg.norm(disp - synthetic.trajectories(scene, start, t_), axis=-1)
        epe.append(e.mean())
        epe_mov.append(e[:, synthetic.moving_mask(scene, 0.1)].mean())
        epe_static.append(e[:, ~synthetic.moving_mask(scene, 0.01)].mean())
        top2 = np.sort(g, axis=0)[-2:]
        clear = (top2[1] > 0.25) & (top2[1] > 1.5 * top2[0])
        a = np.asarray(spectral.amplitude(spectral.to_spectral_volume(disp, k)))[1:]
        agree.append((np.argmax(a, 0) == np.argmax(g, 0))[clear].mean())
    rows.append({'method': f'{method}/{preset}' if method == 'dis' else method, 'clips': n,
                 'clips_per_min': 60.0 * n / elapsed, 'epe': float(np.mean(epe)),
                 'epe_moving': float(np.mean(epe_mov)), 'epe_static': float(np.mean(epe_static)),
                 'dominant_bin_exact': float(np.mean(agree)),
                 'peak_mib': mem.peak / 2**20, 'extra_mib': (mem.peak - mem.start) / 2**20,
                 'growth_mib': (rss[-1] - rss[1]) / 2**20 if len(rss) > 2 else 0.0})
  ref = next(r for r in rows if r['method'] == 'farneback')['clips_per_min']
  out(f'\nMotion extraction at {w}x{h}, T={t_}, K={k}; {rows[0]["clips"]} clips from {scenes} synthetic '
      f'H.264 videos ({frames} frames); {os.cpu_count()} CPU cores')
  out('| method | clips/min | x Farneback | EPE px | EPE moving | EPE static | dominant bin exact '
      '| peak RSS MiB | extraction MiB | RSS growth MiB |')
  out('|---|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    out(f'| {r["method"]} | {r["clips_per_min"]:.1f} | {r["clips_per_min"] / ref:.2f} | {r["epe"]:.3f} | '
        f'{r["epe_moving"]:.3f} | {r["epe_static"]:.3f} | {100 * r["dominant_bin_exact"]:.2f}% | '
        f'{r["peak_mib"]:.0f} | {r["extra_mib"]:.0f} | {r["growth_mib"]:+.1f} |')
  return rows


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--size', default='paper', choices=sorted(data_config.SIZES))
  ap.add_argument('--scenes', type=int, default=2)
  ap.add_argument('--frames', type=int, default=180, help='frames per synthetic video')
  args = ap.parse_args(argv)
  run(args.size, args.scenes, args.frames)


if __name__ == '__main__':
  main()
