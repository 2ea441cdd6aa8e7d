"""The local web app: ``python -m gid_jax.app`` (see gid_jax.app.server)."""
