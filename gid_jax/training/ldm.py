"""Motion LDM training task: stage 1 (slices), stage 2 (frequency attention) and the volume ablation.

``derive_facts(config)`` computes, without changing the config, what the run needs beyond it: the data it
sees (``num_freqs`` and ``normalize``: stage 2 inherits its stage-1 run's), ``data_info`` (size, K, T, fps)
and ``norm_stats_json`` from the dataset, ``vae.model`` and ``latent_scale`` from the VAE
run (stage 1) or from the stage-1 run (stage 2), and the U-Net's channel counts, K and mask head. They are
stored beside the config in every checkpoint (``gid_jax.runs``), so the checkpoint alone rebuilds and samples
the model without the dataset or the VAE run. ``make_task(config, facts)`` builds the task from the two.

Loss (SPEC section 4): the epsilon-prediction MSE on the frozen VAE's latents of the normalised spectral
volume; the first frame is zeroed for ``diffusion.cond_dropout`` of the examples (classifier-free
guidance). With frequency attention all K slices of an example share one noise level (they are denoised
together at sampling time); without it each slice draws its own.

Auxiliary moving-mask loss (``aux_mask_weight`` > 0; not in the paper, off by default). Spectral volumes
have random phases, so where things move changes only the *variance* of the latents, never their mean;
the eps loss then rewards reading *where* from the first frame only at high noise, with weight ~SNR
(0.005 at t = 999), and a tiny U-Net learns to read it from the noisy latent instead: its predictions were
the same with and without the image (``eval.motion_report --condition-check``), and samples placed motion
at random. The auxiliary loss asks a 1x1 head on the U-Net's bottleneck (``aux_mask_at='middle'``, the default) or
on its last features (``'out'``) for the moving mask (``moving_fraction``, binary cross-entropy) at every
noise level, which at high noise only the image can answer.

Latent cache (``cache_latents``, on by default). The VAE is frozen in every LDM run, so its latents of the
training set never change: the run encodes each process's share of the training split once at start (and on
resume), keeps ``image`` / ``z0`` (scaled posterior means, exactly what ``MotionLDM.encode`` gives) /
``mask`` (the auxiliary target) in memory, and every step trains the U-Net only: no ArrayRecord decoding, no
VAE encoder. Memory: K x h x w x L floats per example (16 x 20 x 32 x 4 x 4 B = 160 KiB at size=mini with a
factor-2 VAE); turn it off for datasets that do not fit (``--config.cache_latents=False``). The shuffle order
is the uncached pipeline's (same seed, same examples per step).

Evaluation during training (``config.eval_every``): the EMA model samples one volume per image of the
held-out batch (``eval_ddim_steps`` DDIM steps, the config's ``sampling`` eta and guidance, the same noise at
every evaluation) and is scored against the true volumes in pixel units (``gid_jax.eval.motion_metrics``):
``power_log_err`` (mean |log P_pred / P_true| over bins k >= 1), ``moving_auc`` / ``moving_iou`` (where it
moves; moving = RMS motion above ``aux_mask_px``), ``pixel_spectrum_fd`` (pixel-spectrum Fréchet distance),
``amp_moving_ratio`` and ``amp_still_ratio`` (predicted RMS motion on truly moving / still pixels over the
truth's on moving ones): the numbers of the motion-model report, on a small fixed batch.
"""

from __future__ import annotations

import logging

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding

from gid_jax import sharding as sharding_lib
from gid_jax.configs import ldm as ldm_config
from gid_jax.data import pipeline
from gid_jax.diffusion import motion_sampler, schedules
from gid_jax.eval import motion_metrics as mm
from gid_jax.models import layers
from gid_jax.models import ldm as ldm_lib
from gid_jax.models import unet as unet_lib
from gid_jax.motion import normalize as norm_lib
from gid_jax.motion import spectral
from gid_jax.runs import checkpoints
from gid_jax.training import latents as latents_lib
from gid_jax.training import loop
from gid_jax.training import vae as vae_task

log = logging.getLogger('gid_jax.train')
TRAINABLE = checkpoints.LDM_TRAINABLE


def load_ldm(workdir: str, ema: bool = True):
  """(config, MotionLDM) of a trained LDM run (stage 1, stage 2 or volume) or export."""
  return checkpoints.load_kind(workdir, 'ldm', ema)


