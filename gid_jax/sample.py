"""Animate a photo: ``python -m gid_jax.sample --image PHOTO --out OUT.mp4``.

    gid-sample --image PHOTO --out OUT.mp4        (the same as python -m gid_jax.sample)

Photo -> spectral volume (the motion LDM, DDIM) -> trajectories -> rendered frames -> mp4 / gif / webm /
a folder of PNGs (by the extension of --out; no extension = PNG folder). Without --checkpoint the bundled
default model is used; without --image the bundled example photo is animated. See gid_jax.animate for the
size policy, the motion edits and seamless loops. Bad input: one line on stderr, exit code 2, nothing
written at --out; an existing --out is never replaced without --overwrite.
"""

from __future__ import annotations

import os
import sys

from gid_jax import cli
from gid_jax import fileio
from gid_jax import inputs
from gid_jax.errors import InputError

PROG = 'gid-sample'


def build_parser() -> cli.Parser:
  d = inputs.Options()
  p = cli.Parser(PROG, __doc__)
  p.add_argument('--image', default=None, help='photo to animate (default: the bundled example photo)')
  p.add_argument('--out', default='out.mp4',
                 help='.mp4 | .gif | .webm, or a name without extension for a folder of PNG frames')
  p.add_argument('--overwrite', action='store_true',
                 help='replace an existing --out / --save-spectral (in a folder: only our own frames)')
  p.add_argument('--checkpoint', default=None, help='motion LDM run or export (default: the bundled model)')
  p.add_argument('--renderer', default=None,
                 help='renderer run or export (default: the bundled one; "none" = softmax splatting)')
  p.add_argument('--seed', type=int, default=d.seed, help='random seed: the same seed gives the same video')
  p.add_argument('--num-frames', type=int, default=d.num_frames, help='frames in the video (>= 2)')
  p.add_argument('--fps', type=float, default=d.fps, help='frame rate of the video, in (0, 240]')
  p.add_argument('--steps', type=int, default=None, help="DDIM steps (default: the checkpoint's, 250)")
  p.add_argument('--eta', type=float, default=None, help="DDIM eta, >= 0 (default: the checkpoint's, 0)")
  p.add_argument('--guidance', type=float, default=None,
                 help="classifier-free guidance weight w, >= 0 (default: the checkpoint's, 0)")
  p.add_argument('--mask-gate', type=float, default=None,
                 help="fade motion where the model's moving-mask head says still: in [0, 1], 0 = off "
                      "(default: the checkpoint's; README, 'Mask gate')")
  p.add_argument('--loop', action='store_true', help='seamless loop: the last frame leads into the first')
  p.add_argument('--loop-method', choices=inputs.LOOP_METHODS, default=d.loop_method,
                 help="'snap': each frequency to a whole number of cycles per loop (exact, no extra cost); "
                      "'guidance': the paper's motion self-guidance (about 80x slower on a CPU)")
  p.add_argument('--loop-scale', type=float, default=d.loop_scale,
                 help="u of the loop self-guidance, in the paper's units (SPEC: 200)")
  p.add_argument('--motion-scale', type=float, default=d.motion_scale, help='>1 magnifies, <1 calms')
  p.add_argument('--slowdown', type=float, default=d.slowdown, help='slow motion factor (>1 slower)')
  p.add_argument('--mask', default=None, help="PNG of the photo's size: white = animate, black = still")
  p.add_argument('--save-spectral', default=None, help='also save the spectral volume (.npz)')
  p.add_argument('--max-side', type=int, default=d.max_side, help='longer side of the output video (>= 16)')
  p.add_argument('--max-pixels', type=int, default=inputs.MAX_PIXELS, help='larger photos are refused')
  return p


def parse_args(argv):
  return build_parser().parse(argv)


