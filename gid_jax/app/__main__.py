"""``python -m gid_jax.app``: a local web page to animate a photo and poke it live.

Open a photo (or drop one on the page), press Generate, watch and download the video, then drag on the live
picture to pull the scene and let it spring back. Serves http://127.0.0.1:8000/ by default (--port 0 picks a
free port); everything runs on this machine. Bad options: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line and exit code 2, like every other bad input
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def parse_args(argv):
  p = _Parser(prog='python -m gid_jax.app', description=__doc__.split('\n')[0])
  p.add_argument('--host', default='127.0.0.1',
                 help='address to listen on (default 127.0.0.1: this machine only)')
  p.add_argument('--port', type=int, default=8000, help='0 = any free port (the URL is printed)')
  p.add_argument('--checkpoint', default=None, help='motion LDM run or export (default: the bundled model)')
  p.add_argument('--renderer', default=None,
                 help='renderer run or export (default: the bundled one; "none" = softmax splatting)')
  p.add_argument('--live-renderer', action='store_true',
                 help='render the live (pokeable) scene with the renderer too; default: softmax splatting, '
                      'since a trained renderer is too slow for live frames on a CPU')
  p.add_argument('--max-upload-mb', type=float, default=20, help='larger uploads are refused')
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  from gid_jax import animate  # pylint: disable=g-import-not-at-top
  from gid_jax.app import server  # pylint: disable=g-import-not-at-top
  try:
    srv = server.make_server(args.checkpoint, args.renderer, args.host, args.port, args.max_upload_mb,
                             live_renderer=args.live_renderer)
  except animate.InputError as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 2
  server.serve(srv)
  return 0


if __name__ == '__main__':
  sys.exit(main())
