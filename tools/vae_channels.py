"""Per-channel check of a spectral VAE: does it reconstruct the real *and* the imaginary parts?

    python tools/vae_channels.py --data out/plants/ds --run out/plants/vae [--run out/plants_f2/vae] [--examples 64]

For each run (a VAE run, an LDM run or an export: its frozen VAE), over the first training examples'
frequency slices k >= 1 (normalised units): mean |x| of the input and of the reconstruction per channel
(re x, im x, re y, im y), the L1 error per channel, and the reconstruction's |Im| / |Re| over the input's.
A VAE that keeps only the real parts shows im reconstructions near 0 and a ratio near 0 (docs/RESULTS.md).
"""

import argparse

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gid_jax.data import pipeline
from gid_jax.runs import checkpoints

CHANNELS = ('re x', 'im x', 're y', 'im y')


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--data', required=True)
  p.add_argument('--run', action='append', required=True)
  p.add_argument('--examples', type=int, default=64)
  args = p.parse_args()
  for run in args.run:
    cfg, vae = checkpoints.load_vae(run)
    stats = pipeline.training_stats(args.data, cfg.get('normalize', ''), 0)
    ds = pipeline.make_dataset(args.data, 'train', batch_size=8, shuffle=False, num_epochs=1, shard_index=0,
                               shard_count=1, stats=stats)
    recon = nnx.jit(lambda m, x: m.decode(m.encode(x)[0], x.shape[1:3]))
    xs, rs = [], []
    for i, batch in enumerate(ds):
      if 8 * i >= args.examples:
        break
      x = batch['nspec'][:, 1:]
      x = x.reshape(-1, *x.shape[2:])
      xs.append(x)
      rs.append(np.asarray(recon(vae, jnp.asarray(x))))
    x, r = np.concatenate(xs), np.concatenate(rs)
    mx, mr = np.abs(x).mean((0, 1, 2)), np.abs(r).mean((0, 1, 2))
    err = np.abs(x - r).mean((0, 1, 2))
    ratio = (mr[1::2].sum() / mr[0::2].sum()) / (mx[1::2].sum() / mx[0::2].sum())
    print(f'{run}: latent {vae.encode(jnp.asarray(x[:1]))[0].shape[1:]}, {len(x)} slices')
    print('| | ' + ' | '.join(CHANNELS) + ' |\n|---|' + '---:|' * 4)
    for name, v in (('input mean abs', mx), ('reconstruction mean abs', mr), ('L1 error', err)):
      print(f'| {name} | ' + ' | '.join(f'{a:.3f}' for a in v) + ' |')
    print(f'reconstruction |Im| / |Re| over the input\'s: {ratio:.3f}\n')


if __name__ == '__main__':
  main()
