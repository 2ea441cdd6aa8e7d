"""ml_collections configs, one file per experiment, each ``get_config(arg)`` with ``size=...`` variants."""

import math

import ml_collections


def parse_size(arg: str | None, sizes, default: str) -> str:
  """The ``size`` of a config argument string like ``'size=tiny'`` (None or '' gives ``default``)."""
  size = default
  for kv in (arg or '').split(','):
    if not kv:
      continue
    k, _, v = kv.partition('=')
    if k != 'size':
      raise ValueError(f'unknown config argument {k!r} (expected size={"|".join(sizes)})')
    size = v
  if size not in sizes:
    raise ValueError(f'size must be one of {tuple(sizes)}, got {size!r}')
  return size


def run_length(batch_size: int, num_steps: int, checkpoint_every: int, eval_every: int = 0) -> dict:
  """Every trainer's seed, global batch (examples, split over processes), steps, logging and checkpointing:
  metrics every ``log_every`` steps, the newest ``keep_checkpoints`` checkpoints kept, and the evaluation on a
  fixed held-out batch of ``eval_examples`` examples of the data's ``test`` split every ``eval_every`` steps
  and at the last step (0: none; each trainer says what it measures: ``gid_jax.training.<trainer>``)."""
  return {'seed': 0, 'batch_size': batch_size, 'num_steps': num_steps, 'log_every': 50,
          'checkpoint_every': checkpoint_every, 'keep_checkpoints': 3, 'eval_every': eval_every,
          'eval_examples': 8}


def optimizer(learning_rate: float, warmup_steps: int = 100, weight_decay: float = 0.0) -> ml_collections.ConfigDict:
  """Every trainer's ``optimizer`` entry (``runs.checkpoints.make_optimizer``: AdamW, linear warm-up, cosine
  decay to 10% over ``decay_steps``, 0 = the whole run, global-norm clipping at ``grad_clip``)."""
  return ml_collections.ConfigDict({'learning_rate': learning_rate, 'warmup_steps': warmup_steps,
                                    'decay_steps': 0, 'weight_decay': weight_decay, 'grad_clip': 1.0})


def efficiency(size: str) -> dict:
  """How every trainer computes and reads data (no effect on what a step computes, up to float rounding):

  * ``compute_dtype``: 'float32', 'bfloat16' or 'auto' (bfloat16 on GPUs and TPUs, float32 on CPU; the
    default at size=paper). Parameters, gradients and optimiser state stay float32.
  * ``remat``: rematerialise every U-Net / VAE block in the backward pass: '' (off), 'dots' (keep the
    matrix-multiply and convolution outputs) or 'full' (keep only block inputs): less memory, more compute.
  * ``grad_accum``: micro-batches per update (the batch's activations divided by it, one update per batch).
  * ``data_workers``: grain worker processes per training process (0: decode in the training process);
    ``prefetch``: batches read ahead per process (grain's own default, 500, can hold gigabytes at paper size).
  * ``profile_steps``: capture a ``jax.profiler`` trace of that many steps after warm-up (process 0) into
    ``WORKDIR/profile`` (0: none); open it with TensorBoard's profile plugin or Perfetto.
  """
  return {'compute_dtype': 'auto' if size == 'paper' else 'float32', 'remat': '', 'grad_accum': 1,
          'data_workers': 0, 'prefetch': 8 if size == 'paper' else 4, 'profile_steps': 0}


def parallelism() -> dict:
  """The ``mesh`` and ``sharding`` entries every trainer's config has (``gid_jax.sharding`` reads them).

  Mesh axes: ``data`` and ``fsdp`` split the batch, ``fsdp`` also the parameters, ``freq`` the K slices of
  every example (frequency attention attends across it); one size may be -1 (all remaining devices). The
  rules map logical axes (the batch, the K axis of spectral volumes, parameters) to mesh axes.
  """
  return {'mesh': ml_collections.ConfigDict({'data': -1, 'fsdp': 1, 'freq': 1}),
          'sharding': ml_collections.ConfigDict(
              {'rules': (('batch', ('data', 'fsdp')), ('freq', 'freq'), ('params', 'fsdp'))})}


def override(config, **values):
  """Set nested values by dotted name, e.g. ``override(c, **{'flow.method': 'dis'})``; returns config."""
  for name, value in values.items():
    node = config
    *path, last = name.split('.')
    for p in path:
      node = node[p]
    node[last] = value
  return config