def _measure_latent_scale(vae, data_dir: str, stats, num_examples: int = 32) -> float:
  """1 / std of the VAE's latent means over the first training examples (LDM's scale factor)."""
  ds = pipeline.make_dataset(data_dir, 'train', batch_size=1, shuffle=False, num_epochs=1,
                             shard_index=0, shard_count=1, stats=stats)
  encode = nnx.jit(lambda m, x: m.encode(x)[0])
  zs = []
  for i, batch in enumerate(ds):
    if i >= num_examples:
      break
    nspec = batch['nspec']
    zs.append(np.asarray(encode(vae, jnp.asarray(nspec.reshape(-1, *nspec.shape[2:])))))
  std = float(np.std(np.concatenate(zs)))
  if not np.isfinite(std) or std <= 0:
    raise ValueError(f'the VAE latents have std {std}: is the VAE run trained?')
  return 1.0 / std


class _Cached:
  """A random-access source over in-memory arrays of equal length (grain.MapDataset.source reads it)."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    self.arrays = arrays
    self.n = len(next(iter(arrays.values())))

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i):
    return {k: v[i] for k, v in self.arrays.items()}


def encode_training_set(cfg, model, split: str = 'train', batch_size: int = 8) -> dict[str, np.ndarray]:
  """This process's share of ``split``, encoded once by ``model``'s (a MotionLDM's) frozen VAE: image / z0 /
  mask arrays, z0 exactly as ``model.encode`` gives it."""
  stats = norm_lib.NormStats.from_json(cfg.norm_stats_json)
  mask_px = float(cfg.aux_mask_px)
  model = nnx.merge(*nnx.split(model))  # the same weights, with this process's own (unsharded) sample order
  model.groups = None

  @nnx.jit
  def encode(m, nspec):
    z = m.encode(nspec)
    return z, moving_fraction(nspec, stats, mask_px, z.shape[2:4])

  ds = pipeline.make_dataset(cfg.data_dir, split, batch_size=batch_size, shuffle=False, num_epochs=1,
                             drop_remainder=False, stats=stats)  # this process's shard
  out = {'image': [], 'z0': [], 'mask': []}
  for batch in ds:
    z, mask = encode(model, jnp.asarray(batch['nspec']))
    out['image'].append(batch['image'])
    out['z0'].append(np.asarray(z))
    out['mask'].append(np.asarray(mask))
  return {k: np.concatenate(v) for k, v in out.items()}


def latent_dataset(cfg, model, split: str = 'train'):
  """Batches of image / z0 / mask from :func:`encode_training_set`, shuffled and repeated as
  ``vae_task.motion_dataset`` would (same seed, same order); ``cache_latents=False`` gives that instead, and
  ``latents_dir`` batches of image / z_mean / rms from a latent dataset on disk (``training.latents``)."""
  if cfg.latents_dir:
    latents_lib.check(cfg.latents_dir, model, cfg.norm_stats_json)
    return latents_lib.dataset(cfg.latents_dir, split, batch_size=vae_task.process_batch_size(cfg), seed=cfg.seed,
                               prefetch=cfg.prefetch, worker_count=cfg.data_workers)
  if not cfg.cache_latents:
    return vae_task.motion_dataset(cfg, split, norm_lib.NormStats.from_json(cfg.norm_stats_json))
  batch_size = vae_task.process_batch_size(cfg)
  arrays = encode_training_set(cfg, model, split)
  log.info('latent cache: %d examples, %.0f MiB', len(arrays['z0']),
           sum(a.nbytes for a in arrays.values()) / 2 ** 20)
  ds = grain.MapDataset.source(_Cached(arrays)).shuffle(seed=cfg.seed).repeat(None)
  return ds.batch(batch_size, drop_remainder=True).to_iter_dataset(pipeline.read_options(cfg.prefetch))


def moving_fraction(nspec_BxKxHxWx4: jax.Array, stats, threshold_px: float, latent_hw) -> jax.Array:
  """B x h x w: the fraction of each latent pixel's image pixels whose motion RMS (``spectral.motion_rms``
  of the de-normalised volume) exceeds ``threshold_px``; the target of the auxiliary moving-mask loss."""
  return pooled_fraction(spectral.motion_rms(norm_lib.denormalize(nspec_BxKxHxWx4, stats)), threshold_px,
                         latent_hw)


def pooled_fraction(rms_BxHxW: jax.Array, threshold_px: float, latent_hw) -> jax.Array:
  """:func:`moving_fraction` of a per-pixel motion RMS (what a latent dataset stores)."""
  moving = (rms_BxHxW > threshold_px).astype(jnp.float32)
  b, hh, ww = moving.shape
  h, w = latent_hw
  return moving.reshape(b, h, hh // h, w, ww // w).mean(axis=(2, 4))


def _check_number(name: str, value, bound: str):
  """``value`` if it is a finite number satisfying ``bound`` ('>= 0 ...' or '> 0 ...'), else a one-line error."""
  ok = isinstance(value, (int, float)) and np.isfinite(value)
  ok = ok and (value > 0 if bound.startswith('> 0') else value >= 0)
  if not ok:
    raise ValueError(f'config.{name} must be a finite number {bound}, got {value!r}')
  return value


def check_config(config) -> None:
  """The LDM options' values and combinations; a one-line ValueError for the first one that is wrong."""
  vae_task.require_data_dir(config)
  if config.mode not in ldm_lib.MODES:
    raise ValueError(f'config.mode must be one of {ldm_lib.MODES}, got {config.mode!r}')
  if config.trainable not in TRAINABLE:
    raise ValueError(f'config.trainable must be one of {tuple(TRAINABLE)}, got {config.trainable!r}')
  _check_number('diffusion.min_snr_gamma', config.diffusion.min_snr_gamma, '>= 0 (0 = off)')
  _check_number('aux_mask_weight', config.aux_mask_weight, '>= 0 (0 = off)')
  _check_number('aux_mask_px', config.aux_mask_px, '> 0 (pixels)')
  if config.aux_mask_at not in unet_lib.MASK_HEADS[1:]:
    raise ValueError(f'config.aux_mask_at must be one of {unet_lib.MASK_HEADS[1:]}, got {config.aux_mask_at!r}')
  if config.trainable == 'freq_attn':
    if not config.stage1_workdir:
      raise ValueError('config.stage1_workdir is empty: stage 2 needs a trained configs/ldm.py run')
    if not config.model.freq_attention:
      raise ValueError('stage 2 (trainable=freq_attn) needs config.model.freq_attention=True')
  elif not config.vae_workdir:
    raise ValueError('config.vae_workdir is empty: pass a trained configs/vae.py run')


