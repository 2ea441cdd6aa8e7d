"""Does the motion model learn? Held-out scenes, sampled spectral volumes against the exact ground truth.

    python -m gid_jax.eval.motion_report --data HELDOUT_DS --train-data TRAIN_DS \
        --run stage1=RUN_LDM --run stage2=RUN_LDM_FREQ --samples 2 --steps 50 --out results.json

For every held-out clip that starts at frame 0 (one per held-out video: the scene's first frame and its
exact spectral volume), each run samples ``--samples`` volumes; the "mean spectral volume" baseline is the
mean of the training set's volumes (pixel units). Reported, per method (see ``motion_metrics``):

* ``iou``: moving-region IoU: pixels whose RMS motion over a period exceeds ``--moving-px``;
* ``auc``: threshold-free localisation: ROC AUC of the predicted RMS motion as a detector of the truly
  moving pixels (0.5 = chance); it separates *where* from *how much* (IoU mixes both);
* ``power_log_err``: mean over k >= 1 of |log(mean power_k) - log(true mean power_k)|, and the powers;
* ``pixel_fd``: **pixel-spectrum Fréchet distance**, our distribution-level metric. Every pixel of every
  image gives a (K-1)-vector of log amplitudes log(eps + |S_k(p)|), k = 1..K-1; we fit a Gaussian to the
  true and to the predicted sets and take the Fréchet distance. Why this: the motion given an image is
  random (phases, directions, amplitudes vary between clips of the same scene), so per-sample errors punish
  correct-but-different samples; amplitudes are phase-free; the pooled per-pixel spectra capture what the
  renderer turns into motion: how much moves, how strongly, and which frequencies go together at a pixel.
  The mean spectral volume has near-zero non-DC amplitudes (random phases cancel), so it scores badly;
* ``coherence_err``: cross-frequency structure: the Frobenius distance between the (K-1) x (K-1)
  correlation matrices of per-pixel log amplitudes on moving pixels, predicted vs true; a model that
  predicts frequency slices independently gets wrong which frequencies move together;
* ``amp_log_err``: per-image mean |log amplitude error| on truly moving pixels (conditional accuracy);
* ``amp_moving_ratio``: the mean predicted RMS motion on truly moving pixels over the truth's there (1 =
  right amount), and ``amp_still_ratio``: the mean predicted RMS motion on truly still pixels over the
  truth's on moving ones (0 = still things stay still).

Two references for *where* things move, besides the truth of another clip: the AUC of the synthetic world's
own per-pixel movability score (``movability_auc``), and, with ``--probe-steps N``, a **direct moving-mask
classifier** (``placement_probe``): a small CNN trained for N steps on the training set to predict the
moving mask from the first frame, seen at the motion model's latent resolution. It is what plain supervised
learning gets out of the same images; when it cannot place motion on held-out pictures either, the limit is
the training pictures (too few, too alike), not the diffusion model.

``--condition-check`` asks whether a run uses the first frame at all (``condition_use``): the true volumes'
latents are noised to level t, the U-Net predicts x0 once with the image and once with the null (zeroed)
image, and the AUC of each prediction's decoded motion RMS as a detector of the truly moving pixels is
reported per t, with the mean |difference| of the two RMS maps. Equal AUCs mean the model places motion
from the noisy latent alone.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gid_jax import cli
from gid_jax.data import pipeline
from gid_jax.data import synthetic
from gid_jax.data import video as video_lib
from gid_jax.diffusion import motion_sampler, schedules
from gid_jax.errors import InputError
from gid_jax.eval import motion_metrics as mm
from gid_jax.fileio import atomic_write_text, check_output
from gid_jax.motion import normalize as norm_lib

def motion_metrics(pred_NxKxHxWx4: np.ndarray, true_NxKxHxWx4: np.ndarray, moving_px: float) -> dict:
  """The metrics of the module docstring; ``pred`` may hold several samples per true volume (tiled)."""
  reps = pred_NxKxHxWx4.shape[0] // true_NxKxHxWx4.shape[0]
  true = np.concatenate([true_NxKxHxWx4] * reps)
  pred = pred_NxKxHxWx4
  pw = mm.power_spectrum_error(pred, true)
  feat_p, feat_t = mm.pixel_features(pred), mm.pixel_features(true)
  k1 = feat_p.shape[1]
  rms_t, rms_p = np.asarray(mm.motion_rms(true)).reshape(-1), np.asarray(mm.motion_rms(pred)).reshape(-1)
  moving, moving_p = rms_t > moving_px, rms_p > moving_px
  amp_moving, amp_still = mm.amplitude_ratios(pred, true, moving_px)
  corr = lambda f: np.corrcoef(f, rowvar=False) if len(f) > k1 else np.full((k1, k1), np.nan)
  c_t, c_p = corr(feat_t[moving]), corr(feat_p[moving_p])
  return {
      'iou': mm.moving_region_iou(pred, true, moving_px),
      'auc': mm.moving_region_auc(pred, true, moving_px),
      'power_log_err': float(np.mean(np.abs(pw['log'][1:]))),
      'pred_power': pw['pred_power'].tolist(),
      'true_power': pw['true_power'].tolist(),
      'pixel_fd': mm.frechet(feat_t, feat_p),
      'coherence_err': float(np.linalg.norm(np.nan_to_num(c_p - c_t, nan=2.0))),
      'amp_log_err': float(np.mean(np.abs(feat_p[moving] - feat_t[moving]))),
      'moving_fraction': float(moving_p.mean()),
      # Mean RMS motion predicted on truly moving pixels / the truth's there, and on truly still pixels /
      # the truth's on moving ones (nan when the set has no moving or no still pixel).
      'amp_moving_ratio': amp_moving,
      'amp_still_ratio': amp_still,
      # Phase balance: mean |Im| / mean |Re| over bins k >= 1, predicted over the truth's (1 = as the truth;
      # near 0 = cosines only, every pixel at a turning point at frame 0: what a VAE that drops the
      # imaginary parts produces, docs/RESULTS.md).
      'imag_real_ratio': _imag_real(pred) / max(_imag_real(true), 1e-12),
  }


def _imag_real(spec_NxKxHxWx4: np.ndarray) -> float:
  s = np.asarray(spec_NxKxHxWx4)[:, 1:]
  return float(np.abs(s[..., 1::2]).mean() / max(float(np.abs(s[..., 0::2]).mean()), 1e-12))


def load_clips(data_dir: str, split: str, start_frame: int | None = 0, limit: int | None = None):
  """(images N x H x W x 3 uint8, true volumes N x K x H x W x 4 px) of the clips starting at start_frame."""
  src = pipeline.data_source(data_dir, split)
  found = {}
  for i in range(len(src)):
    ex = src[i]
    if start_frame is not None and int(ex['start_frame']) != start_frame:
      continue
    vid = ex['video_id'].decode() if isinstance(ex['video_id'], bytes) else str(ex['video_id'])
    found[vid] = (np.asarray(ex['image'], np.uint8), np.asarray(ex['spectral_volume'], np.float32))
  if not found:
    raise ValueError(f'{data_dir} split {split!r} has no clips starting at frame {start_frame}')
  vids = sorted(found)[:limit] if limit else sorted(found)
  return vids, np.stack([found[v][0] for v in vids]), np.stack([found[v][1] for v in vids])


def _rms_volume(rms_NxHxW: np.ndarray, like_NxKxHxWx4: np.ndarray) -> np.ndarray:
  """A volume shaped like ``like`` whose ``motion_rms`` is ``rms``: scores go through the IoU / AUC code."""
  vol = np.zeros(like_NxKxHxWx4.shape, np.float64)
  vol[:, 1, ..., 0] = np.asarray(rms_NxHxW, np.float64) / np.sqrt(2.0)
  return vol


def movability_auc(images_NxHxWx3: np.ndarray, true_NxKxHxWx4: np.ndarray, moving_px: float) -> float:
  """AUC of the synthetic world's own per-pixel movability score (2 x gradient + saturation, smoothed:
  ``gid_jax.data.synthetic``) as a detector of the truly moving pixels: how much of *where* things move a
  fixed rule reads off the image, without the scene's superpixels, ranking or random amplitudes."""
  score = np.stack([synthetic.movability(im) for im in images_NxHxWx3])
  return mm.moving_region_auc(_rms_volume(score, true_NxKxHxWx4), true_NxKxHxWx4, moving_px)


