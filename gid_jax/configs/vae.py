"""Spectral VAE: one 4-channel frequency slice of a normalised spectral volume <-> a 4-channel latent.

    python -m gid_jax.train --config=configs/vae.py:size=tiny --config.data_dir=DATA --workdir=RUN_VAE

Loss (SPEC section 4): L1 + 0.2 * multi-scale gradient consistency + 1e-6 * KL. The latent is 4 channels
at 1/4 of the resolution (40 x 64 for a 256 x 160 volume: the default SPEC suggests). Every example's K
slices are independent samples, so a batch of B examples is B * K VAE samples.
"""

import ml_collections

from gid_jax.configs import efficiency, optimizer, parallelism, parse_size, run_length

MODELS = {
    # encoder widths per level (the spatial factor is 2 ** (levels - 1)), residual blocks per level
    'tiny': ((16, 32, 64), 1),  # minutes on a 2-core CPU
    'small': ((64, 128, 128), 1),
    'paper': ((128, 256, 256), 2),  # the LDM f=4 autoencoder's widths
}


def get_config(arg=None):
  size = parse_size(arg, MODELS, 'tiny')
  widths, blocks = MODELS[size]

  c = ml_collections.ConfigDict()
  c.trainer = 'vae'
  c.size = size
  c.data_dir = ''  # required: a gid_jax.data.build --out folder
  c.num_freqs = 0  # train on the first num_freqs frequency slices only (0 = all)
  c.normalize = ''  # '' = the dataset's normalisation statistics; 'image_size' = the w/o-adaptive-norm ablation
  # batch: examples (x K slices), global; tiny: 600 steps, ~10 min on 2 cores
  c.update(run_length(batch_size={'tiny': 4, 'small': 16, 'paper': 64}[size],
                      num_steps={'tiny': 600, 'small': 20_000, 'paper': 200_000}[size],
                      checkpoint_every={'tiny': 200, 'small': 2000, 'paper': 5000}[size],
                      eval_every={'tiny': 0, 'small': 2000, 'paper': 5000}[size]))

  c.model = ml_collections.ConfigDict()
  c.model.widths = widths
  c.model.blocks = blocks
  c.model.latent_channels = 4  # SPEC: a 4-channel continuous latent
  c.model.norm = 'group'  # 'group' (GroupNorm, LDM's) or 'none' (models/vae.py measures both)

  c.loss = ml_collections.ConfigDict()
  c.loss.grad_weight = 0.2  # SPEC
  c.loss.kl_weight = 1e-6  # SPEC
  c.loss.grad_scales = 3

  c.optimizer = optimizer({'tiny': 2e-3, 'small': 1e-3, 'paper': 4.5e-4}[size])
  c.ema_decay = 0.99 if size == 'tiny' else 0.999

  c.update(parallelism())  # mesh and sharding rules (gid_jax.configs.parallelism)
  c.update(efficiency(size))  # compute dtype, remat, gradient accumulation, data workers (configs.efficiency)
  return c
