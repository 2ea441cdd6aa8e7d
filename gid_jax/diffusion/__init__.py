"""Diffusion core: noise schedules, the training objective and the DDIM sampler, as pure JAX functions."""
