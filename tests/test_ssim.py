"""The differentiable SSIM of the renderer's loss against scikit-image (float64) and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from gid_jax.models import ssim as ssim_lib


def skimage_ssim(a, b):
  """float64 reference: what gid_jax.render.evaluate reports, on images in [-1, 1] mapped to [0, 1]."""
  return structural_similarity((a + 1) / 2, (b + 1) / 2, channel_axis=-1, data_range=1.0, gaussian_weights=True,
                               sigma=1.5, use_sample_covariance=False)


def pair(rng, shape=(2, 23, 31, 3)):
  a = rng.uniform(-1, 1, size=shape)
  b = np.clip(a + rng.normal(scale=0.3, size=shape), -1, 1)
  return a, b


def test_matches_scikit_image(rng):
  a, b = pair(rng)
  want = [skimage_ssim(a[i], b[i]) for i in range(len(a))]
  with jax.enable_x64(True):
    np.testing.assert_allclose(ssim_lib.ssim(jnp.asarray(a), jnp.asarray(b)), want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(ssim_lib.ssim(a.astype(np.float32), b.astype(np.float32)), want, atol=2e-5)
  np.testing.assert_allclose(ssim_lib.ssim(a, a), 1.0, atol=1e-6)


def test_gradient_matches_finite_differences(rng):
  a, b = pair(rng, shape=(1, 13, 14, 2))
  with jax.enable_x64(True):
    grad = np.asarray(jax.grad(lambda x: jnp.sum(ssim_lib.ssim(x, jnp.asarray(b))))(jnp.asarray(a)))
  h = 1e-6
  for _ in range(6):
    pos = tuple(rng.integers(0, s) for s in a.shape)
    plus, minus = a.copy(), a.copy()
    plus[pos] += h
    minus[pos] -= h
    fd = (skimage_ssim(plus[0], b[0]) - skimage_ssim(minus[0], b[0])) / (2 * h)
    assert grad[pos] == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_bad_shapes_fail_clearly():
  with pytest.raises(ValueError, match='same shape'):
    ssim_lib.ssim(np.zeros((1, 20, 20, 3)), np.zeros((1, 20, 21, 3)))
  with pytest.raises(ValueError, match='at least 11 x 11'):
    ssim_lib.ssim(np.zeros((1, 8, 20, 3)), np.zeros((1, 8, 20, 3)))
