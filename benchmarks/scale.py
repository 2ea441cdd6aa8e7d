"""Benchmark: the paper config's training step at pod scale, from XLA's analysis of the compiled step.

    python -m benchmarks.scale [--quick] [--out docs/scale.md]

For the paper config (256 x 160, K = 16, the LDM-sized U-Net, stage 2: frequency attention trained, the
frozen VAE encoding every batch), on 8, 16 and 64 fake CPU devices (``--xla_force_host_platform_device_count``,
one subprocess per device count) and several (data, fsdp, freq) meshes, float32 and bfloat16 compute, with
and without rematerialisation: per-device TFLOPs of one step (``cost_analysis``), the ideal (the same global
batch's TFLOPs on one device, divided by the devices), argument (state + batch) and temporary memory per
device (``memory_analysis``). Nothing runs: the step is lowered and compiled from shapes only. Then, on this
machine's CPU, the tiny stage-1 and stage-2 steps per second with each option (the reference: float32, no
remat, one micro-batch, measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np

from benchmarks import diffusion
from gid_jax import sharding
from gid_jax.configs import ldm as ldm_config
from gid_jax.configs import ldm_freq as ldm_freq_config
from gid_jax.configs import override
from gid_jax.runs import checkpoints
from gid_jax.training import ldm, loop

# (devices, global batch, meshes (data, fsdp, freq)). The first three rows of 8 are the table.
MESHES = [
    (8, 8, [(8, 1, 1), (4, 1, 2), (2, 1, 4), (2, 2, 2)]),
    (16, 64, [(16, 1, 1), (8, 1, 2), (4, 1, 4), (4, 2, 2)]),
    (64, 64, [(64, 1, 1), (16, 1, 4), (8, 2, 4)]),
]
VARIANTS = [('float32', ''), ('bfloat16', ''), ('bfloat16', 'full')]


def _paper(mesh=None, batch=None, dtype='float32', remat='', size='paper'):
  """(resolved config, task) of the stage-2 config (paper size) on ``mesh`` (benchmarks.diffusion's facts)."""
  c = ldm_freq_config.get_config(f'size={size}')
  values = {'compute_dtype': dtype, 'remat': remat}
  if batch is not None:
    values['batch_size'] = batch
  if mesh is not None:
    values.update({'mesh.data': mesh[0], 'mesh.fsdp': mesh[1], 'mesh.freq': mesh[2]})
  c = override(c, **values)
  facts = diffusion._facts(c, size)  # pylint: disable=protected-access
  return checkpoints.resolve(c, facts), ldm.make_task(c, facts)


def analyse(mesh, batch: int, dtype: str, remat: str, size: str = 'paper') -> dict:
  """Cost and memory of the compiled stage-2 step on ``mesh`` (in this process's devices; None: one device,
  no mesh)."""
  c, task = _paper(mesh, batch, dtype, remat, size)
  info = c.data_info
  shapes = {'nspec': (batch, info.num_freqs, info.height, info.width, 4),
            'image': (batch, info.height, info.width, 3)}
  if mesh is None:  # one device, no mesh: the ideal's reference
    graphdef, rest, state, tx = loop.init_state(c, task, abstract=True)
    step = loop.make_train_step(graphdef, rest, tx, task, c.ema_decay)
    abstract = {k: jax.ShapeDtypeStruct(s, np.float32) for k, s in shapes.items()}
  else:
    m = sharding.make_mesh(c)
    graphdef, rest, state, tx = loop.init_state(c, task, m, abstract=True)
    state_sh = loop.state_shardings(state, m, c)
    batch_sh = sharding.batch_shardings(m, c, shapes)
    step = loop.make_train_step(graphdef, rest, tx, task, c.ema_decay, state_sh, batch_sh)
    abstract = {k: jax.ShapeDtypeStruct(s, np.float32, sharding=batch_sh[k]) for k, s in shapes.items()}
    state = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), state, state_sh)
  t0 = time.perf_counter()
  compiled = step.lower(state, abstract, jax.ShapeDtypeStruct((2,), np.uint32)).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  return {'mesh': list(mesh or (1, 1, 1)), 'batch': batch, 'dtype': dtype, 'remat': remat,
          'tflops': float(cost.get('flops', float('nan'))) / 1e12,
          'arg_gib': getattr(mem, 'argument_size_in_bytes', 0) / 2 ** 30,
          'temp_gib': getattr(mem, 'temp_size_in_bytes', 0) / 2 ** 30,
          'compile_s': time.perf_counter() - t0}