def derive_facts(config) -> dict:
  """What a fresh run of ``config`` derives from its inputs (module docstring); ``config`` is not changed.

  Stage 2 sees the data exactly as its stage-1 run did (its ``num_freqs`` and ``normalize``: a different
  non-default value here is an error) and keeps its VAE, latent scale and mask head.
  """
  check_config(config)
  default = ldm_config.get_config(f'size={config.size}')
  num_freqs, normalize, mask_head = config.num_freqs, config.normalize, ''
  if config.aux_mask_weight > 0:
    mask_head = config.aux_mask_at
  s1 = None
  if config.trainable == 'freq_attn':
    s1 = checkpoints.read_config(config.stage1_workdir)
    for name in ('num_freqs', 'normalize'):
      if config[name] not in (s1[name], default[name]):
        raise ValueError(f'{name} is {config[name]!r} but the stage-1 run used {s1[name]!r}')
    num_freqs, normalize = s1.num_freqs, s1.normalize
    for name in ('widths', 'blocks', 'attention', 'heads', 'freq_embedding', 'dropout', 'cond_mode'):
      if tuple(np.atleast_1d(s1.model[name])) != tuple(np.atleast_1d(config.model[name])):
        raise ValueError(f'model.{name} is {config.model[name]} but the stage-1 run used {s1.model[name]}')
    # The stage-1 weights are loaded whole, the auxiliary mask head included.
    mask_head = s1.model.mask_head
    if config.aux_mask_weight > 0 and not mask_head:
      raise ValueError('aux_mask_weight > 0 in stage 2 needs a stage-1 run trained with aux_mask_weight > 0 '
                       '(its mask head is loaded, not trained, here)')
  built = pipeline.load_build_config(config.data_dir)
  stats = pipeline.training_stats(config.data_dir, normalize, num_freqs)
  k = stats.num_freqs
  facts = {'data_info': {**{n: built[n] for n in ('width', 'height', 'num_frames', 'fps')}, 'num_freqs': k,
                         'image_scale': int(built.get('image_scale', 1))},
           'norm_stats_json': stats.to_json()}
  if s1 is not None:
    if s1.data_info.num_freqs != k:
      raise ValueError(f'the stage-1 run has K={s1.data_info.num_freqs}, the dataset K={k}')
    if s1.data_info.image_scale != facts['data_info']['image_scale']:
      raise ValueError(f"the stage-1 run's data has image_scale={s1.data_info.image_scale}, this "
                       f"dataset {facts['data_info']['image_scale']}")
    vae_model, latent_scale = s1.vae.model.to_dict(), float(s1.latent_scale)
  else:
    vae_cfg, vae = checkpoints.load_vae(config.vae_workdir)
    vae_model = vae_cfg.model.to_dict()
    if vae_cfg.normalize != normalize:
      log.warning('the VAE of %s was trained with normalize=%r but this run uses %r: its latents may not '
                  'fit the data', config.vae_workdir, vae_cfg.normalize, normalize)
    vae_stats = checkpoints.read_run(config.vae_workdir)[1].get('norm_stats_json')  # none: a VAE before 12-07
    if vae_stats and not _same_scales(norm_lib.NormStats.from_json(vae_stats), stats):
      log.warning('the VAE of %s was trained on data normalised with other statistics than %s (another dataset, '
                  'or statistics refitted since): its latents may not fit the data; train a VAE on it',
                  config.vae_workdir, config.data_dir)
    latent_scale = float(config.latent_scale)
    if not latent_scale:
      latent_scale = _measure_latent_scale(vae, config.data_dir, stats)
      log.info('latent scale %.4f', latent_scale)
  return dict(model_facts(config, facts['data_info'], facts['norm_stats_json'], vae_model, latent_scale,
                          mask_head), num_freqs=num_freqs, normalize=normalize)


