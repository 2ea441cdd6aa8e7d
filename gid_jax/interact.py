"""Interactive dynamics from the command line: poke a photo, get the video of its response.

    gid-interact (or python -m gid_jax.interact) --image photo.jpg --spectral spec.npz --poke 0.5,0.3,4,0 --out poke.mp4

``--spectral`` is an .npz from :func:`gid_jax.motion.modal.save_spectral` (``spectral_volume`` K x H x W x 4
in pixels, ``num_frames`` T and ``fps`` of the clip the bins refer to). The photo is centre-cropped to the
volume's aspect ratio and resized to its W x H, as the data pipeline prepares frames. Each ``--poke
X,Y,DX,DY[,FRAME]`` is an impulse at (X * (W - 1), Y * (H - 1)) (X, Y fractions of width and height in
[0, 1]) along the drag vector (DX, DY) in pixels of the volume's grid, at output frame FRAME (default 0);
``--strength`` multiplies every poke. With the default modal parameters the poked point of the most mobile
part of a scene swinging near 1 Hz moves about ``|(DX, DY)| * strength`` pixels (see gid_jax.motion.modal).
Frames are rendered by softmax splatting (no trained renderer is needed) and written by the extension of
``--out`` (.mp4, .webm, .gif, or no extension for a folder of PNGs), atomically.

Bad input (a missing or unreadable image, a bad --poke, a bad .npz) is reported in one line on stderr with
exit code 2, and nothing is written.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from gid_jax import animate
from gid_jax import cli
from gid_jax import fileio
from gid_jax.data import video
from gid_jax.diffusion import motion_sampler
from gid_jax.errors import InputError
from gid_jax.motion import modal
from gid_jax.render import video as render_video

PROG = 'gid-interact'


def parse_poke(text: str) -> tuple[float, float, float, float, int]:
  """'X,Y,DX,DY[,FRAME]' -> (x, y, dx, dy, frame), X and Y fractions in [0, 1]."""
  parts = text.split(',')
  if len(parts) not in (4, 5):
    raise InputError(f'--poke {text!r}: expected X,Y,DX,DY or X,Y,DX,DY,FRAME')
  try:
    x, y, dx, dy = (float(p) for p in parts[:4])
    frame = int(parts[4]) if len(parts) == 5 else 0
  except ValueError:
    raise InputError(f'--poke {text!r}: X,Y,DX,DY must be numbers and FRAME an integer') from None
  if not all(np.isfinite(v) for v in (x, y, dx, dy)):
    raise InputError(f'--poke {text!r}: values must be finite')
  if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
    raise InputError(f'--poke {text!r}: X and Y are fractions of width and height and must lie in [0, 1]')
  if frame < 0:
    raise InputError(f'--poke {text!r}: FRAME must be >= 0')
  return x, y, dx, dy, frame


def load_image(path: str, width: int, height: int) -> np.ndarray:
  """uint8 RGB (height, width, 3): the photo centre-cropped to the aspect ratio and resized."""
  image = animate.load_photo(path)  # any mode: alpha, greyscale, 16-bit (see gid_jax.animate)
  return video.center_crop_resize(image, width, height)


def load_or_sample_spectral(args, progress: cli.Progress | None = None) -> modal.SpectralFile:
  """The spectral volume to animate. The one place to add sampling from a model when --spectral is absent."""
  progress = progress or cli.Progress(False)
  if not args.spectral:
    # Sample one with the motion model (the bundled default unless --checkpoint), at the output size.
    checkpoint = args.checkpoint or animate.DEFAULT_CHECKPOINT  # checked by check_args
    photo = animate.load_photo(args.image)
    with progress.phase('loading the motion model'):
      sampler = motion_sampler.MotionSampler(checkpoint)
    steps = sampler.config.sampling.num_steps if args.steps is None else args.steps
    opts = animate.Options(seed=args.seed, max_side=args.max_side, steps=steps)
    with progress.bar('sampling motion', steps).start() as bar:
      spec = animate.sample_motion(sampler, photo, opts, progress=bar)
    ow, oh = animate.output_size(photo.shape[1], photo.shape[0], opts.max_side)
    return modal.SpectralFile(animate.resize_spectral(spec, ow, oh), sampler.num_frames, sampler.fps)
  try:
    return modal.load_spectral(args.spectral)
  except (ValueError, FileNotFoundError) as e:
    raise InputError(str(e).splitlines()[0]) from e


def poke_video(image_HxWx3: np.ndarray, spec: modal.SpectralFile, pokes, num_frames: int,
               params: modal.ModalParams, strength: float = 1.0, renderer=None, progress=None) -> np.ndarray:
  """Frames (num_frames, H, W, 3) uint8 of the photo responding to ``pokes`` [(x, y, dx, dy, frame)].

  x, y are fractions of the width and height; dx, dy pixels. Frame 0 is the photo itself.
  """
  sim = modal.ModalSimulator(spec.spectral_volume, params, spec.num_frames, spec.fps)
  scheduled = []
  for x, y, dx, dy, frame in pokes:
    if frame >= num_frames:
      raise InputError(f'a poke at frame {frame} is past the last frame ({num_frames - 1})')
    scheduled.append((frame, (x * (sim.width - 1), y * (sim.height - 1), dx, dy, strength)))
  disp = sim.simulate(num_frames, scheduled)
  return render_video.render_frames(image_HxWx3, disp, renderer, progress=progress)


def build_parser() -> cli.Parser:
  parser = cli.Parser(PROG, __doc__)
  parser.add_argument('--image', required=True, help='the photo (any format PIL reads)')
  parser.add_argument('--spectral', help='.npz with spectral_volume (K x H x W x 4, pixels), num_frames, fps '
                      '(gid-sample --save-spectral writes one); default: sample one with the model')
  parser.add_argument('--checkpoint', default=None, help='motion model for sampling (default: bundled)')
  parser.add_argument('--seed', type=int, default=0, help='sampling seed')
  parser.add_argument('--steps', type=int, default=None, help="DDIM steps when sampling (default: the model's)")
  parser.add_argument('--max-side', type=int, default=512, help='longer side of a sampled volume / output')
  parser.add_argument('--poke', action='append', default=[], metavar='X,Y,DX,DY[,FRAME]',
                      help='X, Y in [0, 1] (fractions of width, height); DX, DY pixels; FRAME default 0; '
                           'repeat for several pokes')
  defaults = modal.ModalParams()
  parser.add_argument('--strength', type=float, default=1.0, help='multiplies every poke')
  parser.add_argument('--num-frames', type=int, default=150, help='frames to render')
  parser.add_argument('--fps', type=float, default=None, help='output (= simulation) frame rate; '
                      'default: the fps stored with the spectral volume')
  parser.add_argument('--damping', type=float, default=defaults.damping, help='damping ratio zeta')
  parser.add_argument('--mass', type=float, default=defaults.mass, help='modal mass')
  parser.add_argument('--out', required=True, help='.mp4, .webm, .gif, or a folder name for PNGs')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace an existing --out (in a folder: only our own frames)')
  return parser


def check_args(args) -> list:
  """Every option checked before any model or JAX work; returns the parsed pokes."""
  if not args.poke:
    raise InputError('give at least one --poke X,Y,DX,DY (the scene is at rest without one)')
  pokes = [parse_poke(p) for p in args.poke]
  if not np.isfinite(args.strength):
    raise InputError(f'--strength must be finite, got {args.strength}')
  if args.num_frames < 1:
    raise InputError(f'--num-frames must be >= 1, got {args.num_frames}')
  # --steps, --max-side and --fps have the bounds of gid-sample's (animate.Options.check)
  animate.Options(steps=1 if args.steps is None else args.steps, max_side=args.max_side,
                  fps=30.0 if args.fps is None else args.fps).check()
  if not 0 <= args.damping < float('inf'):
    raise InputError(f'--damping must be a finite number >= 0, got {args.damping}')
  if not 0 < args.mass < float('inf'):
    raise InputError(f'--mass must be a finite number > 0, got {args.mass}')
  ext = os.path.splitext(args.out)[1].lower()
  if ext not in video.WRITE_FORMATS:
    raise InputError(f'--out {args.out}: unsupported format {ext!r}; use .mp4, .webm, .gif or a folder name')
  fileio.check_output(args.out, args.overwrite, '--out', kind='file' if ext else 'any')
  animate.check_photo_file(args.image)
  if args.spectral and not os.path.isfile(args.spectral):
    raise InputError(f'--spectral {args.spectral}: no such file')
  if not args.spectral:
    animate.check_model_dirs(args.checkpoint, None)
  return pokes


def run(args) -> None:
  pokes = check_args(args)
  progress = cli.Progress(args.progress)
  spec = load_or_sample_spectral(args, progress)
  fps = spec.fps if args.fps is None else args.fps
  params = modal.ModalParams(fps=fps, mass=args.mass, damping=args.damping)
  _, h, w, _ = spec.spectral_volume.shape
  image = load_image(args.image, w, h)
  with progress.bar('simulating and rendering', args.num_frames, unit='frame') as bar:
    frames = poke_video(image, spec, pokes, args.num_frames, params, args.strength, progress=bar)
  with progress.bar('encoding', len(frames), unit='frame', compiles=False) as bar:
    video.write_video(args.out, frames, fps=fps, progress=bar)
  print(f'wrote {len(frames)} frames to {args.out}')


def main(argv=None) -> int:
  # ValueError: the library's own checks (a bad .npz, bad ModalParams) are input errors here.
  return cli.main(run, build_parser(), argv, expected=(ValueError,))


if __name__ == '__main__':
  sys.exit(main())
