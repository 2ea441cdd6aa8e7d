"""Motion latent diffusion, stage 2: frequency-coordinated denoising (the paper's full model).

    python -m gid_jax.train --config=configs/ldm_freq.py:size=tiny --config.data_dir=DATA \
        --config.stage1_workdir=RUN_LDM --workdir=RUN_LDM_FREQ

The stage-1 U-Net (and its VAE) are loaded from ``stage1_workdir`` and frozen; attention layers across the
K frequency slices of each example are inserted after every spatial block (zero-initialised output, so
training starts from the stage-1 model exactly) and only they are trained. Use the same ``size`` as
stage 1.
"""

from gid_jax.configs import ldm


def get_config(arg=None):
  c = ldm.get_config(arg)
  c.model.freq_attention = True
  c.trainable = 'freq_attn'
  c.num_steps = {'tiny': 3000, 'small': 20_000, 'paper': 200_000}[c.size]  # tiny: ~6 steps/s on 2 cores
  c.optimizer.learning_rate = {'tiny': 1e-3, 'small': 2e-4, 'paper': 1e-4}[c.size]
  return c
