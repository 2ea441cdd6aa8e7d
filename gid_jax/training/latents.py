"""Latent datasets: a built motion dataset encoded once by a trained VAE, on disk, for LDM training.

    python -m gid_jax.training.latents --data DATA --vae RUN --out LATENTS [--normalize ''] [--num-freqs 0]
    python -m gid_jax.train --config=configs/ldm.py --config.data_dir=DATA --config.vae_workdir=RUN \
        --config.latents_dir=LATENTS --workdir=RUN_LDM

The VAE is frozen in every LDM run (stage 1, stage 2 and the ablations), so its latents of the training set
never change; at paper size the frozen encoder is over a quarter of a stage-2 step's FLOPs. This command
encodes every split once (the VAE of ``--vae``: a VAE run, or an LDM run or export, whose VAE it reads) and
an LDM run given ``latents_dir`` trains on the result: no ArrayRecord decoding of spectral volumes, no VAE
encoder in the step, with exactly the losses of encoding on the fly (tests/test_ldm.py). The in-memory cache
(``cache_latents``) does the same per run for datasets that fit in host memory.

``LATENTS/latents.json`` says what made it: the dataset, the VAE run, a fingerprint of the VAE's weights, the
normalisation (``norm_stats_json``, which fixes K), the VAE's model config, and per split the number of
examples. ``LATENTS/<split>.array_record`` holds one record per example in the dataset's order: the first
frame (uint8, as stored), the VAE's posterior means of its K normalised slices (K x h x w x L, float32,
unscaled: a run multiplies by its own latent scale) and the per-pixel motion RMS in pixels (H x W, float32;
the auxiliary moving-mask loss thresholds it). A run refuses latents made with other weights or statistics.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys

import grain
import jax
import jax.numpy as jnp
import numpy as np
from array_record.python import array_record_module
from flax import nnx

from gid_jax import cli
from gid_jax import data as data_lib
from gid_jax import fileio
from gid_jax import runs
from gid_jax.data import pipeline
from gid_jax.errors import InputError
from gid_jax.motion import normalize as norm_lib
from gid_jax.motion import spectral
from gid_jax.runs import checkpoints

INFO = 'latents.json'
SPLITS = ('train', 'test')


def fingerprint(vae: nnx.Module) -> str:
  """A hash of the VAE's weights: which VAE encoded a latent dataset."""
  h = hashlib.sha256()
  for path, v in sorted(nnx.to_flat_state(nnx.state(vae, nnx.Param)), key=lambda pv: str(pv[0])):
    h.update(str(path).encode())
    h.update(np.ascontiguousarray(np.asarray(v.get_value(), np.float32)).tobytes())
  return h.hexdigest()[:16]


def _pack(arrays: dict) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


def _unpack(record: bytes) -> dict:
  with np.load(io.BytesIO(record)) as f:
    return {k: f[k] for k in f.files}


def encode(data_dir: str, vae_workdir: str, out: str, normalize: str = '', num_freqs: int = 0,
           batch_size: int = 8, progress: bool = False) -> dict:
  """Write the latent dataset of ``data_dir`` (module docstring) to ``out`` atomically; returns its info."""
  _, vae = checkpoints.load_vae(vae_workdir)
  stats = pipeline.training_stats(data_dir, normalize, num_freqs)

  @jax.jit
  def run(graphdef, state, nspec_BxKxHxWx4):
    v = nnx.merge(graphdef, state)
    b, k = nspec_BxKxHxWx4.shape[:2]
    mean, _ = v.encode(nspec_BxKxHxWx4.reshape(b * k, *nspec_BxKxHxWx4.shape[2:]))
    rms = spectral.motion_rms(norm_lib.denormalize(nspec_BxKxHxWx4, stats))
    return mean.reshape(b, k, *mean.shape[1:]), rms

  graphdef, state = nnx.split(vae)
  info = {'data_dir': os.path.abspath(data_dir), 'vae_workdir': os.path.abspath(vae_workdir),
          'vae_fingerprint': fingerprint(vae), 'norm_stats_json': stats.to_json(), 'splits': {}}
  bar = cli.Progress(progress)
  with fileio.atomic_path(out, is_dir=True) as tmp:
    for split in SPLITS:
      try:
        src = pipeline.data_source(data_dir, split)
      except ValueError:
        continue  # a dataset without this split
      prep = pipeline.Preprocess(stats)
      writer = array_record_module.ArrayRecordWriter(os.path.join(tmp, f'{split}.array_record'), 'group_size:1')
      with bar.bar(f'encoding {split}', len(src), unit='example') as tick:
        for start in range(0, len(src), batch_size):
          raw = [src[i] for i in range(start, min(start + batch_size, len(src)))]
          nspec = np.stack([prep.map(ex)['nspec'] for ex in raw])
          means, rms = (np.asarray(a, np.float32) for a in run(graphdef, state, jnp.asarray(nspec)))
          for ex, z, r in zip(raw, means, rms):
            writer.write(_pack({'image': np.asarray(ex['image'], np.uint8), 'z_mean': z, 'rms': r}))
          tick(min(start + batch_size, len(src)), len(src))
      writer.close()
      info['splits'][split] = len(src)
    with open(os.path.join(tmp, INFO), 'w', encoding='utf-8') as f:
      json.dump(info, f, indent=1)
  return info