# Value ranges by key name, wherever the key sits in a config (optimizer.learning_rate, sampling.eta, ...).
# Checked by every entry point right after the config is loaded and overridden, before any model, dataset
# or device work (gid_jax.cli.load_config).
_POSITIVE = ('learning_rate', 'fps', 'percentile')
_AT_LEAST_1 = ('batch_size', 'grad_accum', 'prefetch', 'num_steps', 'log_every', 'checkpoint_every',
               'keep_checkpoints', 'num_timesteps', 'eval_examples', 'eval_ddim_steps',
               'width', 'height', 'start_stride', 'grad_scales', 'latent_channels', 'heads', 'blocks',
               'fid_frame_stride', 'sliding_fid_window')
_AT_LEAST_0 = ('data_workers', 'profile_steps', 'eval_every', 'warmup_steps', 'decay_steps', 'weight_decay', 'grad_clip', 'eta', 'guidance',
               'num_freqs',
               'frame_pairs_per_clip', 'min_snr_gamma', 'aux_mask_weight', 'aux_mask_px', 'kl_weight',
               'grad_weight', 'l1', 'perceptual', 'ssim', 'psnr', 'camera_motion_px', 'static_px', 'moving_px',
               'max_side')
_FRACTION = ('ema_decay', 'cond_dropout', 'dropout', 'test_fraction', 'static_quantile')  # in [0, 1)


# Keys with a fixed set of values (dotted paths from the config's root). The libraries that use them keep
# their own constants; tests/test_cli.py checks that these agree with them.
CHOICES = {
    'mode': ('slice', 'volume'),  # models.ldm.MODES (ldm configs)
    'compute_dtype': ('auto', 'float32', 'bfloat16'),  # models.layers.COMPUTE_DTYPES + 'auto'
    'remat': ('', 'full', 'dots'),  # models.layers.REMAT_POLICIES
    'trainable': ('unet', 'freq_attn'),  # training.ldm.TRAINABLE
    'aux_mask_at': ('out', 'middle'),  # models.unet.MASK_HEADS[1:]
    'normalize': ('', 'image_size'),  # data.pipeline (vae / ldm configs)
    'model.rgb_base': ('softmax', 'average'),  # models.renderer.RGB_BASES
    'model.cond_mode': ('space_to_depth', 'resize'),  # models.ldm.COND_MODES
    'diffusion.objective': ('eps', 'v'),  # diffusion.schedules.OBJECTIVES
    'diffusion.schedule': ('linear', 'cosine'),  # diffusion.schedules.KINDS
    'normalize.mode': ('adaptive', 'image_size'),  # motion.normalize.MODES (data config)
    'normalize.power': ('sqrt', 'none'),  # motion.normalize.POWERS
    'flow.method': ('dis', 'farneback', 'ground_truth', 'auto'),  # data.build.FLOW_METHODS
    'flow.color': ('gray', 'lab'),  # motion.flow.COLORS
}


def check_ranges(config, prefix: str = 'config.') -> None:
  """ValueError (one line naming the key) for a value out of its range, not among its choices, or a
  non-finite number."""
  for key, value in config.items():
    name = prefix + key
    if hasattr(value, 'items'):
      check_ranges(value, name + '.')
      continue
    path = name[len('config.'):]
    if path in CHOICES and isinstance(value, str) and value not in CHOICES[path]:
      raise ValueError(f'{name} must be one of {CHOICES[path]}, got {value!r}')
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    if not math.isfinite(value):
      raise ValueError(f'{name} must be a finite number, got {value}')
    if key in _POSITIVE and not value > 0:
      raise ValueError(f'{name} must be > 0, got {value}')
    if key in _AT_LEAST_1 and not value >= 1:
      raise ValueError(f'{name} must be >= 1, got {value}')
    if key in _AT_LEAST_0 and not value >= 0:
      raise ValueError(f'{name} must be >= 0, got {value}')
    if key in _FRACTION and not 0 <= value < 1:
      raise ValueError(f'{name} must be in [0, 1), got {value}')
    if key == 'num_frames' and not value >= 2:
      raise ValueError(f'{name} must be >= 2, got {value}')
    if key == 'mask_gate' and not 0 <= value <= 1:
      raise ValueError(f'{name} must be in [0, 1] (0 = off), got {value}')
    if key == 'percentile' and not value <= 100:
      raise ValueError(f'{name} must be in (0, 100], got {value}')