def worker(devices: int, batch: int, meshes, variants) -> list[dict]:
  """Run in a process with ``devices`` fake CPU devices: the ideal (1-device) cost, then every mesh."""
  rows = []
  for dtype, remat in variants:
    one = analyse(None, 1, dtype, remat)  # one example on one device: the ideal scales it
    for mesh in meshes:
      r = analyse(mesh, batch, dtype, remat)
      r['ideal_tflops'] = one['tflops'] * batch / devices
      r['devices'] = devices
      rows.append(r)
      print(json.dumps(r), flush=True)
  return rows


def _spawn(devices: int, batch: int, meshes, variants) -> list[dict]:
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}', JAX_PLATFORMS='cpu')
  args = [sys.executable, '-m', 'benchmarks.scale', '--worker', json.dumps([devices, batch, meshes, variants])]
  out = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(f'worker for {devices} devices failed:\n{out.stderr[-3000:]}')
  return [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]


def tiny_steps_per_sec(steps: int = 10) -> list[dict]:
  """Tiny stage-1 / stage-2 train steps per second on this machine's CPU for each option (random data)."""
  rows = []
  options = [('reference (float32)', {}), ('bfloat16', {'compute_dtype': 'bfloat16'}), ('remat dots', {'remat': 'dots'}),
             ('remat full', {'remat': 'full'}), ('grad_accum 2', {'grad_accum': 2})]
  for stage, module in (('stage 1', ldm_config), ('stage 2', ldm_freq_config)):
    for name, values in options:
      c = override(module.get_config('size=tiny'), **values)
      facts = diffusion._facts(c, 'tiny')  # pylint: disable=protected-access
      dt = diffusion.seconds_per_step(checkpoints.resolve(c, facts), ldm.make_task(c, facts), steps)
      rows.append({'stage': stage, 'option': name, 'steps_per_sec': 1.0 / dt})
  return rows


def report(rows: list[dict], tiny: list[dict]) -> str:
  lines = ['### Paper config, stage-2 step: per-device cost from the compiled step (fake CPU devices)', '',
           '| devices | mesh (data, fsdp, freq) | global batch | compute | remat | TFLOPs / device | ideal | ratio | '
           'state + batch GiB | temporaries GiB |', '|---:|---|---:|---|---|---:|---:|---:|---:|---:|']
  for r in rows:
    lines.append(f"| {r['devices']} | {tuple(r['mesh'])} | {r['batch']} | {r['dtype']} | {r['remat'] or 'off'} | "
                 f"{r['tflops']:.2f} | {r['ideal_tflops']:.2f} | {r['tflops'] / r['ideal_tflops']:.3f} | "
                 f"{r['arg_gib']:.2f} | {r['temp_gib']:.2f} |")
  if tiny:
    lines += ['', '### Tiny configs on this CPU: train steps per second (random data)', '',
              '| stage | option | steps / s | vs reference |', '|---|---|---:|---:|']
    ref = {r['stage']: r['steps_per_sec'] for r in tiny if r['option'].startswith('reference')}
    for r in tiny:
      lines.append(f"| {r['stage']} | {r['option']} | {r['steps_per_sec']:.2f} | "
                   f"{r['steps_per_sec'] / ref[r['stage']]:.2f} |")
  return '\n'.join(lines) + '\n'


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--quick', action='store_true', help='8 devices, float32 only (a smoke run)')
  ap.add_argument('--no-tiny', action='store_true', help='skip the tiny steps/s table')
  ap.add_argument('--out', default='', help='also write the tables to this markdown file')
  ap.add_argument('--worker', default='', help=argparse.SUPPRESS)
  a = ap.parse_args(argv)
  if a.worker:
    worker(*json.loads(a.worker))
    return
  plan = MESHES[:1] if a.quick else MESHES
  variants = VARIANTS[:1] if a.quick else VARIANTS
  rows = []
  for devices, batch, meshes in plan:
    rows += _spawn(devices, batch, meshes, variants)
  tiny = [] if a.no_tiny else tiny_steps_per_sec()
  text = report(rows, tiny)
  print(text)
  if a.out:
    with open(a.out, 'w', encoding='utf-8') as f:
      f.write(text)


if __name__ == '__main__':
  main()