def _same_scales(a: norm_lib.NormStats, b: norm_lib.NormStats, rtol: float = 0.05) -> bool:
  """Whether two normalisations agree on the frequencies both have (a run may use the first K' only)."""
  k = min(a.num_freqs, b.num_freqs)
  return a.power == b.power and np.allclose(a.scales_Kx4[:k], b.scales_Kx4[:k], rtol=rtol, atol=0.0)


def model_facts(config, data_info: dict, norm_stats_json: str, vae_model: dict, latent_scale: float,
                mask_head: str) -> dict:
  """The facts of an LDM run (:func:`derive_facts`) from what it found: the data's ``data_info`` (width,
  height, num_frames, fps, num_freqs, image_scale) and normalisation, the VAE's model config and latent scale,
  the mask head; the U-Net's channel counts follow from them."""
  k = int(data_info['num_freqs'])
  channels = int(vae_model['latent_channels']) * (k if config.mode == 'volume' else 1)
  return {'data_info': dict(data_info), 'norm_stats_json': norm_stats_json, 'latent_scale': float(latent_scale),
          'vae': {'model': dict(vae_model)},
          'model': {'cond_channels': cond_channels(config.model.cond_mode, vae_model, int(data_info['image_scale'])),
                    'num_freqs': k,
                    'in_channels': channels, 'out_channels': channels, 'mask_head': mask_head}}


def cond_channels(cond_mode: str, vae_model, image_scale: int = 1) -> int:
  """Channels of the first-frame condition: 3 resized, or 3 f^2 space-to-depth (f = the VAE's downsampling
  times the data's ``image_scale``: the image is that much larger than the motion)."""
  f = 2 ** (len(vae_model['widths']) - 1) * image_scale
  return 3 * f * f if cond_mode == 'space_to_depth' else 3


def make_eval(cfg):
  """evaluate(model, rng) -> the motion metrics of the module docstring, of one sample per held-out image."""
  stats = norm_lib.NormStats.from_json(cfg.norm_stats_json)
  batch = vae_task.held_out_batch(cfg, stats=stats)
  image = np.asarray(batch['image'], np.float32)
  true = np.asarray(norm_lib.denormalize(batch['nspec'], stats))
  px = float(cfg.aux_mask_px)

  def evaluate(model, rng):
    model.groups = 1  # one process, no mesh: the training's sample layout and sharding constraints do not apply
    if cfg.model.freq_attention:
      model.unet.freq_sharding = None
    sampler = motion_sampler.MotionSampler(None, loaded=(cfg, model))
    pred = np.asarray(norm_lib.denormalize(sampler.sample_normalized(
        image, rng, num_steps=cfg.eval_ddim_steps, eta=cfg.sampling.eta, guidance=cfg.sampling.guidance), stats))
    amp_moving, amp_still = mm.amplitude_ratios(pred, true, px)
    return {'power_log_err': float(np.mean(np.abs(mm.power_spectrum_error(pred, true)['log'][1:]))),
            'moving_auc': mm.moving_region_auc(pred, true, px),
            'moving_iou': mm.moving_region_iou(pred, true, px),
            'pixel_spectrum_fd': mm.pixel_spectrum_distance(pred, true),
            'amp_moving_ratio': amp_moving, 'amp_still_ratio': amp_still}

  return evaluate


