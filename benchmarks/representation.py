"""Accuracy and speed of the motion representation against float64 NumPy references.

    python -m benchmarks.representation

Paper-size inputs (T=150, K=16, 160x256) with fresh random values each run: spectral volume forward and
inverse against float64 rFFT/irFFT, the round trip on band-limited trajectories, the normalisation inverse
(max relative error in float32 ulps), the streamed percentile against np.percentile, and times for each
(jitted, median of 5) against NumPy's float64 FFT measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from gid_jax.motion import normalize as nl
from gid_jax.motion import spectral


def _time(f, *args, repeats=5):
  f(*args)
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    ts.append(time.perf_counter() - t0)
  return 1e3 * float(np.median(ts))


def run(t_=150, k=16, h=160, w=256, out=print):
  seed = int.from_bytes(os.urandom(4), 'little')
  rng = np.random.default_rng(seed)
  disp = (rng.normal(size=(t_, h, w, 2)) * 2).astype(np.float32)
  ref_c = np.fft.rfft(disp.astype(np.float64), axis=0)[:k] / t_
  ref = np.stack([ref_c[..., 0].real, ref_c[..., 0].imag, ref_c[..., 1].real, ref_c[..., 1].imag], -1)
  fwd = jax.jit(lambda d: spectral.to_spectral_volume(d, k))
  inv = jax.jit(lambda s: spectral.to_displacements(s, t_))
  s = np.asarray(fwd(disp))
  fwd_err = np.abs(s - ref).max()
  full = np.zeros((t_ // 2 + 1, h, w, 2), np.complex128)
  full[:k, ..., 0] = ref[..., 0] + 1j * ref[..., 1]
  full[:k, ..., 1] = ref[..., 2] + 1j * ref[..., 3]
  band = np.fft.irfft(full * t_, n=t_, axis=0)  # float64 band-limited trajectories
  inv_err = np.abs(np.asarray(inv(ref.astype(np.float32))) - band).max()
  rt = np.asarray(inv(fwd(band.astype(np.float32))))
  rt_err = np.abs(rt - band).max()
  np_ms = _time(lambda d: np.fft.rfft(d.astype(np.float64), axis=0)[:k], disp)
  fwd_ms, inv_ms = _time(fwd, disp), _time(inv, s)

  acc = nl.ScaleAccumulator(k)
  acc.update(s)
  stats = acc.stats(95.0)
  exact = np.percentile(np.abs(np.moveaxis(s, -4, 0)).reshape(k, -1), 95.0, axis=1)
  pct_err = np.abs(stats.scales_Kx4[:, 0] / exact - 1).max()
  n = np.asarray(nl.normalize(s, stats))
  back = np.asarray(nl.denormalize(n, stats))
  ulps = (np.abs(back - s) / np.spacing(np.abs(s).astype(np.float32))).max()

  out(f'\nMotion representation vs float64 NumPy (T={t_}, K={k}, {h}x{w}; random seed {seed})')
  out('| check | max abs error | time ms (JAX jit) | NumPy float64 rFFT ms |')
  out('|---|---|---|---|')
  out(f'| to_spectral_volume vs rFFT/T | {fwd_err:.2e} px | {fwd_ms:.1f} | {np_ms:.1f} |')
  out(f'| to_displacements vs irFFT | {inv_err:.2e} px | {inv_ms:.1f} | |')
  out(f'| round trip on band-limited input | {rt_err:.2e} px | | |')
  out(f'| denormalize(normalize(S)) | {ulps:.1f} float32 ulp | | |')
  out(f'| streamed 95th percentile vs np.percentile | {100 * pct_err:.3f}% relative | | |')
  return {'fwd_err': fwd_err, 'inv_err': inv_err, 'roundtrip_err': rt_err, 'norm_ulps': ulps,
          'percentile_rel_err': pct_err, 'fwd_ms': fwd_ms, 'numpy_ms': np_ms, 'inv_ms': inv_ms}


def main(argv=None):
  argparse.ArgumentParser(description=__doc__.split('\n')[0]).parse_args(argv)
  run()


if __name__ == '__main__':
  main()