def placement_probe(train_data: str, images_NxHxWx3: np.ndarray, true_NxKxHxWx4: np.ndarray, moving_px: float,
                    steps: int, factor: int = 4, batch_size: int = 32, seed: int = 0) -> dict:
  """IoU / AUC of a direct moving-mask classifier (module docstring) on the held-out images.

  The classifier sees each first frame resized by 1/``factor`` (the LDM's condition at the tiny VAE's f = 4),
  four 3x3 convolutions (32, 64, 64, 1 channels, SiLU), its logits bilinearly upsampled to the frame; loss:
  per-pixel binary cross-entropy against ``motion_rms(true) > moving_px``; Adam 1e-3, ``steps`` steps of
  ``batch_size`` clips. Its moving mask is p > 0.5.
  """
  src = pipeline.data_source(train_data, 'train')
  x_tr = np.empty((len(src), *images_NxHxWx3.shape[1:]), np.float32)
  y_tr = np.empty((len(src), *images_NxHxWx3.shape[1:3]), np.float32)
  h, w = images_NxHxWx3.shape[1:3]
  for i in range(len(src)):
    ex = src[i]
    im = np.asarray(ex['image'], np.uint8)  # at the training data's image_scale: brought to the motion's size
    x_tr[i] = video_lib.center_crop_resize(im, w, h).astype(np.float32) / 127.5 - 1.0
    y_tr[i] = mm.motion_rms(np.asarray(ex['spectral_volume'], np.float32)) > moving_px

  class Net(nnx.Module):
    def __init__(self, rngs):
      chans = (3, 32, 64, 64, 1)
      self.convs = nnx.List([nnx.Conv(a, b, (3, 3), rngs=rngs) for a, b in zip(chans[:-1], chans[1:])])

    def __call__(self, x_BxHxWx3):
      b = x_BxHxWx3.shape[0]
      x = jax.image.resize(x_BxHxWx3, (b, h // factor, w // factor, 3), 'linear', antialias=True)
      for conv in self.convs[:-1]:
        x = jax.nn.silu(conv(x))
      return jax.image.resize(self.convs[-1](x)[..., 0], (b, h, w), 'linear')

  model = Net(nnx.Rngs(seed))
  opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt, x, y):
    loss = lambda m: optax.sigmoid_binary_cross_entropy(m(x), y).mean()
    value, grads = nnx.value_and_grad(loss)(model)
    opt.update(model, grads)
    return value

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(x_tr), batch_size)
    step(model, opt, jnp.asarray(x_tr[idx]), jnp.asarray(y_tr[idx]))
  prob = np.asarray(jax.nn.sigmoid(model(jnp.asarray(images_NxHxWx3, jnp.float32) / 127.5 - 1.0)), np.float64)
  fake = _rms_volume(2.0 * moving_px * prob, true_NxKxHxWx4)  # motion_rms(fake) > moving_px  <=>  prob > 0.5
  return {'iou': mm.moving_region_iou(fake, true_NxKxHxWx4, moving_px),
          'auc': mm.moving_region_auc(fake, true_NxKxHxWx4, moving_px),
          'moving_fraction': float((prob > 0.5).mean())}