def make_task(config, facts: dict | None = None) -> loop.Task:
  """The task of ``config`` (as given) and its run's facts (:func:`derive_facts` of a fresh run, or the
  stored ones of a run being resumed; None derives them)."""
  if facts is None:
    facts = derive_facts(config)
  config = checkpoints.resolve(config, facts)
  sched = schedules.make_schedule(config.diffusion.schedule, config.diffusion.num_timesteps)
  objective = config.diffusion.objective
  gamma = float(config.diffusion.min_snr_gamma)
  shared_t = config.mode == 'volume' or config.model.freq_attention
  mask_weight = float(config.aux_mask_weight)
  where = {}
  if mask_weight > 0:
    stats = norm_lib.NormStats.from_json(config.norm_stats_json)
    mask_px = float(config.aux_mask_px)

  def pretrained(cfg, target):
    """Stage 2: the whole stage-1 model (its EMA U-Net and its VAE), everything but the new frequency
    attention; stage 1: the VAE, from a VAE run (its own paths) or another LDM run (under ``vae``)."""
    if cfg.trainable == 'freq_attn':
      return checkpoints.restore_params(cfg.stage1_workdir, target)
    if checkpoints.read_config(cfg.vae_workdir).trainer == 'ldm':
      return checkpoints.restore_params(cfg.vae_workdir, nnx.State({'vae': target['vae']}))
    return nnx.State({'vae': checkpoints.restore_params(cfg.vae_workdir, target['vae'])})

  def shard_model(model, mesh, cfg):
    where['volume'] = NamedSharding(mesh, sharding_lib.batch_spec(cfg, freq=True))
    if cfg.mode == 'slice':
      # Samples ordered (batch shard, k, example): each device keeps its own slices through the whole step.
      model.groups = sharding_lib.batch_shards(mesh, cfg)
      where['samples'] = NamedSharding(mesh, sharding_lib.sample_spec(cfg))
    if cfg.model.freq_attention:
      model.unet.freq_sharding = where['volume']

  def constrain(x, name):
    return jax.lax.with_sharding_constraint(x, where[name]) if name in where else x

  def loss_fn(model, batch, rng):
    k_t, k_n, k_c, k_d = jax.random.split(rng, 4)
    if 'z0' in batch:  # the latent cache
      z0 = batch['z0']  # B x K x h x w x L
    elif 'z_mean' in batch:  # a latent dataset on disk: the VAE's unscaled means, as MotionLDM.encode scales them
      z0 = batch['z_mean'] * model.latent_scale
    else:
      z0 = jax.lax.stop_gradient(model.encode(constrain(batch['nspec'], 'volume')))
    z0 = constrain(z0.astype(jnp.float32), 'volume')  # the diffusion maths in float32 (compute_dtype: the nets)
    b, k = z0.shape[:2]
    # Randomness is drawn per example and frequency, then put in the sample order (models.ldm): the order
    # (and so the mesh) never changes what a step computes.
    if shared_t:
      t = model.per_sample(jax.random.randint(k_t, (b,), 0, sched.num_timesteps))
    else:
      t = model.merge(jax.random.randint(k_t, (b, k), 0, sched.num_timesteps))
    x0 = constrain(model.to_samples(z0), 'samples')
    if config.mode == 'slice':
      noise = constrain(model.merge(jax.random.normal(k_n, z0.shape, z0.dtype)), 'samples')
    else:
      noise = jax.random.normal(k_n, x0.shape, x0.dtype)
    xt = schedules.add_noise(sched, x0, noise, t)
    cond = model.condition(batch['image'], z0.shape[2:4])
    keep = jax.random.uniform(k_c, (b,)) >= config.diffusion.cond_dropout
    cond = cond * keep[:, None, None, None]
    kw = dict(deterministic=False, rngs=layers.rngs(dropout=k_d))
    if mask_weight > 0:
      pred, logits = model.denoise(xt, t, cond, with_mask=True, **kw)
    else:
      pred = model.denoise(xt, t, cond, **kw)
    pred = pred.astype(jnp.float32)
    err = jnp.mean((pred - schedules.target(sched, x0, noise, t, objective)) ** 2, axis=tuple(range(1, x0.ndim)))
    mse = jnp.mean(err)
    metrics = {'mse': mse}
    loss = jnp.mean(schedules.min_snr_weight(sched, t, objective, gamma) * err) if gamma > 0 else mse
    if mask_weight > 0:
      if 'mask' in batch:
        target = batch['mask']
      elif 'rms' in batch:
        target = pooled_fraction(batch['rms'], mask_px, z0.shape[2:4])
      else:
        target = moving_fraction(batch['nspec'], stats, mask_px, z0.shape[2:4])
      target = model.per_sample(target)
      bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), target))
      metrics['mask_bce'] = bce
      loss = loss + mask_weight * bce
    return loss, metrics

  return loop.Task('ldm', loss_fn, latent_dataset, dataset_uses_model=True, pretrained=pretrained,
                   shard_model=shard_model, facts=facts, make_eval=make_eval)
