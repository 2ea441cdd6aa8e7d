"""Metric writing: logging, a JSON-lines file and TensorBoard event files in the work dir.

clu's metric writers import TensorFlow at package import time, which this project does not install, so
this is a small writer with the same ``write_scalars(step, dict)`` / ``flush()`` surface. One JSON object
per line (``{"step": 100, "loss": 0.12, ...}``) is what every plotting tool and pandas read directly; the
same scalars go to ``WORKDIR/tensorboard`` through tensorboardX (no TensorFlow):
``tensorboard --logdir WORKDIR/tensorboard`` plots them while the run trains.

A workdir in object storage (``gs://bucket/run``): objects cannot be appended to, so the JSON-lines file is
kept in memory and the object rewritten at every write (a few hundred bytes a line: a 100,000-step run logged
every 50 steps is under 1 MB); tensorboardX writes ``gs://`` event files itself (google-cloud-storage).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

import tensorboardX

from gid_jax import fileio

log = logging.getLogger('gid_jax.train')
TENSORBOARD_DIR = 'tensorboard'
PROFILE_DIR = 'profile'


class MetricWriter:
  """Logs scalars and appends them to ``workdir/metrics.jsonl`` (one line per call: the training scalars of a log
  step, and the ``eval/`` ones of an evaluation on their own line); a no-op when disabled (non-main process)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._f = None
    self._tb = None
    self._remote = None  # object storage: the file's whole text, rewritten at every write
    if enabled:
      where = fileio.path(workdir)
      where.mkdir(parents=True, exist_ok=True)
      self._path = where / 'metrics.jsonl'
      if fileio.is_remote(workdir):
        self._remote = self._path.read_text() if self._path.exists() else ''
      else:
        self._f = open(self._path, 'a', encoding='utf-8')
      self._tb = tensorboardX.SummaryWriter(str(where / TENSORBOARD_DIR), flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    log.info('[%d] %s', step, ', '.join(f'{k}={v:.5g}' for k, v in values.items()))
    line = json.dumps({'step': int(step), **values}) + '\n'
    if self._remote is not None:
      self._remote += line
      self._path.write_text(self._remote)
    else:
      self._f.write(line)
      self._f.flush()  # readable while training runs, and nothing lost if it is killed
    for k, v in values.items():
      self._tb.add_scalar(k, v, int(step))

  def flush(self) -> None:
    if self._f:
      self._f.flush()
    if self._tb:
      self._tb.flush()

  def close(self) -> None:
    if self._f:
      self._f.close()
    if self._tb:
      self._tb.close()
    self._f = self._tb = None


def make_writer(workdir: str, enabled: bool = True) -> MetricWriter:
  return MetricWriter(workdir, enabled)


def read_metrics(workdir: str) -> list[dict]:
  path = fileio.path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
