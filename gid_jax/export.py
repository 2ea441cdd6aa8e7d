"""Export a trained run for shipping: ``gid-export --workdir RUN --out DIR`` (or python -m gid_jax.export).

Writes the EMA parameters (and any frozen parts, e.g. the LDM's VAE) with the run's config, without the
optimiser state, as an orbax checkpoint that ``gid_jax.sample --checkpoint DIR`` / ``--renderer DIR`` and
``gid_jax.runs.checkpoints.load`` read. This is how the bundled default model was made.
"""

import sys

from gid_jax import cli
from gid_jax import fileio
from gid_jax import runs
from gid_jax.errors import InputError


def build_parser():
  p = cli.Parser('gid-export', __doc__)
  p.add_argument('--workdir', required=True, help='the training run to export')
  p.add_argument('--out', required=True, help='folder for the exported model (new or empty)')
  p.add_argument('--overwrite', action='store_true', help='replace an earlier export at --out')
  p.add_argument('--guidance', type=float, default=None,
                 help="motion LDM: the default classifier-free guidance w stored with the export (default: the run's)")
  p.add_argument('--steps', type=int, default=None,
                 help="motion LDM: the default DDIM steps stored with the export (default: the run's)")
  p.add_argument('--mask-gate', type=float, default=None,
                 help="motion LDM trained with the moving-mask loss: the default mask gate stored with the export, "
                      "in [0, 1], 0 = off (not in the paper; README, 'Mask gate')")
  return p


def run(args) -> None:
  stored = runs.check_run(args.workdir, ('ldm', 'renderer', 'vae'), '--workdir')
  sampling = {k: v for k, v in (('guidance', args.guidance), ('num_steps', args.steps),
                                 ('mask_gate', args.mask_gate)) if v is not None}
  if sampling and stored.get('trainer') != 'ldm':
    raise InputError('--guidance, --steps and --mask-gate apply to motion LDM runs only')
  if args.mask_gate is not None and not 0 <= args.mask_gate <= 1:
    raise InputError(f'--mask-gate must be in [0, 1] (0 = off), got {args.mask_gate}')
  if args.mask_gate and not runs.resolve(*runs.stored_run(args.workdir)).get('model', {}).get('mask_head'):
    raise InputError(f'--mask-gate needs a run trained with the moving-mask loss (aux_mask_weight > 0); '
                     f'{args.workdir} was not')
  if args.guidance is not None and not 0 <= args.guidance < float('inf'):
    raise InputError(f'--guidance must be a finite number >= 0, got {args.guidance}')
  if args.steps is not None and args.steps < 1:
    raise InputError(f'--steps must be >= 1, got {args.steps}')
  if fileio.absolute(args.out) == fileio.absolute(args.workdir):
    raise InputError('--out must differ from --workdir')
  out = fileio.path(args.out)  # a local folder or an object-storage URL
  is_export = runs.stored_config(args.out) is not None and {p.name for p in out.iterdir()} <= {'checkpoints'}
  if not (is_export and args.overwrite):
    fileio.check_output(args.out, False, '--out', kind='dir')  # a user's folder is never written into
  with cli.Progress(args.progress).phase(f'exporting {args.workdir}'):
    # The JAX stack (about 1-3 s to import) only now: --help and the checks above answered without it.
    from gid_jax.runs import checkpoints  # pylint: disable=g-import-not-at-top
    if is_export:
      (out / 'checkpoints').rmtree()  # our own earlier export, --overwrite given
    checkpoints.export(args.workdir, args.out, sampling=sampling)
  print(f'exported {args.workdir} -> {args.out}')


def main(argv=None) -> int:
  return cli.main(run, build_parser(), argv, expected=(ValueError, FileNotFoundError))


if __name__ == '__main__':
  sys.exit(main())
