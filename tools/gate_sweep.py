"""Mask-gate shapes compared on the Table-1 set, from one ungated sample per guidance.

    python tools/gate_sweep.py [--checkpoint RUN_OR_EXPORT] [--guidance 2.5,3.5] [--steps 50]

The `size=mini` synthetic set of configs/eval.py (32 held-out plants-world clips, exact motion), sampled as
gid-evaluate samples it (batches of 8, seed 0 per batch) without the gate. The moving-mask head's probability p
is read with the keys a gated sample of the same batch uses, so ``lin g`` reproduces ``--mask-gate g`` exactly
(a gate scales each pixel's motion by one real factor, and so its RMS). Per guidance and gate: the amplitude on
truly moving / truly still pixels over the truth's on moving ones (the Table-1 columns), still over moving, and
the moving-region AUC of the gated motion. Gates: ``lin g`` = min(1, p / g) (the shipped gate), ``sq g`` = its
square (fades low p faster), ``ramp a-b`` = clip((p - a) / (b - a), 0, 1) (zero below a).
"""

import argparse

import jax
import numpy as np

from gid_jax import animate
from gid_jax import evaluate as ev
from gid_jax.configs import eval as eval_config
from gid_jax.diffusion import motion_sampler
from gid_jax.eval import motion_metrics as mm


def gates() -> dict:
  out = {'off': lambda p: np.ones_like(p)}
  for g in (0.3, 0.4, 0.5, 0.6):
    out[f'lin {g}'] = lambda p, g=g: np.minimum(1.0, p / g)
    out[f'sq {g}'] = lambda p, g=g: np.minimum(1.0, p / g) ** 2
  for a, b in ((0.1, 0.3), (0.15, 0.35), (0.2, 0.4), (0.2, 0.5), (0.25, 0.5)):
    out[f'ramp {a}-{b}'] = lambda p, a=a, b=b: np.clip((p - a) / (b - a), 0.0, 1.0)
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--checkpoint', default=animate.DEFAULT_CHECKPOINT)
  ap.add_argument('--guidance', default='2.5', help='comma-separated guidance weights')
  ap.add_argument('--steps', type=int, default=50)
  a = ap.parse_args()
  config = eval_config.get_config('size=mini')
  evalset = ev.load_set('synthetic', config.sets.synthetic, config)
  rt = np.asarray(mm.motion_rms(evalset.spec))
  moving = rt > 0.1
  amp = rt[moving].mean()
  sampler = motion_sampler.MotionSampler(a.checkpoint)
  batch = 8  # as evaluate.sample_ldm: the gate of batch i reads fold_in(PRNGKey(seed + i), 1)
  heads = []
  for i in range(0, len(evalset.images), batch):
    x = evalset.images[i:i + batch].astype(np.float32) / 127.5 - 1.0
    n = len(x)
    x = np.concatenate([x, np.repeat(x[-1:], batch - n, axis=0)])  # padded as sample_ldm pads: the same draws
    key = jax.random.fold_in(jax.random.PRNGKey(config.sampling.seed + i), 1)
    heads.append(np.asarray(sampler.moving_probability(x, key))[:n])
  p = np.concatenate(heads)
  print(f'{a.checkpoint}: {len(p)} clips, {a.steps} steps; mask head AUC {mm.region_auc(p, moving):.3f}')
  print('| w | gate | amplitude moving | amplitude still | still / moving | AUC |\n|---|---|---:|---:|---:|---:|')
  for w in (float(v) for v in a.guidance.split(',')):
    config.sampling.num_steps, config.sampling.guidance, config.sampling.mask_gate = a.steps, w, 0.0
    rp = np.asarray(mm.motion_rms(ev.sample_ldm(a.checkpoint, evalset, config.sampling)))
    for name, gate in gates().items():
      r = rp * gate(p)
      print(f'| {w:g} | {name} | {r[moving].mean() / amp:.3f} | {r[~moving].mean() / amp:.3f} | '
            f'{r[~moving].mean() / r[moving].mean():.3f} | {mm.region_auc(r, moving):.3f} |', flush=True)


if __name__ == '__main__':
  main()
