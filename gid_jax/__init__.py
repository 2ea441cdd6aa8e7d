"""gid_jax: Generative Image Dynamics in JAX."""

__version__ = "0.1.0"
