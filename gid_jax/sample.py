"""Animate a photo: ``python -m gid_jax.sample --image PHOTO --out OUT.mp4``.

Photo -> spectral volume (the motion LDM, DDIM) -> trajectories -> rendered frames -> mp4 / gif / webm /
a folder of PNGs (by the extension of --out; no extension = PNG folder). Without --checkpoint the bundled
default model is used; without --image the bundled example photo is animated. See gid_jax.animate for the
size policy, the motion edits and seamless loops. Bad input: one line on stderr, exit code 2, nothing
written at --out.
"""

from __future__ import annotations

import argparse
import os
import sys



class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line and exit code 2, like every other bad input
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def parse_args(argv):
  from gid_jax import animate  # pylint: disable=g-import-not-at-top
  d = animate.Options()
  p = _Parser(prog='python -m gid_jax.sample', description=__doc__.split('\n')[0])
  p.add_argument('--image', default=None, help='photo to animate (default: the bundled example photo)')
  p.add_argument('--out', default='out.mp4', help='.mp4 | .gif | .webm | folder for PNG frames')
  p.add_argument('--checkpoint', default=None, help='motion LDM run or export (default: the bundled model)')
  p.add_argument('--renderer', default=None,
                 help='renderer run or export (default: the bundled one; "none" = softmax splatting)')
  p.add_argument('--seed', type=int, default=d.seed)
  p.add_argument('--num-frames', type=int, default=d.num_frames)
  p.add_argument('--fps', type=float, default=d.fps)
  p.add_argument('--steps', type=int, default=None, help='DDIM steps (default: the checkpoint\'s, 250)')
  p.add_argument('--eta', type=float, default=None)
  p.add_argument('--guidance', type=float, default=None, help='classifier-free guidance weight w')
  p.add_argument('--loop', action='store_true', help='seamless loop (motion self-guidance)')
  p.add_argument('--loop-scale', type=float, default=d.loop_scale, help='u of the loop self-guidance')
  p.add_argument('--motion-scale', type=float, default=d.motion_scale, help='>1 magnifies, <1 calms')
  p.add_argument('--slowdown', type=float, default=d.slowdown, help='slow motion factor (>1 slower)')
  p.add_argument('--mask', default=None, help='PNG of the photo\'s size: white = animate, black = still')
  p.add_argument('--save-spectral', default=None, help='also save the spectral volume (.npz)')
  p.add_argument('--max-side', type=int, default=d.max_side, help='longer side of the output video')
  p.add_argument('--max-pixels', type=int, default=animate.MAX_PIXELS, help='larger photos are refused')
  p.add_argument('--no-progress', action='store_true')
  return p.parse_args(argv)


def run(args) -> str:
  from gid_jax import animate  # pylint: disable=g-import-not-at-top
  from gid_jax.data import video as video_lib  # pylint: disable=g-import-not-at-top
  from gid_jax.motion import modal  # pylint: disable=g-import-not-at-top

  out_ext = os.path.splitext(args.out)[1].lower()
  if out_ext not in ('', '.mp4', '.gif', '.webm'):
    raise animate.InputError(f'--out must end in .mp4, .gif or .webm (or have no extension for PNGs), got {args.out}')
  image_path = args.image or animate.EXAMPLE_PHOTO
  photo = animate.load_photo(image_path, args.max_pixels)
  mask = animate.load_mask(args.mask, photo.shape[1], photo.shape[0]) if args.mask else None
  sampler, renderer = animate.load_models(args.checkpoint, args.renderer)
  s = sampler.config.sampling
  opts = animate.Options(num_frames=args.num_frames, fps=args.fps,
                         steps=s.num_steps if args.steps is None else args.steps,
                         eta=s.eta if args.eta is None else args.eta,
                         guidance=s.guidance if args.guidance is None else args.guidance, seed=args.seed,
                         loop=args.loop, loop_scale=args.loop_scale, motion_scale=args.motion_scale,
                         slowdown=args.slowdown,
                         max_side=args.max_side)
  opts.check()
  progress = None
  bar = None
  if not args.no_progress:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=opts.steps, desc='sampling motion', unit='step')

    def progress(done, total):
      bar.n = done
      bar.refresh()
  frames, spec, t = animate.animate(photo, opts, sampler=sampler, renderer=renderer, mask_HxW=mask,
                                    progress=progress)
  if bar is not None:
    bar.close()
  if args.save_spectral:
    modal.save_spectral(args.save_spectral, spec, t, sampler.fps)
  video_lib.write_video(args.out, frames, fps=opts.fps)
  return args.out


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  from gid_jax import animate  # pylint: disable=g-import-not-at-top
  try:
    out = run(args)
  except animate.InputError as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 2
  print(f'wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
