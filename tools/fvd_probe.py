"""What FVD rewards on the Table-1 set: the true motion altered one property at a time, and the model's own.

    python tools/fvd_probe.py [--checkpoint RUN_OR_EXPORT] [--guidance 2.5] [--steps 50] [--out out/fvd_probe]
                              [--model-only] [--mask-gate G] [--rows 'A;B'] [--videos DIR] [--world-seed 1000]
                              [--world-still-fraction 0]

The `size=mini` synthetic set of configs/eval.py (the plants world's held-out scenes, exact motion), FVD over
the first 16 frames against the real videos' features (taken from the Table-1 cache when it has them), each
variant rendered with the bundled renderer. Variants of the true spectral volume S and the model's P (one
sample per clip, seed 0 per batch of 8, as gid-evaluate samples): amplitude scaled, blurred, still pixels
contaminated with the model's motion there, amplitude of one with the phase of the other, the model's motion
kept only where the truth moves, and the world resampled: each clip's scene made again from its picture with
another seed (what a model that learned the world exactly would sample). ``--mask-gate`` samples the model
with that gate (default: the checkpoint's). Prints one table row per variant with its motion metrics.
"""

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from gid_jax import animate
from gid_jax import evaluate as ev
from gid_jax.configs import eval as eval_config
from gid_jax.data import synthetic
from gid_jax.eval import frechet
from gid_jax.eval import metrics
from gid_jax.eval import motion_metrics as mm
from gid_jax.motion import flow as flow_lib
from gid_jax.motion import spectral
from gid_jax.render import video as render_video

FRAMES = 16


def _complex(spec):
  return spec[..., 0::2] + 1j * spec[..., 1::2]


def _real(c):
  out = np.empty(c.shape[:-1] + (4,), np.float32)
  out[..., 0::2], out[..., 1::2] = c.real, c.imag
  return out


def amp_phase(amp_from, phase_from):
  """Per pixel and bin, |amp_from| with the phase of ``phase_from`` (x and y separately)."""
  a, p = _complex(amp_from), _complex(phase_from)
  return _real(np.abs(a) * np.exp(1j * np.angle(p)))


def blur(spec, sigma):
  return ndimage.gaussian_filter(spec, (0, 0, sigma, sigma, 0)).astype(np.float32)


def render(evalset, spec, renderer, num_frames):
  if spec is None:
    return np.repeat(evalset.images[:, None], FRAMES, axis=1)
  out = []
  for i in range(len(spec)):
    disp = spectral.displacements_at(jnp.asarray(spec[i]), np.arange(FRAMES), num_frames)
    out.append(render_video.render_frames(evalset.images[i], disp - disp[:1], renderer))
  return np.stack(out)


