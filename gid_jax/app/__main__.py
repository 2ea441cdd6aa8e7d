"""``gid-app`` (or ``python -m gid_jax.app``): a local web page to animate a photo and poke it live.

Open a photo (or drop one on the page), press Generate, watch and download the video, then drag on the live
picture to pull the scene and let it spring back. Serves http://127.0.0.1:8000/ by default (--port 0 picks a
free port); everything runs on this machine. Bad options: one line on stderr, exit code 2. Ctrl-C, SIGTERM
and SIGHUP stop the running generation, remove the work folder (uploaded photos, videos) and exit 0.
"""

from __future__ import annotations

import sys

from gid_jax import cli
from gid_jax import inputs
from gid_jax.errors import InputError


def build_parser() -> cli.Parser:
  p = cli.Parser('gid-app', __doc__, progress=False)
  p.add_argument('--host', default='127.0.0.1', help='address to listen on (127.0.0.1: this machine only)')
  p.add_argument('--port', type=int, default=8000, help='0 = any free port (the URL is printed)')
  p.add_argument('--checkpoint', default=None, help='motion LDM run or export (default: the bundled model)')
  p.add_argument('--renderer', default=None,
                 help='renderer run or export (default: the bundled one; "none" = softmax splatting)')
  p.add_argument('--live-renderer', action='store_true',
                 help='render the live (pokeable) scene with the renderer too; default: softmax splatting, '
                      'since a trained renderer is too slow for live frames on a CPU')
  p.add_argument('--max-upload-mb', type=float, default=20, help='larger uploads are refused')
  p.add_argument('--max-sessions', type=int, default=16,
                 help='photos kept at once; when all are in use a new upload gets "busy, try again"')
  p.add_argument('--session-min-age', type=float, default=600,
                 help='seconds an idle session is kept before a new photo may replace it')
  p.add_argument('--max-queue', type=int, default=8, help='generations that may wait behind the running one')
  return p


def parse_args(argv):
  return build_parser().parse(argv)


def run(args) -> None:
  if not 0 <= args.port <= 65535:
    raise InputError(f'--port must be in [0, 65535], got {args.port}')
  if not 0 < args.max_upload_mb < float('inf'):
    raise InputError(f'--max-upload-mb must be positive, got {args.max_upload_mb}')
  if args.max_sessions < 1 or args.max_queue < 0:
    raise InputError('--max-sessions must be >= 1 and --max-queue >= 0')
  if not 0 <= args.session_min_age < float('inf'):
    raise InputError(f'--session-min-age must be a finite number >= 0, got {args.session_min_age}')
  inputs.check_model_dirs(args.checkpoint, args.renderer)
  print('loading models ...', file=sys.stderr, flush=True)
  # The JAX stack (about 1-3 s to import) only now: --help and bad arguments answered without it.
  from gid_jax.app import server, state  # pylint: disable=g-import-not-at-top
  limits = state.Limits(max_upload_mb=args.max_upload_mb, max_sessions=args.max_sessions,
                        session_min_age_s=args.session_min_age, max_queue=args.max_queue)
  srv = server.make_server(args.checkpoint, args.renderer, args.host, args.port, limits,
                           live_renderer=args.live_renderer)
  server.serve(srv)


def main(argv=None) -> int:
  return cli.main(run, build_parser(), argv)


if __name__ == '__main__':
  sys.exit(main())
