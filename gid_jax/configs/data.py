"""Dataset config: how videos become (image, spectral volume) pairs.

Variants: ``configs/data.py:size=tiny|small|paper`` (paper is the default). Override any value on the
command line, e.g. ``--config.filters.camera_motion_px=0``.
"""

import ml_collections

from gid_jax.configs import parse_size

SIZES = {
    # (width, height, num_frames, num_freqs). Paper: 256 x 160, T = 150 frames (5 s at 30 fps), K = 16.
    'paper': (256, 160, 150, 16),
    # Same clip length and K, a quarter of the pixels: for CPU experiments that still follow the paper.
    'small': (128, 80, 150, 16),
    # For tests and minutes-long CPU runs: 1.33 s clips, so the 4 s bundled real clips still give clips.
    # K = 8 keeps bins 0..1.75 Hz, below Nyquist of 40 frames.
    'tiny': (64, 40, 40, 8),
    # The paper's clip length and K at tiny resolution: the bundled model's data (5 s cycles, no 1.3 s loop).
    'mini': (64, 40, 150, 16),
}


def get_config(arg=None):
  size = parse_size(arg, SIZES, 'paper')
  width, height, num_frames, num_freqs = SIZES[size]

  c = ml_collections.ConfigDict()
  c.size = size
  c.width = width
  c.height = height
  c.fps = 30.0  # every video is resampled to 30 fps, so bin k is always k * 30 / T Hz
  c.num_frames = num_frames
  c.num_freqs = num_freqs
  c.start_stride = 10  # SPEC: every 10th frame starts a clip
  # (I_0, I_t, F_t) triples per clip for the renderer's dataset (gid_frames); 0 = none.
  c.frame_pairs_per_clip = 2
  # The first frame in gid_motion (the motion model's condition) is stored at image_scale x (width x height):
  # the paper conditions on the latent of the full-resolution image, and what moves (thin blades, fine
  # texture) is read at that resolution. 1: at the motion's size (datasets older than the option).
  c.image_scale = 1
  c.spectral_dtype = 'float32'  # 'float16' halves the dataset (10.5 MB -> 5.2 MB a paper-size example)

  c.flow = ml_collections.ConfigDict()
  # 'dis' | 'farneback' estimate flow; 'ground_truth' reads the exact trajectories that the synthetic world
  # writes beside each video (<name>.scene.npz); 'auto' reads them where they exist and uses DIS elsewhere.
  c.flow.method = 'dis'
  c.flow.preset = 'medium'  # DIS: ultrafast | fast | medium | fine (medium: ~0.1-0.2 px EPE, ~4 ms/pair)
  c.flow.warm_start = True
  # Estimated flow is computed where it is accurate, then brought to width x height (gid_jax.motion.flow):
  # at the video's own resolution (centre crop), longer side capped at max_side (<= the dataset's longer
  # side: at the dataset size, the old behaviour), on CIE Lab with the channels' flows fused by their local
  # structure ('lab'), or on luminance only ('gray', the old behaviour: misses isoluminant colour regions).
  c.flow.max_side = 256
  c.flow.color = 'lab'

  c.filters = ml_collections.ConfigDict()
  # A public reimplementation drops clips with median flow > 0.5 px as camera motion; <= 0 disables.
  c.filters.camera_motion_px = 0.5
  # Clips whose moving pixels (99th percentile of mean |flow|) move less than this are static.
  c.filters.static_px = 0.1
  c.filters.static_quantile = 0.99

  c.split = ml_collections.ConfigDict()
  c.split.test_fraction = 0.1  # SPEC: 10% of *videos* held out
  c.split.seed = 0

  c.normalize = ml_collections.ConfigDict()
  c.normalize.mode = 'adaptive'  # 'adaptive' (paper) | 'image_size' (the "w/o adaptive norm" ablation)
  c.normalize.percentile = 95.0  # SPEC: 95th (a secondary account says 97th)
  # ... of the |coefficients| of at least this many pixels: exact synthetic motion is mostly exact zeros,
  # which would make the scale measure how much of a world moves (gid_jax.motion.normalize). 0 = all.
  c.normalize.min_magnitude = 1e-3
  c.normalize.power = 'sqrt'  # sign-sqrt beat log and reciprocal in the paper; 'none' to switch it off
  return c