def condition_use(run: str, images_NxHxWx3: np.ndarray, true_NxKxHxWx4: np.ndarray, moving_px: float,
                  levels=(1.0, 0.8, 0.6, 0.4, 0.2), seed: int = 0) -> list[dict]:
  """Per noise level t: AUC of one-step x0 predictions with and without the image (module docstring).

  ``levels`` are fractions of the schedule's T (1.0 = the last step, T - 1).
  """
  sampler = motion_sampler.load(run)  # cached: one load per run for sampling and the checks
  model, sched = sampler.model, sampler.sched
  objective = sampler.config.diffusion.objective
  x0 = model.to_samples(model.encode(jnp.asarray(norm_lib.normalize(true_NxKxHxWx4, sampler.stats))))
  latent_hw = x0.shape[1:3]
  motion_hw = true_NxKxHxWx4.shape[2:4]
  image = sampler.fit_images(images_NxHxWx3, motion_hw)
  cond = model.condition(jnp.asarray(image, jnp.float32) / 127.5 - 1.0, latent_hw)
  noise = jax.random.normal(jax.random.PRNGKey(seed), x0.shape, x0.dtype)

  @jax.jit
  def predict_volume(t, c):
    t_N = jnp.full((x0.shape[0],), t, jnp.int32)
    xt = schedules.add_noise(sched, x0, noise, t_N)
    x0_hat, _ = schedules.predict_x0_eps(sched, xt, t_N, model.denoise(xt, t_N, c), objective)
    return norm_lib.denormalize(model.decode(model.from_samples(x0_hat), motion_hw), sampler.stats)

  auc = lambda vol: mm.moving_region_auc(vol, true_NxKxHxWx4, moving_px)

  out = []
  for frac in levels:
    if not 0.0 <= frac <= 1.0:
      raise ValueError(f'noise level {frac} is not a fraction of T in [0, 1]')
    t = min(sched.num_timesteps - 1, int(round(frac * sched.num_timesteps)))
    with_image = np.asarray(predict_volume(t, cond))
    null = np.asarray(predict_volume(t, jnp.zeros_like(cond)))
    rms_image, rms_null = mm.motion_rms(with_image), mm.motion_rms(null)
    out.append({'t': int(t), 'auc_image': auc(with_image), 'auc_null': auc(null),
                'mean_abs_diff_px': float(np.abs(rms_image - rms_null).mean()),
                'mean_rms_px': float(rms_image.mean())})
  return out


