"""Evaluation config: ``python -m gid_jax.evaluate --config=configs/eval.py[:size=tiny|mini|small|paper]``.

Rows (``order``) follow the paper's Table 1 and ablations; each ``methods.<name>`` is one of
``gid_jax.evaluate.KINDS``. The runs named here are the ones docs/RESULTS.md trains (tiny: the
synthetic-world runs under ``out/``); point them at yours with e.g. ``--config.methods.ours.run=RUN``, and
leave rows out with ``--config.order=ours,repeat_i0,truth``.

At ``size=tiny`` the dataset has K = 8 (T = 40 frames), so the K ablations are K = 4 (the first 4
frequencies of the same data) and K = 12 (a dataset built with 12); at ``size=paper`` they are the paper's
K = 4 / 8 / 24 around its K = 16.

At ``size=tiny`` "ours" is the previous bundled model (T = 40, K = 8, textured world), which
``tools/table1_tiny.sh`` restores from git history into ``out/bundled_tiny``, and the script trains the ablations
under ``out/abl`` at one smaller, equal budget next to a "full model" run at that budget (``full``), so
each ablation row has a like-for-like reference; "baseline splat" renders ours' volumes (same seed) with RGB
average splatting instead of the renderer.

At ``size=mini`` (64 x 40, T = 150, K = 16) "ours" is the bundled default model, stage 1 of the factor-2
plants-world model of ``tools/plants_model.sh``, against the stage 2 trained on it (frequency attention's effect)
on that script's held-out plants-world scenes (photos never seen in training), with the guidance w = 2.5 the
bundled model is shipped with and each checkpoint's own mask gate (the bundled model's 0.3; stage 2's 0); no ablations are trained at this size, and no real footage of at least 150 frames of the paper's domain
is at hand offline, so the real set is off.
"""

import os

import ml_collections

from gid_jax.configs import parse_size

SIZES = {'tiny': (64, 40), 'mini': (64, 40), 'small': (128, 80), 'paper': (256, 160)}
# The bundled default motion model (realpath: this file is also reached through the configs/ symlink).
BUNDLED = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), 'assets', 'default', 'ldm')
PLANTS_F2 = 'out/plants_f2'  # the bundled model's runs (tools/plants_model.sh, gid_jax/assets/README.md)
PREVIOUS_TINY = 'out/bundled_tiny'  # the bundled model before 2026-12-06 (tools/table1_tiny.sh restores it)


def _method(label, kind, run='', splat=''):
  return ml_collections.ConfigDict({'label': label, 'kind': kind, 'run': run, 'splat': splat})


