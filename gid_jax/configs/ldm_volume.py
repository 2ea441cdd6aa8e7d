"""Ablation "volume prediction": the U-Net denoises all K latent slices at once (4K channels).

    python -m gid_jax.train --config=configs/ldm_volume.py:size=tiny --config.data_dir=DATA \
        --config.vae_workdir=RUN_VAE --workdir=RUN_LDM_VOLUME

Same VAE and U-Net family as configs/ldm.py, but one sample per example with the K slices' latents stacked
on channels and no frequency embedding (the paper reports it worse: FVD 53.7 vs 47.1).
"""

from gid_jax.configs import ldm


def get_config(arg=None):
  c = ldm.get_config(arg)
  c.mode = 'volume'
  c.model.freq_embedding = False
  return c
