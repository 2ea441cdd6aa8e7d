import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gid_jax.data import synthetic, video as video_io
from gid_jax.models.renderer import Renderer
from gid_jax.motion import spectral
from gid_jax.ops import image as image_ops
from gid_jax.render import video as render


@pytest.fixture(scope='module')
def photo():
  return video_io.center_crop_resize(synthetic.load_photo('coffee'), 64, 40)


def test_renderer_shapes_and_gradients_on_odd_sizes():
  m = Renderer((8, 16, 16), (1, 1, 1), 1, rngs=nnx.Rngs(0))
  img = jnp.zeros((2, 37, 50, 3))
  flow = jnp.ones((2, 37, 50, 2)) * 0.3
  w = jnp.ones((2, 37, 50, 1))
  assert m(img, flow, w).shape == (2, 37, 50, 3)
  gd, st = nnx.split(m)
  g = jax.grad(lambda s: jnp.sum(nnx.merge(gd, s)(img + 0.1, flow, w) ** 2))(st)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(g))


def test_untrained_renderer_equals_the_splatting_fallback(photo):
  # The synthesis output conv is zero-initialised: before training the renderer is exactly the fallback.
  m = Renderer((8, 16), (1, 1), 1, rngs=nnx.Rngs(1))
  disp = np.random.default_rng(0).normal(size=(5, 40, 64, 2)).astype(np.float32)
  a = render.render_frames(photo, disp, renderer=m, chunk=4)
  b = render.render_frames(photo, disp, chunk=4)
  np.testing.assert_array_equal(a, b)


def test_untrained_renderer_on_the_average_base_equals_average_splatting(photo):
  m = Renderer((8, 16), (1, 1), 1, rgb_base='average', rngs=nnx.Rngs(1))
  disp = np.random.default_rng(1).normal(size=(5, 40, 64, 2)).astype(np.float32)
  a = render.render_frames(photo, disp, renderer=m, chunk=4)
  np.testing.assert_array_equal(a, render.render_frames(photo, disp, chunk=4, splat_mode='average'))
  assert not np.array_equal(a, render.render_frames(photo, disp, chunk=4))  # the bases differ here
  with pytest.raises(ValueError, match="rgb_base must be one of .*'median'"):
    Renderer((8, 16), (1, 1), 1, rgb_base='median', rngs=nnx.Rngs(1))


def test_zero_motion_gives_the_photo(photo):
  frames = render.render_video(photo, np.zeros((8, 40, 64, 4), np.float32), num_frames=20)
  assert frames.shape == (20, 40, 64, 3) and frames.dtype == np.uint8
  assert np.all(frames == photo[None])


def test_uniform_motion_moves_the_photo(photo):
  # A 2 px oscillation in x of the whole image: frame t is the photo shifted by disp_t (interior only).
  t = np.arange(30)
  d = 2.0 * (np.sin(2 * np.pi * 2 * t / 30))
  disp = np.zeros((30, 40, 64, 2), np.float32)
  disp[..., 0] = d[:, None, None]
  spec = spectral.to_spectral_volume(disp, 8)
  frames = render.render_video(photo, spec, num_frames=30)
  assert np.all(frames[0] == photo)
  for i in (4, 11, 23):
    shift = d[i]
    xs = np.arange(64) - shift
    expect = np.stack([np.stack([np.interp(xs, np.arange(64), photo[y, :, c]) for c in range(3)], -1)
                       for y in range(40)])
    err = np.abs(frames[i].astype(np.float32) - expect)[:, 4:-4].mean()
    assert err < 2.0, (i, err)


def test_fill_holes_keeps_known_pixels_and_fills_the_rest():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((1, 16, 20, 3)), jnp.float32)
  mask = np.ones((1, 16, 20, 1), np.float32)
  mask[:, 5:9, 6:12] = 0
  out = np.asarray(image_ops.fill_holes(x * mask, jnp.asarray(mask)))
  np.testing.assert_allclose(out[mask[..., 0] > 0], np.asarray(x)[mask[..., 0] > 0])
  hole = out[0, 5:9, 6:12]
  assert hole.min() > 0.1 and hole.max() < 0.9  # interpolated from neighbours, not left at 0


def test_bad_inputs():
  with pytest.raises(ValueError, match='uint8 RGB'):
    render.render_frames(np.zeros((4, 4), np.uint8), np.zeros((2, 4, 4, 2)))
  with pytest.raises(ValueError, match='do not match'):
    render.render_frames(np.zeros((4, 4, 3), np.uint8), np.zeros((2, 5, 4, 2)))