def read_info(latents_dir: str) -> dict:
  path = os.path.join(latents_dir, INFO)
  if not os.path.isfile(path):
    raise ValueError(f'latents_dir {latents_dir} holds no {INFO}: make it with python -m gid_jax.training.latents')
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def check(latents_dir: str, model, norm_stats_json: str) -> dict:
  """The info of ``latents_dir`` if it was made by ``model``'s VAE (a MotionLDM) with these statistics."""
  info = read_info(latents_dir)
  if info['vae_fingerprint'] != fingerprint(model.vae):
    raise ValueError(f'latents_dir {latents_dir} was encoded by another VAE ({info["vae_workdir"]}) than this '
                     'run\'s: make it again with this run\'s VAE')
  if json.loads(info['norm_stats_json']) != json.loads(norm_stats_json):
    raise ValueError(f'latents_dir {latents_dir} was made with other normalisation statistics (normalize / '
                     'num_freqs) than this run\'s')
  return info


class Decode(grain.transforms.Map):
  """A latent record -> image (float in [-1, 1], as the dataset pipeline gives it), z_mean, rms."""

  def map(self, record):
    ex = _unpack(record)
    return {'image': np.asarray(ex['image'], np.float32) / 127.5 - 1.0, 'z_mean': ex['z_mean'], 'rms': ex['rms']}


def dataset(latents_dir: str, split: str, *, batch_size: int, seed: int, prefetch: int = 4,
            worker_count: int = 0) -> grain.IterDataset:
  """Batches of image / z_mean / rms, this process's shard, shuffled and repeated exactly as
  ``pipeline.make_dataset`` orders the dataset the latents were made from (same seed, same examples)."""
  src = grain.sources.ArrayRecordDataSource([os.path.join(latents_dir, f'{split}.array_record')])
  n, index, count = len(src), jax.process_index(), jax.process_count()
  if n // count < batch_size:
    raise ValueError(f'split {split!r} of {latents_dir} has {n} examples: too few for {count} process(es) x '
                     f'batch {batch_size}')
  per = n // count
  ds = grain.MapDataset.source(src)[index * per:(index + 1) * per].shuffle(seed=seed).repeat(None)
  it = ds.map(Decode()).batch(batch_size, drop_remainder=True).to_iter_dataset(pipeline.read_options(prefetch))
  if worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return it


def build_parser() -> cli.Parser:
  p = cli.Parser('python -m gid_jax.training.latents', __doc__)
  p.add_argument('--data', required=True, help='a built dataset (python -m gid_jax.data.build --out)')
  p.add_argument('--vae', required=True, help='the VAE: a configs/vae.py run, or an LDM run or export')
  p.add_argument('--out', required=True, help='the latent dataset folder to write (must not exist)')
  p.add_argument('--normalize', default='', choices=['', 'image_size'],
                 help="the runs' normalisation (config.normalize): '' the dataset's statistics")
  p.add_argument('--num-freqs', type=int, default=0, help="the runs' config.num_freqs (0: all)")
  p.add_argument('--overwrite', action='store_true', help='replace an earlier latent dataset at --out')
  return p


def run(args) -> None:
  data_lib.check_built(args.data, data_lib.DATASET_NAME, '--data')
  runs.check_run(args.vae, ('vae', 'ldm'), '--vae')
  if args.num_freqs < 0:
    raise InputError(f'--num-freqs must be >= 0, got {args.num_freqs}')
  ours = os.path.isfile(os.path.join(args.out, INFO))
  if not (ours and args.overwrite):
    fileio.check_output(args.out, False, '--out', kind='dir')
  info = encode(args.data, args.vae, args.out, args.normalize, args.num_freqs, progress=args.progress)
  print(f'wrote {args.out}: ' + ', '.join(f'{n} {s} examples' for s, n in info['splits'].items()))


def main(argv=None) -> int:
  return cli.main(run, build_parser(), argv, expected=(ValueError, FileNotFoundError))


if __name__ == '__main__':
  sys.exit(main())