def check_args(args):
  """Every option checked before any model or JAX work: the Options (steps, eta and guidance are the
  checkpoint's unless given, taken from it once it is loaded); InputError if bad."""
  out_ext = os.path.splitext(args.out)[1].lower()
  if out_ext not in ('', '.mp4', '.gif', '.webm'):
    raise InputError(f'--out must end in .mp4, .gif or .webm (or have no extension for PNGs), got {args.out}')
  opts = inputs.Options(num_frames=args.num_frames, fps=args.fps,
                        steps=1 if args.steps is None else args.steps,
                        eta=0.0 if args.eta is None else args.eta,
                        guidance=0.0 if args.guidance is None else args.guidance,
                        mask_gate=args.mask_gate, seed=args.seed,
                        loop=args.loop, loop_method=args.loop_method, loop_scale=args.loop_scale,
                        motion_scale=args.motion_scale,
                        slowdown=args.slowdown, max_side=args.max_side)
  opts.check()
  if args.max_pixels < 1:
    raise InputError(f'--max-pixels must be >= 1, got {args.max_pixels}')
  fileio.check_output(args.out, args.overwrite, '--out', kind='file' if out_ext else 'any')
  if args.save_spectral:
    if not args.save_spectral.endswith('.npz'):
      raise InputError(f'--save-spectral must end in .npz, got {args.save_spectral}')
    fileio.check_output(args.save_spectral, args.overwrite, '--save-spectral', kind='file')
    if os.path.abspath(args.save_spectral) == os.path.abspath(args.out):
      raise InputError('--save-spectral and --out name the same file')
  inputs.check_photo_file(args.image or inputs.EXAMPLE_PHOTO, args.max_pixels)
  inputs.check_model_dirs(args.checkpoint, args.renderer)
  return opts


def run(args) -> str:
  opts = check_args(args)
  progress = cli.Progress(args.progress)
  image_path = args.image or inputs.EXAMPLE_PHOTO
  photo = inputs.load_photo(image_path, args.max_pixels)
  mask = inputs.load_mask(args.mask, photo.shape[1], photo.shape[0]) if args.mask else None
  with progress.phase('loading models'):
    # The JAX stack (about 1-3 s to import) only now: --help and bad arguments answered without it.
    from gid_jax import animate  # pylint: disable=g-import-not-at-top
    from gid_jax.data import video as video_lib  # pylint: disable=g-import-not-at-top
    from gid_jax.motion import modal  # pylint: disable=g-import-not-at-top
    sampler, renderer = animate.load_models(args.checkpoint, args.renderer)
  s = sampler.config.sampling
  opts.steps = s.num_steps if args.steps is None else args.steps
  opts.eta = s.eta if args.eta is None else args.eta
  opts.guidance = s.guidance if args.guidance is None else args.guidance
  if opts.mask_gate and not sampler.has_mask_head:
    raise InputError('--mask-gate needs a motion model trained with the moving-mask loss; '
                     f'{args.checkpoint or "the bundled model"} has no mask head')
  with progress.bar('sampling motion', opts.steps) as sample_bar, \
       progress.bar('rendering', opts.num_frames, unit='frame') as render_bar:
    sample_bar.start()
    frames, spec, t = animate.animate(photo, opts, sampler=sampler, renderer=renderer, mask_HxW=mask,
                                      progress=sample_bar, render_progress=_after(sample_bar, render_bar))
  if args.save_spectral:
    modal.save_spectral(args.save_spectral, spec, t, sampler.fps)
  with progress.bar('encoding', len(frames), unit='frame', compiles=False) as bar:
    video_lib.write_video(args.out, frames, fps=opts.fps, progress=bar)
  return args.out


def _after(first, second):
  """A progress callback for ``second`` that first closes ``first`` (so bars do not interleave)."""
  def callback(done, total):
    first.close()
    second(done, total)
  return callback


def main(argv=None) -> int:
  def _run(args):
    out = run(args)
    print(f'wrote {out}')
  return cli.main(_run, build_parser(), argv)


if __name__ == '__main__':
  sys.exit(main())
