"""Rendering frames from a photo and its motion: ``render_video(image, spectral_volume, num_frames)``.

With a trained renderer (``gid_jax.models.renderer.Renderer``) every frame is synthesised from the
softmax-splatted feature pyramid. Without one, rendering still works: the photo's RGB is softmax-splatted
(importance W(p) = mean_t ||F_t(p)||, so moving foreground wins over what it passes) and the holes are
filled by push-pull interpolation (average the known pixels over ever coarser 2x2 blocks, then fill each
hole from the coarsest level that knows something about it).

Trajectories are taken relative to frame 0 (``disp_t - disp_0``), so frame 0 is the photo itself: a
spectral volume sampled by the model need not make its inverse FFT vanish exactly at t = 0.
Images: uint8 (H, W, 3) in and out; frames are rendered in chunks of ``chunk`` to bound memory.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gid_jax.motion import spectral
from gid_jax.ops import splat
from gid_jax.ops.image import fill_holes


@functools.partial(jax.jit, static_argnames='mode')
def splat_frames(image_1xHxWx3: jax.Array, flow_BxHxWx2: jax.Array, importance_1xHxWx1: jax.Array,
                 mode: str = 'softmax') -> jax.Array:
  """The renderer-free path: RGB splatting (softmax by default; 'average' is the paper's "baseline splat"
  ablation) + push-pull hole filling, images in [-1, 1]."""
  b = flow_BxHxWx2.shape[0]
  image = jnp.broadcast_to(image_1xHxWx3, (b,) + image_1xHxWx3.shape[1:])
  imp = jnp.broadcast_to(importance_1xHxWx1, (b,) + importance_1xHxWx1.shape[1:])
  out, mask = splat.softmax_splat(image, flow_BxHxWx2, imp, mode=mode, return_mask=True)
  return fill_holes(out, mask)


@functools.partial(jax.jit, static_argnums=0)
def _renderer_frames(graphdef, state, image_1xHxWx3, flow_BxHxWx2, importance_1xHxWx1):
  model = nnx.merge(graphdef, state)
  b = flow_BxHxWx2.shape[0]
  image = jnp.broadcast_to(image_1xHxWx3, (b,) + image_1xHxWx3.shape[1:])
  imp = jnp.broadcast_to(importance_1xHxWx1, (b,) + importance_1xHxWx1.shape[1:])
  return model(image, flow_BxHxWx2, imp)


def to_float(image_HxWx3: np.ndarray) -> jax.Array:
  image = np.asarray(image_HxWx3)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}')
  return jnp.asarray(image, jnp.float32) / 127.5 - 1.0


def to_uint8(x: jax.Array) -> np.ndarray:
  return np.asarray(jnp.clip(jnp.round((jnp.asarray(x) + 1.0) * 127.5), 0, 255)).astype(np.uint8)


def render_frames(image_HxWx3: np.ndarray, disp_TxHxWx2, renderer=None, chunk: int = 16,
                  importance_HxWx1=None, splat_mode: str = 'softmax', progress=None) -> np.ndarray:
  """Frames (T, H, W, 3) uint8 of the photo moved by ``disp`` (pixels of frame 0 -> their positions).

  ``splat_mode`` picks the RGB splat of the renderer-free path (used when ``renderer`` is None).
  ``progress(done, total)`` is called after every chunk of frames."""
  img = to_float(image_HxWx3)
  disp = jnp.asarray(disp_TxHxWx2, jnp.float32)
  if disp.ndim != 4 or disp.shape[1:] != img.shape[:2] + (2,):
    raise ValueError(f'displacements {tuple(disp.shape)} do not match the image {tuple(img.shape)}: '
                     f'expected (T, {img.shape[0]}, {img.shape[1]}, 2)')
  imp = splat.splat_weight(disp) if importance_HxWx1 is None else jnp.asarray(importance_HxWx1)
  if renderer is not None:
    graphdef, state = nnx.split(renderer)
    fn = lambda f: _renderer_frames(graphdef, state, img[None], f, imp[None])
  else:
    fn = lambda f: splat_frames(img[None], f, imp[None], mode=splat_mode)
  frames = []
  if progress is not None:
    progress(0, disp.shape[0])  # starting (the first chunk compiles)
  for i in range(0, disp.shape[0], chunk):
    f = disp[i:i + chunk]
    n = f.shape[0]
    if n < chunk and disp.shape[0] > chunk:  # pad the last chunk: one compiled shape for all chunks
      f = jnp.concatenate([f, jnp.zeros((chunk - n,) + f.shape[1:], f.dtype)])
    frames.append(to_uint8(fn(f))[:n])
    if progress is not None:
      progress(i + n, disp.shape[0])
  return np.concatenate(frames)


def render_video(image_HxWx3: np.ndarray, spectral_volume_KxHxWx4, num_frames: int = 150,
                 renderer=None, chunk: int = 16, splat_mode: str = 'softmax') -> np.ndarray:
  """Photo + spectral volume (pixels) -> frames (num_frames, H, W, 3) uint8; frame 0 is the photo."""
  disp = spectral.to_displacements(jnp.asarray(spectral_volume_KxHxWx4, jnp.float32), num_frames)
  disp = disp - disp[:1]
  return render_frames(image_HxWx3, disp, renderer, chunk, splat_mode=splat_mode)
