"""The package's import layering (docs/ARCHITECTURE.md "Layers"): every import of a gid_jax module, at module
top or inside a function, points to the same layer or one below, and the import graph has no cycle."""

import ast
import os

import gid_jax

ROOT = os.path.dirname(gid_jax.__file__)

# Lowest first. A module belongs to the longest prefix listed.
LAYERS = [
    # 0: base utilities (no model code): errors, atomic files, progress, the CLI helpers, device meshes,
    # configs, the JAX-free reading of run folders
    ('gid_jax', 'gid_jax.errors', 'gid_jax.fileio', 'gid_jax.progress', 'gid_jax.cli', 'gid_jax.sharding',
     'gid_jax.configs', 'gid_jax.runs'),
    # 1: maths on motion and images, numerical metrics
    ('gid_jax.motion', 'gid_jax.ops', 'gid_jax.eval'),
    # 2: data and models
    ('gid_jax.data', 'gid_jax.models'),
    # 3: checkpoints of trained runs (builds models)
    ('gid_jax.runs.checkpoints',),
    # 4: sampling and rendering
    ('gid_jax.diffusion', 'gid_jax.render'),
    # 5: training
    ('gid_jax.training',),
    # 6: applications and entry points
    ('gid_jax.animate', 'gid_jax.sample', 'gid_jax.interact', 'gid_jax.app', 'gid_jax.evaluate',
     'gid_jax.export', 'gid_jax.train', 'gid_jax.eval.motion_report', 'gid_jax.render.evaluate'),
]


def _layer(module: str) -> int:
  best, level = '', None
  for i, prefixes in enumerate(LAYERS):
    for p in prefixes:
      if (module == p or module.startswith(p + '.')) and len(p) > len(best):
        best, level = p, i
  assert level is not None, module
  return level


def _modules() -> dict[str, str]:
  out = {}
  for root, _, files in os.walk(ROOT):
    for f in files:
      if f.endswith('.py'):
        rel = os.path.relpath(os.path.join(root, f), os.path.dirname(ROOT))[:-3].replace(os.sep, '.')
        out[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = os.path.join(root, f)
  return out


def _imports(path: str, modules) -> set[str]:
  """The gid_jax modules ``path`` imports (``from a import b`` counts as a.b when that is a module)."""
  found = set()
  for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith('gid_jax'))
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('gid_jax'):
      for a in node.names:
        sub = f'{node.module}.{a.name}'
        found.add(sub if sub in modules else node.module)
  return found


def test_imports_only_point_down_and_have_no_cycle():
  modules = _modules()
  graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
  up = sorted(f'{m} ({_layer(m)}) -> {i} ({_layer(i)})' for m, deps in graph.items() for i in deps
              if _layer(i) > _layer(m))
  assert not up, 'imports pointing up a layer:\n' + '\n'.join(up)
  # No cycle (a package's __init__ importing its own submodules counts as an edge too).
  state = {}

  def visit(m, path):
    state[m] = 'open'
    for d in sorted(graph.get(m, ())):
      if d not in graph:
        continue
      if state.get(d) == 'open':
        raise AssertionError('import cycle: ' + ' -> '.join(path[path.index(d):] + [d]))
      if d not in state:
        visit(d, path + [d])
    state[m] = 'done'

  for m in sorted(graph):
    if m not in state:
      visit(m, [m])


def test_the_layer_map_covers_every_module():
  assert all(_layer(m) >= 0 for m in _modules())
