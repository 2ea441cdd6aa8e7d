"""Run every benchmark of the project: ``python -m benchmarks [--quick]``.

``--quick`` runs each at its smallest size (a smoke test); the default sizes are the ones whose numbers
docs/RESULTS.md reports. Each benchmark is also runnable alone: ``python -m benchmarks.<name>``.
"""

import argparse
import importlib

# (module, full-size kwargs, quick kwargs); modules that are not there yet are skipped with a note.
BENCHMARKS = (
    ('representation', {}, {'t_': 40, 'k': 8, 'h': 40, 'w': 64}),
    ('extraction', {'size': 'paper', 'scenes': 2, 'frames': 180}, {'size': 'tiny', 'scenes': 1, 'frames': 60}),
    ('splat', {}, {'sizes': ((1, 160, 256, 16),), 'repeats': 3}),
    ('render', {}, {'frames': 20, 'width': 64, 'height': 40, 'sizes': ('tiny',)}),
    ('diffusion', {}, {'steps': 1, 'sample_steps': 5, 'paper': False}),
    ('loops', {}, {'num_frames': 30, 'steps': 2}),
)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--quick', action='store_true', help='smallest sizes, for a smoke test')
  ap.add_argument('--only', default=None, help='comma-separated benchmark names')
  args = ap.parse_args()
  only = set(args.only.split(',')) if args.only else None
  for name, full, quick in BENCHMARKS:
    if only and name not in only:
      continue
    try:
      mod = importlib.import_module(f'benchmarks.{name}')
    except ModuleNotFoundError as e:
      print(f'\n({name}: skipped, {e})')
      continue
    mod.run(**(quick if args.quick else full))


if __name__ == '__main__':
  main()
