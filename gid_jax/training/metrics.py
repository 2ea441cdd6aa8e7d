"""Metric writing: logging, a JSON-lines file and TensorBoard event files in the work dir.

clu's metric writers import TensorFlow at package import time, which this project does not install, so
this is a small writer with the same ``write_scalars(step, dict)`` / ``flush()`` surface. One JSON object
per line (``{"step": 100, "loss": 0.12, ...}``) is what every plotting tool and pandas read directly; the
same scalars go to ``WORKDIR/tensorboard`` through tensorboardX (no TensorFlow):
``tensorboard --logdir WORKDIR/tensorboard`` plots them while the run trains.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import tensorboardX

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
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._f = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR), flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    log.info('[%d] %s', step, ', '.join(f'{k}={v:.5g}' for k, v in values.items()))
    self._f.write(json.dumps({'step': int(step), **values}) + '\n')
    self._f.flush()  # readable while training runs, and nothing lost if it is killed
    for k, v in values.items():
      self._tb.add_scalar(k, v, int(step))

  def flush(self) -> None:
    if self._f:
      self._f.flush()
      self._tb.flush()

  def close(self) -> None:
    if self._f:
      self._f.close()
      self._tb.close()
      self._f = self._tb = None


def make_writer(workdir: str, enabled: bool = True) -> MetricWriter:
  return MetricWriter(workdir, enabled)


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]
