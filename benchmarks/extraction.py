"""Benchmark: motion extraction (decode -> flow from frame 0 to every frame -> spectral volume).

    python -m benchmarks.extraction [--size small|tiny|paper] [--scenes 2] [--frames 180]

Synthetic scenes (real photos, exact ground truth) are rendered at 256 x 160, encoded as H.264 and decoded
again, then every clip (T frames, a new one every 10 frames) is turned into training targets of a ``--size``
dataset by the builder's own code path (``clips.clips_with_motion``). One row per way of making targets
(``TARGETS``: the old default, luminance DIS at the dataset size; the new default, DIS on CIE Lab at the
video's resolution then resized; the steps between; Farneback): clips per minute and the ratio to the old
default measured in the same run, accuracy against the exact motion at the dataset size (mean end-point error
over all pixels and frames, on moving and on still pixels, the share of clearly-dominant moving pixels whose
dominant frequency bin is recovered exactly, and the recovered share of their dominant-bin amplitude), the
isoluminant probe (``synthetic.isoluminant_probe``: dominant bin, amplitude ratio), the process's peak
resident memory while extracting, how much extraction added, and how much resident memory grew from the
second clip to the last (flat memory = ~0).
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
from gid_jax.data import build, clips, synthetic, video
from gid_jax.motion import flow, spectral

# (label, data-config flow overrides): the old default targets, the new default and the ablations between.
TARGETS = (
    ('farneback, gray, dataset size', dict(method='farneback', color='gray', max_side=0)),
    ('dis/medium, gray, dataset size (old default)', dict(method='dis', preset='medium', color='gray', max_side=0)),
    ('dis/medium, lab, dataset size', dict(method='dis', preset='medium', color='lab', max_side=0)),
    ('dis/medium, gray, video size', dict(method='dis', preset='medium', color='gray', max_side=256)),
    ('dis/medium, lab, video size (default)', dict(method='dis', preset='medium', color='lab', max_side=256)),
    ('dis/fast, lab, video size', dict(method='dis', preset='fast', color='lab', max_side=256)),
)


class PeakRSS:
  """Samples resident memory every 5 ms: peak and starting value over a block, of this process or (with
  ``children``) of it and its child processes (e.g. grain workers)."""

  def __init__(self, children: bool = False):
    self.children = children

  def rss(self) -> int:
    procs = [self.proc] + (self.proc.children(recursive=True) if self.children else [])
    total = 0
    for p in procs:
      try:
        total += p.memory_info().rss
      except psutil.Error:  # a child that has just exited
        pass
    return total

  def __enter__(self):
    self.proc = psutil.Process(os.getpid())
    self.start = self.peak = self.rss()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._poll, daemon=True)
    self._thread.start()
    return self

  def _poll(self):
    while not self._stop.wait(0.005):
      self.peak = max(self.peak, self.rss())

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, self.rss())


def _config(size: str, **flow_overrides):
  cfg = data_config.get_config(f'size={size}')
  for key, value in flow_overrides.items():
    cfg.flow[key] = value
  return cfg


def probe_fidelity(cfg, tmp: str) -> tuple[int, int, float]:
  """(estimated dominant bin, exact dominant bin, amplitude ratio at the exact one) of the builder's targets
  for ``cfg`` on the isoluminant sub-pixel probe (a 256 x 160 video of one T-frame clip)."""
  import cv2  # pylint: disable=g-import-not-at-top
  path = os.path.join(tmp, 'probe.mp4')
  shifts, coverage = synthetic.isoluminant_probe(path, num_frames=cfg.num_frames, period=cfg.num_frames)
  mask = cv2.resize(coverage, (cfg.width, cfg.height), interpolation=cv2.INTER_AREA) > 0.99
  [(start, _, disp, _)] = list(clips.clips_with_motion(path, cfg, clips.ClipMotion(cfg)))
  true = np.zeros_like(disp)
  true[..., 0] = ((shifts - shifts[start]) * cfg.width / 256)[:, None, None] * mask
  amp = lambda d: np.linalg.norm(np.asarray(spectral.to_spectral_volume(d, cfg.num_freqs)), axis=-1)[:, mask].mean(-1)
  est, exact = amp(disp), amp(true)
  k = int(np.argmax(exact[1:])) + 1
  return int(np.argmax(est[1:])) + 1, k, float(est[k] / exact[k])


def run(size: str = 'small', scenes: int = 2, frames: int = 180, video_wh=(256, 160), out=print) -> list[dict]:
  """Every TARGETS row on synthetic scenes rendered at ``video_wh`` and cut into ``size`` datasets."""
  cfg = data_config.get_config(f'size={size}')
  w, h, t_, k = cfg.width, cfg.height, cfg.num_frames, cfg.num_freqs
  tmp = tempfile.mkdtemp(prefix='gid_bench_')
  paths = synthetic.generate(tmp, scenes, width=video_wh[0], height=video_wh[1], num_frames=frames,
                             progress=False)
  truth = {}
  for p in paths:
    scene = synthetic.Scene.load(synthetic.scene_path(p))
    import cv2  # pylint: disable=g-import-not-at-top
    area = lambda m: cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    moving = area(synthetic.moving_mask(scene, 0.1)) > 0.5  # pixels of the dataset that mostly move
    still = area(~synthetic.moving_mask(scene, 0.01)) > 0.99  # and those that are entirely still
    for start in range(0, frames - t_ + 1, cfg.start_stride):
      d = flow.resize_displacements(synthetic.trajectories(scene, start, t_), w, h)  # exact, at dataset size
      truth[(p, start)] = (d, np.asarray(spectral.amplitude(spectral.to_spectral_volume(d, k)))[1:], moving, still)
  rows = []
  for label, overrides in TARGETS:
    c = _config(size, **overrides)
    motion = clips.ClipMotion(c)
    # Pass 1, timed and memory-sampled: exactly the builder's per-clip work (decode, flow, resize, FFT).
    with PeakRSS() as mem:
      n, t0, rss = 0, time.perf_counter(), []
      for p in paths:
        for _, _, disp, _ in clips.clips_with_motion(p, c, motion):
          np.asarray(spectral.to_spectral_volume(disp, k))
          n += 1
          rss.append(mem.proc.memory_info().rss)
      elapsed = time.perf_counter() - t0
    # Pass 2: accuracy against the exact motion at the dataset size.
    epe, epe_mov, epe_static, agree, gain = [], [], [], [], []
    for p in paths:
      for start, _, disp, _ in clips.clips_with_motion(p, c, motion):
        d, g, moving, still = truth[(p, start)]
        e = np.linalg.norm(disp - d, axis=-1)
        epe.append(e.mean())
        epe_mov.append(e[:, moving].mean())
        epe_static.append(e[:, still].mean())
        top2 = np.sort(g, axis=0)[-2:]
        clear = (top2[1] > 0.25 * w / 256) & (top2[1] > 1.5 * top2[0])
        a = np.asarray(spectral.amplitude(spectral.to_spectral_volume(disp, k)))[1:]
        agree.append((np.argmax(a, 0) == np.argmax(g, 0))[clear].mean())
        gain.append(a.max(0)[clear].sum() / max(g.max(0)[clear].sum(), 1e-9))
    dominant, k_exact, ratio = probe_fidelity(c, tmp)
    bin_ok = dominant == k_exact
    rows.append({'targets': label, 'clips': n, 'clips_per_min': 60.0 * n / elapsed, 'epe': float(np.mean(epe)),
                 'epe_moving': float(np.mean(epe_mov)), 'epe_static': float(np.mean(epe_static)),
                 'dominant_bin_exact': float(np.mean(agree)), 'amplitude_ratio': float(np.mean(gain)),
                 'probe_bin_exact': bin_ok, 'probe_amplitude_ratio': ratio,
                 'peak_mib': mem.peak / 2**20, 'extra_mib': (mem.peak - mem.start) / 2**20,
                 'growth_mib': (rss[-1] - rss[1]) / 2**20 if len(rss) > 2 else 0.0})
  ref = rows[1]['clips_per_min']
  out(f'\nMotion targets at {w}x{h}, T={t_}, K={k}; {rows[0]["clips"]} clips from {scenes} synthetic H.264 videos '
      f'at {video_wh[0]}x{video_wh[1]} ({frames} frames), exact motion resized to the dataset size; isoluminant '
      f'probe: a chroma-textured disc swaying {2 * w / 256:g} px at the dataset size; {os.cpu_count()} CPU cores')
  out('| targets | clips/min | x old default | EPE px | EPE moving | EPE static | dominant bin exact | amplitude '
      'ratio | probe: bin, amplitude ratio | peak RSS MiB | extraction MiB | RSS growth MiB |')
  out('|---|---|---|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    out(f'| {r["targets"]} | {r["clips_per_min"]:.1f} | {r["clips_per_min"] / ref:.2f} | {r["epe"]:.3f} | '
        f'{r["epe_moving"]:.3f} | {r["epe_static"]:.3f} | {100 * r["dominant_bin_exact"]:.1f}% | '
        f'{r["amplitude_ratio"]:.2f} | {"exact" if r["probe_bin_exact"] else "wrong"}, '
        f'{r["probe_amplitude_ratio"]:.2f} | {r["peak_mib"]:.0f} | {r["extra_mib"]:.0f} | {r["growth_mib"]:+.1f} |')
  return rows


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--size', default='small', choices=sorted(data_config.SIZES))
  ap.add_argument('--scenes', type=int, default=2)
  ap.add_argument('--frames', type=int, default=180, help='frames per synthetic video')
  args = ap.parse_args(argv)
  run(args.size, args.scenes, args.frames)


if __name__ == '__main__':
  main()