def get_config(arg=None):
  size = parse_size(arg, SIZES, 'tiny')
  width, _ = SIZES[size]
  c = ml_collections.ConfigDict()
  c.size = size  # the data config (configs/data.py) the clips are cut with: frame size, fps, T, K
  c.out_dir = f'out/eval_table_{size}'
  c.overwrite = False  # True recomputes cached features
  c.train_data = 'data/ldm/ds'  # the training dataset: the mean-motion baseline's volumes
  c.renderer = ''  # '' = the bundled renderer, 'none' = RGB softmax splatting, or a renderer run/export
  c.moving_px = 0.1  # motion metrics: a pixel moves if its RMS motion exceeds this

  c.sets = ml_collections.ConfigDict()
  # Synthetic held-out scenes (photos never seen in training) with exact motion: docs/RESULTS.md makes them.
  # tiny: the first 12 of the 40 held-out scenes (3 of each held-out photo), one clip each: the Inception and
  # I3D networks at 299 / 224 pixels are most of the cost (about a minute per method and set on 2 CPU cores).
  c.sets.synthetic = ml_collections.ConfigDict({
      'label': 'Synthetic held-out', 'videos': 'data/ldm/videos_test', 'flow': 'ground_truth',
      'clips_per_video': 1, 'max_videos': 12 if size == 'tiny' else 0})
  # Real videos never seen in training; their "true" motion is estimated with optical flow.
  c.sets.real = ml_collections.ConfigDict({
      'label': 'Real held-out', 'videos': 'data/real_heldout', 'flow': 'dis', 'clips_per_video': 100,
      'max_videos': 0})

  if size == 'mini':
    return _mini(c, width)

  k = {'tiny': (4, 12), 'small': (4, 8, 24), 'paper': (4, 8, 24)}[size]
  runs = 'out' if size == 'tiny' else f'out/{size}'
  ours = PREVIOUS_TINY if size == 'tiny' else f'{runs}/ldm2'
  m = ml_collections.ConfigDict()
  m.ours = _method('Ours (stage 2: frequency attention)', 'ldm', ours)
  m.repeat_i0 = _method('Repeat I_0', 'repeat')
  m.mean_motion = _method('Mean spectral volume', 'mean')
  m.truth = _method('True motion + renderer (upper bound)', 'truth')
  ablations = ()
  if size == 'tiny':  # the ablations' like-for-like reference: the full model at their training budget
    m.full = _method('Full model, ablation budget', 'ldm', f'{runs}/abl/full_2')
    ablations = ('full',)
  for kk in k:
    m[f'k{kk}'] = _method(f'K = {kk}', 'ldm', f'{runs}/abl/k{kk}_2')
  m.no_adaptive_norm = _method('w/o adaptive norm', 'ldm', f'{runs}/abl/nonorm_2')
  m.independent = _method('Independent pred. (stage 1)', 'ldm',
                          f'{runs}/abl/full_1' if size == 'tiny' else f'{runs}/ldm1')
  m.volume = _method('Volume pred.', 'ldm', f'{runs}/abl/volume')
  m.baseline_splat = _method('Baseline splat (RGB average)', 'ldm', ours, splat='average')
  c.methods = m
  c.order = ('ours', 'repeat_i0', 'mean_motion', 'truth') + ablations + tuple(f'k{kk}' for kk in k) + (
      'no_adaptive_norm', 'independent', 'volume', 'baseline_splat')

  c.sampling = _sampling({'tiny': 50, 'small': 200, 'paper': 200}[size], 0.0)  # SPEC: 200 DDIM steps for ablations
  _features(c, size, width)
  return c


def _sampling(num_steps: int, guidance: float):
  return ml_collections.ConfigDict({'num_steps': num_steps, 'eta': 0.0, 'guidance': guidance, 'seed': 0})


def _mini(c, width):
  """size=mini: the bundled plants-world model (module docstring)."""
  plants = 'out/plants'
  c.train_data = f'{plants}/ds'
  c.sets.synthetic.update({'label': 'Synthetic held-out (plants world)', 'videos': f'{plants}/scenes_heldout',
                           'max_videos': 0})
  c.sets.real.videos = ''  # no real footage of the domain with >= 150 frames offline
  m = ml_collections.ConfigDict()
  m.ours = _method('Ours (bundled: stage 1)', 'ldm', BUNDLED)
  m.repeat_i0 = _method('Repeat I_0', 'repeat')
  m.mean_motion = _method('Mean spectral volume', 'mean')
  m.truth = _method('True motion + renderer (upper bound)', 'truth')
  m.freq_attention = _method('With frequency attention (stage 2)', 'ldm', f'{PLANTS_F2}/ldm2')
  m.baseline_splat = _method('Baseline splat (RGB average)', 'ldm', BUNDLED, splat='average')
  c.methods = m
  c.order = ('ours', 'repeat_i0', 'mean_motion', 'truth', 'freq_attention', 'baseline_splat')
  c.sampling = _sampling(250, 2.5)  # the bundled model's stored default; stage 2 is sampled alike
  _features(c, 'mini', width)
  return c


def _features(c, size, width):
  """Frame crop and the FID / FVD settings."""
  c.crop = (width // 2, width)  # (height, width): the paper's 256 x 128, scaled to the frame width
  c.fid_frame_stride = {'tiny': 8, 'mini': 8, 'small': 2, 'paper': 1}[size]  # FID/KID on every n-th frame
  c.sliding_fid_window = {'tiny': 16, 'mini': 30, 'small': 30, 'paper': 30}[size]  # frames
  # FVD over the first 16 frames and FVD32 over 32 (SPEC); FVD32 needs clips of at least 32 frames. At tiny
  # size FVD32 is left out: it triples the I3D work, and 40-frame clips make it nearly the same window.
  c.fvd_frames = (16,) if size == 'tiny' else (16, 32)
  # DTDB-trained I3D weights (gid_jax.eval.i3d), '{n}' = 16 or 32; '' reports DT-FVD as n/a.
  c.dtfvd_weights = ''
