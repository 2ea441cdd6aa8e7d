"""Benchmark: motion diffusion training throughput, sampling time, and the paper config's cost.

    python -m benchmarks.diffusion [--steps 5] [--sample_steps 250]

* train-step throughput (examples / s; one example = one image's K-slice volume) of every tiny config on
  random data of the tiny dataset's shape (64 x 40, K = 8): VAE, stage 1, stage 2, volume ablation;
  the reference is stage 1 measured in the same run;
* seconds to sample one spectral volume with the tiny stage-2 model at ``sample_steps`` DDIM steps
  (random weights: speed does not depend on them), with and without classifier-free guidance;
* the paper config (256 x 160, K = 16, LDM-sized U-Net, batch 64 global): parameter counts, FLOPs of
  one training step of stage 1 and stage 2 (XLA's cost analysis of the compiled step) and memory per
  device under the default mesh (all devices data-parallel) for the batch on one device of a 16-GPU run.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gid_jax.configs import data as data_config
from gid_jax.configs import ldm as ldm_config
from gid_jax.configs import ldm_freq as ldm_freq_config
from gid_jax.configs import ldm_volume as ldm_volume_config
from gid_jax.configs import vae as vae_config
from gid_jax.diffusion import motion_sampler
from gid_jax.models import vae as vae_lib
from gid_jax.motion import normalize as norm_lib
from gid_jax.runs import checkpoints
from gid_jax.training import ldm as ldm_task
from gid_jax.training import loop
from gid_jax.training import vae as vae_task


def _facts(c, size: str) -> dict:
  """What training would derive for ``c`` from a dataset of the ``size`` data config (image-size statistics,
  latent scale 1): the same function training uses."""
  d = data_config.get_config(f'size={size}')
  info = {'width': d.width, 'height': d.height, 'num_frames': d.num_frames, 'num_freqs': d.num_freqs, 'fps': d.fps,
          'image_scale': d.image_scale}
  stats = norm_lib.image_size_stats(d.num_freqs, d.width, d.height).to_json()
  vae_model = vae_config.get_config(f'size={size}').model.to_dict()
  return ldm_task.model_facts(c, info, stats, vae_model, 1.0, '')


def _batch(c, b):
  d = c.data_info
  return {'nspec': np.random.default_rng(0).normal(size=(b, d.num_freqs, d.height, d.width, 4)).astype(np.float32),
          'image': np.zeros((b, d.height, d.width, 3), np.float32)}


def _configs(size='tiny', devices: int = 1) -> dict:
  """{name: (resolved config, task)} of every benchmarked config (the batch: one of ``devices``' share)."""
  out = {}
  for name, module in (('vae', vae_config), ('ldm (stage 1)', ldm_config), ('ldm_freq (stage 2)', ldm_freq_config),
                       ('ldm_volume', ldm_volume_config)):
    c = module.get_config(f'size={size}')
    c.batch_size = c.batch_size // devices
    facts = _facts(ldm_config.get_config(f'size={size}'), size)
    if name == 'vae':  # the VAE derives nothing; its batches have the LDM's data shape
      out[name] = (checkpoints.resolve(c, {'data_info': facts['data_info']}), _vae_task(c))
    else:
      out[name] = (checkpoints.resolve(c, _facts(c, size)), ldm_task.make_task(c, _facts(c, size)))
  return out


def _vae_task(c):
  def loss_fn(model, batch, rng):
    x = batch['nspec'].reshape(-1, *batch['nspec'].shape[2:])
    recon, mean, logvar = model(x, rng)
    return vae_lib.vae_loss(x, recon, mean, logvar)
  return loop.Task('vae', loss_fn, None)


def seconds_per_step(c, task, steps: int) -> float:
  """Seconds per train step of a resolved config on random data (after one compiling step)."""
  graphdef, rest, state, tx = loop.init_state(c, task)
  step = loop.make_train_step(graphdef, rest, tx, task, 0.99, grad_accum=c.grad_accum)
  batch = jax.tree.map(jnp.asarray, _batch(c, c.batch_size))
  state, m = step(state, batch, jax.random.PRNGKey(0))
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for i in range(steps):
    state, m = step(state, batch, jax.random.PRNGKey(i + 1))
  jax.block_until_ready(m)
  return (time.perf_counter() - t0) / steps


def train_throughput(steps: int, out=print) -> list[dict]:
  rows = []
  for name, (c, task) in _configs('tiny').items():
    dt = seconds_per_step(c, task, steps)
    rows.append({'config': name, 'batch': c.batch_size, 'sec_per_step': dt, 'examples_per_sec': c.batch_size / dt})
  ref = rows[1]['examples_per_sec']
  out('\n### Train-step throughput, tiny configs (64 x 40, K = 8), random data, ' + jax.devices()[0].device_kind + '\n')
  out('| config | batch | s / step | examples / s | vs stage 1 |')
  out('|---|---:|---:|---:|---:|')
  for r in rows:
    out(f"| {r['config']} | {r['batch']} | {r['sec_per_step']:.3f} | {r['examples_per_sec']:.2f} | "
        f"{r['examples_per_sec'] / ref:.2f} |")
  return rows


def sampling_time(sample_steps: int, out=print) -> list[dict]:
  c = _configs('tiny')['ldm_freq (stage 2)'][0]
  model = checkpoints.build(c)
  sampler = motion_sampler.MotionSampler(None, loaded=(c, model))
  image = np.zeros((c.data_info.height, c.data_info.width, 3), np.uint8)
  rows = []
  for guidance in (0.0, 1.5):
    sampler.sample(image, num_steps=sample_steps, guidance=guidance)  # compile
    t0 = time.perf_counter()
    sampler.sample(image, num_steps=sample_steps, guidance=guidance, seed=1)
    rows.append({'guidance': guidance, 'seconds': time.perf_counter() - t0})
  out(f'\n### Sampling one spectral volume, tiny stage-2 model, {sample_steps} DDIM steps, '
      + jax.devices()[0].device_kind + '\n')
  out('| classifier-free guidance | seconds | vs unguided |')
  out('|---|---:|---:|')
  for r in rows:
    out(f"| {'w = %.1f (2 U-Net passes)' % r['guidance'] if r['guidance'] else 'none'} | {r['seconds']:.2f} | "
        f"{r['seconds'] / rows[0]['seconds']:.2f} |")
  return rows


def paper_cost(out=print, devices: int = 16, time_steps: int = 0) -> list[dict]:
  rows = []
  for name, (c, task) in list(_configs('paper', devices).items())[1:3]:  # one device's share of the batch
    graphdef, rest, state, tx = loop.init_state(c, task, abstract=True)
    step = loop.make_train_step(graphdef, rest, tx, task, 0.999)
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _batch(c, c.batch_size))
    compiled = step.lower(state, batch, jax.ShapeDtypeStruct((2,), jnp.uint32)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    mem = compiled.memory_analysis()
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    sec = float('nan')
    if time_steps:  # run the compiled step on this machine's first device (e.g. a GPU)
      _, _, real, _ = loop.init_state(c, task)
      real_batch = jax.tree.map(jnp.asarray, _batch(c, c.batch_size))
      real, m = compiled(real, real_batch, jax.random.PRNGKey(0))
      jax.block_until_ready(m)
      t0 = time.perf_counter()
      for i in range(time_steps):
        real, m = compiled(real, real_batch, jax.random.PRNGKey(i))
      jax.block_until_ready(m)
      sec = (time.perf_counter() - t0) / time_steps
    rows.append({'sec_per_step': sec, 'config': name, 'trained_params': count(state['params']),
                 'frozen_params': count(state['frozen']),
                 'flops': float(cost.get('flops', float('nan'))), 'batch_per_device': c.batch_size,
                 'arg_bytes': getattr(mem, 'argument_size_in_bytes', 0),
                 'temp_bytes': getattr(mem, 'temp_size_in_bytes', 0)})
  out(f'\n### Paper config (256 x 160, K = 16): one training step on one of {devices} devices '
      f'(batch 64 global = {rows[0]["batch_per_device"]} per device)\n')
  out(f'| config | trained params | frozen params | TFLOPs / step / device | state + batch GiB | '
      f'temporaries GiB | s / step on {jax.devices()[0].device_kind} |')
  out('|---|---:|---:|---:|---:|---:|---:|')
  for r in rows:
    out(f"| {r['config']} | {r['trained_params'] / 1e6:.1f} M | {r['frozen_params'] / 1e6:.1f} M | "
        f"{r['flops'] / 1e12:.2f} | {r['arg_bytes'] / 2**30:.2f} | {r['temp_bytes'] / 2**30:.2f} | "
        f"{r['sec_per_step']:.3f} |")
  return rows


def run(steps: int = 5, sample_steps: int = 250, paper: bool = True, time_paper: int = 0, out=print) -> dict:
  rows = {'train': train_throughput(steps, out), 'sampling': sampling_time(sample_steps, out),
          'sample_steps': sample_steps}
  if paper:
    rows['paper'] = paper_cost(out, time_steps=time_paper)
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--steps', type=int, default=5)
  ap.add_argument('--sample_steps', type=int, default=250)
  ap.add_argument('--no_paper', action='store_true')
  ap.add_argument('--time_paper', type=int, default=0, help='also time N paper-size steps (accelerators)')
  a = ap.parse_args()
  run(a.steps, a.sample_steps, not a.no_paper, a.time_paper)


if __name__ == '__main__':
  main()