def world_resampled(evalset, videos_dir, num_frames, seed=1000, wind_as_truth=False, still_fraction=0.0):
  """The plants world's own sampler for each clip's picture: the scene made again from its rest photo with
  another seed (what a model that learned the world exactly would sample), ``still_fraction`` of them stilled at
  random (give the set's own: 0, the default since 2026-12-08, or 0.15 for the sets made before).
  ``wind_as_truth``: a scene is still exactly when the true one is (amplitudes, directions and phases still
  drawn afresh)."""
  out = []
  k, h, w = evalset.spec.shape[1:4]
  truly_still = ~(np.asarray(mm.motion_rms(evalset.spec)) > 0.1).reshape(len(evalset.spec), -1).any(1)
  for clip_id, still in zip(evalset.clip_ids, truly_still):
    if wind_as_truth and still:
      out.append(np.zeros(evalset.spec.shape[1:], np.float32))
      continue
    vid, start = clip_id.rsplit('@', 1)
    scene = synthetic.Scene.load(synthetic.scene_path(os.path.join(videos_dir, vid + '.mp4')))
    again = synthetic.make_scene(scene.photo, seed, width=scene.width, height=scene.height, fps=scene.fps,
                                 num_frames=scene.num_frames, world='plants',
                                 still_fraction=0.0 if wind_as_truth else still_fraction)
    disp = flow_lib.resize_displacements(synthetic.trajectories(again, int(start), num_frames), w, h)
    out.append(np.asarray(spectral.to_spectral_volume(disp, k), np.float32))
  return np.stack(out)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--checkpoint', default=animate.DEFAULT_CHECKPOINT)
  ap.add_argument('--guidance', type=float, default=2.5)
  ap.add_argument('--steps', type=int, default=50)
  ap.add_argument('--mask-gate', type=float, default=None, help="mask gate (default: the checkpoint's)")
  ap.add_argument('--out', default='out/fvd_probe')
  ap.add_argument('--cache', default='out/eval_table_mini_f2', help='a Table-1 out_dir whose real features to reuse')
  ap.add_argument('--model-only', action='store_true', help="only the model's rows (a quick FVD of a new run)")
  ap.add_argument('--rows', default='', help="';'-separated row names to compute (default: all)")
  ap.add_argument('--world-seed', type=int, default=1000, help='seed of the world-resampled rows')
  ap.add_argument('--world-still-fraction', type=float, default=0.0,
                  help="the world-resampled rows' share of scenes stilled at random (the set's --still-fraction)")
  ap.add_argument('--videos', default='', help="another folder of plants-world scenes (default: the set's)")
  a = ap.parse_args()
  os.makedirs(a.out, exist_ok=True)
  config = eval_config.get_config('size=mini')
  config.out_dir = a.cache
  if a.videos:
    config.sets.synthetic.videos = a.videos
  config.sampling.num_steps, config.sampling.guidance = a.steps, a.guidance
  if a.mask_gate is not None:
    config.sampling.mask_gate = a.mask_gate
  evalset = ev.load_set('synthetic', config.sets.synthetic, config)
  cache = ev._Cache(a.cache, True)
  real = cache.get(ev._real_key('synthetic', evalset, config))
  real16 = real['i3d16'] if real is not None else metrics.fvd_features(evalset.frames, num_frames=FRAMES,
                                                                         crop=tuple(config.crop))
  tag = f'{os.path.basename(os.path.normpath(a.checkpoint))}_w{a.guidance}_s{a.steps}'
  tag += '' if a.mask_gate is None else f'_g{a.mask_gate}'
  tag += '' if not a.videos else '_' + os.path.basename(os.path.normpath(a.videos))
  pred_path = os.path.join(a.out, f'pred_{tag}.npz')

  def model():
    if not os.path.exists(pred_path):
      np.savez(pred_path, spec=ev.sample_ldm(a.checkpoint, evalset, config.sampling))
    return np.load(pred_path)['spec']

  true = evalset.spec
  num_frames = evalset.frames.shape[1]
  moving = (np.asarray(mm.motion_rms(true)) > 0.1)[:, None, :, :, None]
  renderer = animate.load_renderer(animate.DEFAULT_RENDERER)
  videos = config.sets.synthetic.videos
  variants = {  # computed only when asked for
      'repeat I_0': lambda: None,
      'truth': lambda: true,
      'truth x 0.5': lambda: true * 0.5,
      'truth x 0.25': lambda: true * 0.25,
      'truth blurred (sigma 2 px)': lambda: blur(true, 2.0),
      'world resampled (another seed)': lambda: world_resampled(evalset, videos, num_frames, a.world_seed,
                                                                still_fraction=a.world_still_fraction),
      'world resampled (another seed) with the true stillness': lambda: world_resampled(
          evalset, videos, num_frames, a.world_seed, wind_as_truth=True),
      'truth + model motion on still pixels': lambda: true + model() * ~moving,
      'truth amplitude, model phase': lambda: amp_phase(true, model()),
      'model amplitude, true phase': lambda: amp_phase(model(), true),
      'model': model,
      'model x 2': lambda: model() * 2,
      'model on truly moving pixels only': lambda: model() * moving,
  }
  if a.model_only:
    variants = {k: v for k, v in variants.items() if k in ('model', 'model on truly moving pixels only')}
  if a.rows:
    unknown = set(a.rows.split(';')) - set(variants)
    if unknown:
      ap.error(f'--rows: unknown {sorted(unknown)}; rows are {list(variants)}')
    variants = {k: v for k, v in variants.items() if k in a.rows.split(';')}
  rows = {}
  for name, make in variants.items():
    spec = make()
    rendered = render(evalset, spec, renderer, num_frames)
    f = metrics.fvd_features(rendered, num_frames=FRAMES, crop=tuple(config.crop))
    row = {'fvd': frechet.frechet_distance_from_features(real16, f)}
    if spec is not None:
      am, ast = mm.amplitude_ratios(spec, true, 0.1)
      row.update(amp_moving=am, amp_still=ast, auc=mm.moving_region_auc(spec, true, 0.1))
    rows[name] = row
    cells = ' | '.join(f'{row.get(k, float("nan")):.3g}' for k in ('fvd', 'amp_moving', 'amp_still', 'auc'))
    print(f'| {name} | {cells} |', flush=True)
  with open(os.path.join(a.out, f'fvd_probe_{tag}_world{a.world_seed}.json'), 'w') as fh:
    json.dump(rows, fh, indent=1)


if __name__ == '__main__':
  main()