def mean_volume(data_dir: str, split: str = 'train', limit: int = 2000) -> np.ndarray:
  src = pipeline.data_source(data_dir, split)
  n = min(len(src), limit)
  total = None
  for i in range(n):
    s = np.asarray(src[i]['spectral_volume'], np.float64)
    total = s if total is None else total + s
  return (total / n).astype(np.float32)


def sample_run(run: str, images: np.ndarray, motion_hw: tuple[int, int], samples: int, steps: int, eta: float,
               guidance: float, seed: int) -> tuple[np.ndarray, float]:
  """samples x N volumes of ``motion_hw`` (sample-major) and seconds per volume; ``images`` are resized to
  the run's image size for that motion."""
  sampler = motion_sampler.load(run)  # cached: one load per run for sampling and the checks
  images = sampler.fit_images(images, motion_hw)
  out = []
  t0 = None
  for s in range(samples):
    for i, image in enumerate(images):
      if s == 0 and i == 1:
        t0 = time.perf_counter()  # after compilation
      out.append(sampler.sample(image, num_steps=steps, eta=eta, guidance=guidance, seed=seed + 1000 * s + i))
  secs = (time.perf_counter() - t0) / max(1, len(out) - 1) if t0 else float('nan')
  return np.stack(out), secs


def vae_reconstruction(sampler, true_NxKxHxWx4) -> np.ndarray:
  """The loaded motion model's VAE applied to each true volume (normalised, encoded, decoded, denormalised)."""
  recon = []
  for spec in true_NxKxHxWx4:
    nspec = norm_lib.normalize(spec, sampler.stats)[None]
    out = sampler.model.decode(sampler.model.encode(nspec), spec.shape[1:3])[0]
    recon.append(np.asarray(norm_lib.denormalize(np.asarray(out), sampler.stats)))
  return np.stack(recon)


