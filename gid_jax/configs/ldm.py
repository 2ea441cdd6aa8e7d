"""Motion latent diffusion, stage 1: one 4-channel frequency slice at a time ("independent prediction").

    python -m gid_jax.train --config=configs/ldm.py:size=tiny --config.data_dir=DATA \
        --config.vae_workdir=RUN_VAE --workdir=RUN_LDM

The U-Net denoises the VAE latent of one frequency slice, conditioned on the first frame (downsampled to
the latent size and concatenated with the noisy latent) and on the slice's frequency index (an embedding
added next to the timestep embedding). A batch of B examples is B * K independent slices. The VAE is frozen
(its weights come from ``vae_workdir`` and are stored in this run's checkpoints, so one checkpoint samples).
This config alone is the paper's "independent prediction" ablation; ``configs/ldm_freq.py`` adds stage 2
(frequency attention) on top of it; ``configs/ldm_volume.py`` is the "volume prediction" ablation.
"""

import ml_collections

from gid_jax.configs import efficiency, optimizer, parallelism, parse_size, run_length

MODELS = {
    # U-Net widths per level, residual blocks per level, spatial self-attention per level, heads
    'tiny': ((32, 64), 1, (False, True), 4),
    'small': ((64, 128, 256), 2, (False, True, True), 4),
    # LDM-sized (the f=4 LDMs use 224 base channels x (1, 2, 3, 4), 2 blocks, attention below full size).
    'paper': ((224, 448, 672, 896), 2, (False, True, True, True), 8),
}


def get_config(arg=None):
  size = parse_size(arg, MODELS, 'tiny')
  widths, blocks, attention, heads = MODELS[size]

  c = ml_collections.ConfigDict()
  c.trainer = 'ldm'
  c.size = size
  c.data_dir = ''  # required: a gid_jax.data.build --out folder
  c.vae_workdir = ''  # required for a fresh run: a trained configs/vae.py run
  c.stage1_workdir = ''  # stage 2 only: the stage-1 run whose U-Net is frozen
  # Which data the run sees: the first num_freqs frequencies of the dataset (0 = all: the K ablations
  # use 4 of a K=8 tiny dataset) and its normalisation ('' = the dataset's own adaptive statistics,
  # 'image_size' = the "w/o adaptive norm" ablation). Stage 2 inherits both from its stage-1 run.
  c.num_freqs = 0
  c.normalize = ''
  # Encode the training set once with the frozen VAE and train on the cached latents (training/ldm.py):
  # K x h x w x L floats per example in memory. Off for datasets that do not fit in host memory.
  c.cache_latents = size == 'tiny'
  # Or a latent dataset on disk made once by python -m gid_jax.training.latents with this run's VAE (stage 1:
  # the vae_workdir's; stage 2: its stage-1 run's, the same weights): no VAE encoder, no volume decoding.
  c.latents_dir = ''
  c.mode = 'slice'  # 'slice': B*K slices of 4 channels (paper); 'volume': all 4K channels at once (ablation)
  c.trainable = 'unet'  # parameters optimised: 'unet' (stage 1) or 'freq_attn' (stage 2)
  # tiny: batch 4 x K=8 slices at ~7 steps/s on 2 cores: 8,000 steps in about 20 minutes. 2,000 steps (the
  # earlier default) left the per-frequency power ~2x too high (docs/RESULTS.md, motion diffusion).
  # batch: examples (each K slices), global
  c.update(run_length(batch_size={'tiny': 4, 'small': 16, 'paper': 64}[size],
                      num_steps={'tiny': 8000, 'small': 50_000, 'paper': 400_000}[size],
                      checkpoint_every={'tiny': 500, 'small': 2000, 'paper': 5000}[size],
                      eval_every={'tiny': 0, 'small': 2000, 'paper': 5000}[size]))

  c.model = ml_collections.ConfigDict()
  c.model.widths = widths
  c.model.blocks = blocks
  c.model.attention = attention
  c.model.heads = heads
  c.model.freq_embedding = True
  c.model.freq_attention = False
  c.model.dropout = 0.0 if size == 'tiny' else 0.1
  # How I_0 meets the latent: 'resize' (the paper's downsampled I_0) or 'space_to_depth' (lossless,
  # 3 f^2 channels). On the tiny synthetic set stage 1 gave moving-region IoU 0.29 with space_to_depth vs
  # 0.27 with resize (20 held-out clips): not a clear gain, so the paper's choice stays the default.
  c.model.cond_mode = 'resize'
  # The U-Net's channel counts (in/out: the VAE's latent channels, x K in volume mode; cond: 3 or 3 f^2), its
  # K and its mask head are not options: training derives them (training.ldm.derive_facts) and stores them
  # beside this config in every checkpoint.

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = 'linear'  # LDM's scaled-linear betas; 'cosine' also available
  c.diffusion.num_timesteps = 1000
  c.diffusion.objective = 'eps'  # SPEC: epsilon prediction; 'v' also available
  # Min-SNR-gamma loss weighting (Hang et al. 2023; 5 is their choice): 0 = off, the paper's plain MSE.
  c.diffusion.min_snr_gamma = 0.0
  c.diffusion.cond_dropout = 0.1  # the first frame is dropped (zeroed) for 10% of examples: enables CFG
  # Auxiliary moving-mask loss (not in the paper; 0 = off; see gid_jax/training/ldm.py): a 1x1 head on the
  # U-Net's bottleneck (or, with aux_mask_at='out', its last features) predicts, per latent pixel, the
  # fraction of pixels whose motion RMS exceeds aux_mask_px (BCE), so that the U-Net learns to read *where*
  # from the first frame. docs/RESULTS.md ("It learns", "Placement") measures it on the synthetic world.
  c.aux_mask_weight = 0.0
  c.aux_mask_px = 0.1
  c.aux_mask_at = 'middle'  # the head reads 'middle' (the bottleneck) or 'out' (the last features)

  c.sampling = ml_collections.ConfigDict()
  c.sampling.num_steps = 250  # SPEC: 250 DDIM steps for the main results
  c.sampling.eta = 0.0
  c.sampling.guidance = 0.0  # w in (1 + w) eps(c) - w eps(null); 0 = conditional only
  # Not in the paper: scale each pixel's motion by min(1, p / mask_gate), p the moving-mask head's probability
  # (needs aux_mask_weight > 0; gid_jax/diffusion/motion_sampler.py). 0 = off.
  c.sampling.mask_gate = 0.0
  # Evaluation during training (eval_every): DDIM steps of its samples (the sampling's eta and guidance)
  c.eval_ddim_steps = 20

  # The scale of the VAE latents (LDM's scale factor); 0 = measure it (1 / their std on training data) at the
  # start of a fresh run. The value used is stored with the run's derived facts (so is the VAE's
  # architecture, the dataset's size and normalisation statistics): sampling needs nothing else.
  c.latent_scale = 0.0

  c.optimizer = optimizer({'tiny': 1e-3, 'small': 2e-4, 'paper': 1e-4}[size],
                          warmup_steps={'tiny': 100, 'small': 1000, 'paper': 5000}[size])
  c.ema_decay = 0.995 if size == 'tiny' else 0.9999

  c.update(parallelism())  # mesh and sharding rules (gid_jax.configs.parallelism)
  c.update(efficiency(size))  # compute dtype, remat, gradient accumulation, data workers (configs.efficiency)
  return c
