"""Export a trained run for shipping: ``python -m gid_jax.export --workdir RUN --out DIR``.

Writes the EMA parameters (and any frozen parts, e.g. the LDM's VAE) with the run's config, without the
optimiser state, as an orbax checkpoint that ``gid_jax.sample --checkpoint DIR`` / ``--renderer DIR`` and
``gid_jax.training.loop.load_model`` read. This is how the bundled default model was made.
"""

import argparse
import sys


def model_task(config):
  trainer = config.get('trainer')
  if trainer == 'ldm':
    from gid_jax.training import ldm  # pylint: disable=g-import-not-at-top
    return ldm.model_task(config)
  if trainer == 'renderer':
    from gid_jax.training import renderer  # pylint: disable=g-import-not-at-top
    return renderer.model_task(config)
  if trainer == 'vae':
    from gid_jax.training import ldm  # pylint: disable=g-import-not-at-top
    return ldm.vae_model_task(config)
  raise ValueError(f'cannot export a run of trainer {trainer!r}')


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdir', required=True)
  p.add_argument('--out', required=True)
  args = p.parse_args(argv)
  from gid_jax.training import loop  # pylint: disable=g-import-not-at-top
  try:
    config = loop.read_config(args.workdir)
    loop.export_model(args.workdir, args.out, model_task(config))
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 2
  print(f'exported {args.workdir} -> {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