def main(argv=None) -> int:
  p = cli.Parser('python -m gid_jax.eval.motion_report', __doc__, progress=False)
  p.add_argument('--data', required=True, help='held-out dataset (a gid_jax.data.build --out folder)')
  p.add_argument('--split', default='test', help="the held-out dataset's split")
  p.add_argument('--train-data', required=True, help='training dataset, for the mean-volume baseline')
  p.add_argument('--run', action='append', default=[], help='NAME=WORKDIR of an LDM run (repeatable)')
  p.add_argument('--samples', type=int, default=2, help='samples per clip and run')
  p.add_argument('--steps', type=int, default=50, help='DDIM steps')
  p.add_argument('--eta', type=float, default=0.0, help='DDIM eta')
  p.add_argument('--guidance', type=float, default=0.0, help='classifier-free guidance weight w')
  p.add_argument('--seed', type=int, default=0, help='sampling seed')
  p.add_argument('--moving-px', type=float, default=0.1, help='motion RMS (px) above which a pixel moves')
  p.add_argument('--limit', type=int, default=None, help='at most this many held-out clips')
  p.add_argument('--condition-check', action='store_true',
                 help='per run: do one-step x0 predictions place motion better with the image than without?')
  p.add_argument('--probe-steps', type=int, default=0,
                 help='train the direct moving-mask classifier reference for this many steps (0 = off)')
  p.add_argument('--out', default=None, help='write the results as JSON here')
  p.add_argument('--overwrite', action='store_true', help='replace an existing --out')
  args = p.parse(argv)
  if args.out:
    try:
      check_output(args.out, args.overwrite, '--out', kind='file')
    except InputError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
  try:
    runs = dict(r.split('=', 1) for r in args.run)
  except ValueError:
    print(f'error: --run must be NAME=WORKDIR, got {args.run}', file=sys.stderr)
    return 2
  if args.probe_steps < 0:
    print(f'error: --probe-steps must be >= 0, got {args.probe_steps}', file=sys.stderr)
    return 2
  try:
    vids, full, true = load_clips(args.data, args.split, 0, args.limit)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: --data {str(e).splitlines()[0]}', file=sys.stderr)
    return 2
  # The first frames at the motion's size (a dataset of image_scale > 1 stores them larger: ``full``).
  images = video_lib.center_crop_resize_all(full, true.shape[3], true.shape[2])
  results = {'held_out_clips': len(images), 'settings': vars(args), 'methods': {}}
  # Reference: the truth of a later clip (frame 10) of the same scenes: same modes, other phases. What a
  # perfect sampler of the true motion distribution would score. Videos of exactly T frames have none.
  try:
    other = dict(zip(*load_clips(args.data, args.split, 10)[:3:2]))
  except ValueError:
    other = {}
    print('note: no clip starts at frame 10 (videos of T frames): the "truth, other clip" reference is left out',
          file=sys.stderr)
  if other and all(v in other for v in vids):
    results['methods']['truth, other clip (reference)'] = motion_metrics(np.stack([other[v] for v in vids]),
                                                                        true, args.moving_px)
  if runs:  # what the VAE alone keeps: encode and decode the true volumes (an upper bound for the LDM)
    recon = vae_reconstruction(motion_sampler.load(next(iter(runs.values()))), true)
    results['methods']['VAE reconstruction of the truth (reference)'] = motion_metrics(recon, true,
                                                                                      args.moving_px)
  results['movability_score_auc'] = movability_auc(images, true, args.moving_px)
  if args.probe_steps > 0:
    results['methods']['direct moving-mask classifier (reference)'] = placement_probe(
        args.train_data, images, true, args.moving_px, args.probe_steps, seed=args.seed)
  mean = mean_volume(args.train_data)
  results['methods']['mean spectral volume'] = motion_metrics(np.stack([mean] * len(images)), true,
                                                              args.moving_px)
  for name, run in runs.items():
    pred, secs = sample_run(run, full, true.shape[2:4], args.samples, args.steps, args.eta, args.guidance,
                            args.seed)
    results['methods'][name] = dict(motion_metrics(pred, true, args.moving_px), sec_per_volume=secs)
  keys = ('iou', 'auc', 'power_log_err', 'pixel_fd', 'coherence_err', 'amp_log_err', 'moving_fraction',
          'imag_real_ratio')
  moving = float((mm.motion_rms(true) > args.moving_px).mean())
  print(f'{len(images)} held-out clips; true moving fraction {moving:.3f}')
  print(f'AUC of the synthetic world\'s per-pixel movability score: {results["movability_score_auc"]:.3f}')
  print('| method | ' + ' | '.join(keys) + ' |')
  print('|---|' + '---:|' * len(keys))
  for name, m in results['methods'].items():
    print(f'| {name} | ' + ' | '.join(f'{m[k]:.4g}' if k in m else 'n/a' for k in keys) + ' |')
  if args.condition_check:
    results['condition_use'] = {}
    print('\n| run | t | AUC with image | AUC null image | mean abs diff px | mean RMS px |')
    print('|---|---:|---:|---:|---:|---:|')
    for name, run in runs.items():
      rows = results['condition_use'][name] = condition_use(run, full, true, args.moving_px, seed=args.seed)
      for r in rows:
        print(f'| {name} | {r["t"]} | {r["auc_image"]:.3f} | {r["auc_null"]:.3f} | {r["mean_abs_diff_px"]:.4f} | '
              f'{r["mean_rms_px"]:.4f} |')
  if args.out:
    atomic_write_text(args.out, json.dumps(results, indent=1))
  return 0


if __name__ == '__main__':
  sys.exit(main())
