"""Softmax splatting against the SPEC.md reference vectors and a float64 NumPy (np.add.at) reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from gid_jax.ops import splat

MODES = ('sum', 'average', 'linear', 'softmax')


def np_splat(x, flow, importance=None, mode='softmax', clip=20.0, eps=1e-7):
  """float64 reference: (out, mask), written as plainly as possible with np.add.at."""
  x = np.asarray(x, np.float64)
  flow = np.asarray(flow, np.float64)
  b, h, w, c = x.shape
  ones = np.ones((b, h, w, 1))
  if mode == 'softmax':
    z = np.exp(np.clip(np.asarray(importance, np.float64), -clip, clip))
  elif mode == 'linear':
    z = np.asarray(importance, np.float64)
  else:
    z = ones
  # Channels: numerator, normaliser, plain bilinear coverage (for the mask).
  vals = np.concatenate([x * z, z, ones], axis=-1)
  acc = np.zeros((b, h, w, c + 2))
  bi, yi, xi = np.meshgrid(np.arange(b), np.arange(h), np.arange(w), indexing='ij')
  gx, gy = xi + flow[..., 0], yi + flow[..., 1]
  ok = np.isfinite(gx) & np.isfinite(gy)
  bi, gx, gy, vals = bi[ok], gx[ok], gy[ok], vals[ok]
  x0, y0 = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
  fx, fy = gx - x0, gy - y0
  for dy in (0, 1):
    for dx in (0, 1):
      tx, ty = x0 + dx, y0 + dy
      wt = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
      keep = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
      np.add.at(acc, (bi[keep], ty[keep], tx[keep]), vals[keep] * wt[keep, None])
  out = acc[..., :c] if mode == 'sum' else acc[..., :c] / (acc[..., c:c + 1] + eps)
  return out, (acc[..., c + 1:] > splat.MASK_THRESHOLD).astype(np.float64)


def one_pixel(h=4, w=4, at=(1, 1)):
  x = np.zeros((1, h, w, 1), np.float32)
  x[0, at[0], at[1], 0] = 1.0
  return x


def uniform_flow(h, w, fx, fy):
  flow = np.zeros((1, h, w, 2), np.float32)
  flow[..., 0], flow[..., 1] = fx, fy
  return flow


# --- SPEC.md reference vectors ------------------------------------------------------------------------

@pytest.mark.parametrize('mode', MODES)
def test_zero_flow_returns_input(rng, mode):
  x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  z = rng.uniform(0.5, 2.0, size=(2, 5, 6, 1)).astype(np.float32)
  out, mask = splat.softmax_splat(x, np.zeros((2, 5, 6, 2), np.float32), z, mode=mode, return_mask=True)
  np.testing.assert_allclose(out, x, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(mask, 1.0)


def test_half_pixel_shift_puts_a_quarter_on_four_pixels():
  out = np.asarray(splat.softmax_splat(one_pixel(), uniform_flow(4, 4, 0.5, 0.5), mode='sum'))[0, ..., 0]
  want = np.zeros((4, 4))
  want[1:3, 1:3] = 0.25
  np.testing.assert_allclose(out, want, atol=1e-7)


@pytest.mark.parametrize('fx, fy', [(0.2, 0.0), (0.0, 0.2)])
def test_fifth_pixel_shift_splits_point_eight_point_two(fx, fy):
  out = np.asarray(splat.softmax_splat(one_pixel(), uniform_flow(4, 4, fx, fy), mode='sum'))[0, ..., 0]
  want = np.zeros((4, 4))
  want[1, 1] = 0.8
  want[1 + int(fy > 0), 1 + int(fx > 0)] = 0.2
  np.testing.assert_allclose(out, want, atol=1e-6)


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('shift', [(100.0, 0.0), (0.0, -100.0), (-1.0, 0.0), (4.0, 0.0), (1e30, 1e30)])
def test_motion_out_of_the_image_gives_zero(mode, shift):
  x = np.ones((1, 3, 4, 2), np.float32)
  z = np.ones((1, 3, 4, 1), np.float32)
  # -1 and 4 px move the whole 4-wide image exactly off the left / right edge (corners land at -1 and 4..7).
  flow = uniform_flow(3, 4, *shift)
  if abs(shift[0]) in (1.0, 4.0):
    flow[..., 0] = np.where(shift[0] < 0, -1.0 - np.arange(4), 4.0 - np.arange(4))[None, None, :]
  out, mask = splat.softmax_splat(x, flow, z, mode=mode, return_mask=True)
  np.testing.assert_array_equal(out, 0.0)
  np.testing.assert_array_equal(mask, 0.0)


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_non_finite_targets_are_skipped(bad):
  x = np.ones((1, 3, 3, 1), np.float32)
  flow = np.zeros((1, 3, 3, 2), np.float32)
  flow[0, 1, 1, 1] = bad
  out, mask = splat.softmax_splat(x, flow, np.zeros((1, 3, 3, 1), np.float32), return_mask=True)
  want = np.ones((3, 3))
  want[1, 1] = 0.0
  np.testing.assert_allclose(np.asarray(out)[0, ..., 0], want, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(mask)[0, ..., 0], want)


# --- float64 reference on random inputs ---------------------------------------------------------------

def random_case(rng, shape=(2, 7, 9, 3), max_flow=3.0):
  b, h, w, c = shape
  x = rng.normal(size=shape).astype(np.float32)
  # Flows on a 1/1024 grid: x + flow is then exact in float32, so the bilinear weights are the same in
  # float32 and float64 and the comparison is not dominated by weights of pixels that were only grazed.
  flow = np.round(rng.uniform(-max_flow, max_flow, size=(b, h, w, 2)) * 1024) / 1024
  flow[0, 0, 0] = (50.0, -60.0)  # far out of the image
  flow[-1, 1, 2, 0] = np.nan
  flow[0, 2, 3, 1] = np.inf
  z = rng.uniform(0.5, 2.0, size=(b, h, w, 1)).astype(np.float32)
  return x, flow.astype(np.float32), z


# The ways the CPU can run the scatter: the C++ kernels (gid_jax.ops.native, the default where they
# build), XLA's scatter in one piece (as on GPU/TPU), and XLA's in 26 chunks of 5 of the 126 sources, the
# last one overlapping its predecessor, scattered and gathered in a loop as large inputs are.
VARIANTS = {'native': (('impl', 'native'),), 'xla': (('impl', 'xla'),), 'xla-chunks': (('chunk', 5),)}


@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize('mode', MODES)
def test_matches_float64_reference(rng, mode, variant):
  x, flow, z = random_case(rng)
  z_used = z if mode == 'linear' else z * 3 - 3  # softmax also sees negative importance
  out, mask = splat.softmax_splat(x, flow, z_used, mode=mode, return_mask=True, **dict(VARIANTS[variant]))
  want, want_mask = np_splat(x, flow, z_used, mode=mode)
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(mask, want_mask)
  assert 0 < want_mask.mean() < 1  # the case really has holes and covered pixels


def test_importance_is_clipped(rng):
  x, flow, z = random_case(rng)
  z = -10.0 - 10.0 * z  # in [-30, -15], all below -clip
  got = splat.softmax_splat(x, flow, z, clip=5.0)
  np.testing.assert_allclose(got, np_splat(x, flow, z, clip=5.0)[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got, splat.softmax_splat(x, flow, np.full_like(z, -5.0)), rtol=1e-5, atol=1e-6)


# --- gradients ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def grad_fn(mode, variant='native'):
  """Compiled gradient of <splat(x, flow, z), cot> w.r.t. x, flow and z, shared by the tests (compiles are
  most of this file's run time). variant: a VARIANTS key, or an int: XLA's scatter in chunks of that many."""
  kw = dict(chunk=variant) if isinstance(variant, int) else dict(VARIANTS[variant])
  loss = lambda x, flow, z, cot: jnp.sum(splat.softmax_splat(x, flow, z, mode=mode, **kw) * cot)
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def smooth_case(rng, shape=(2, 7, 9, 3)):
  """Flows with fractional parts in [0.1, 0.9]: no target near an integer, where weights have kinks."""
  b, h, w, c = shape
  x = rng.normal(size=shape)
  flow = rng.integers(-2, 3, size=(b, h, w, 2)) + rng.uniform(0.1, 0.9, size=(b, h, w, 2))
  z = rng.uniform(0.5, 1.5, size=(b, h, w, 1))
  cot = rng.normal(size=shape)
  return x, flow, z, cot


@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize('mode', MODES)
def test_gradients_match_float64_finite_differences(rng, mode, variant):
  x, flow, z, cot = smooth_case(rng)
  args = [x, flow, z]

  def loss_np(*a):
    return float(np.sum(np_splat(*a, mode=mode)[0] * cot))

  grads = grad_fn(mode, variant)(*[np.asarray(a, np.float32) for a in args], cot.astype(np.float32))
  h = 1e-5
  for k, name in enumerate(('x', 'flow', 'importance')):
    if name == 'importance' and mode in ('sum', 'average'):
      np.testing.assert_array_equal(grads[k], 0.0)
      continue
    for _ in range(4):
      pos = tuple(rng.integers(0, s) for s in args[k].shape)
      plus = [a.copy() for a in args]
      minus = [a.copy() for a in args]
      plus[k][pos] += h
      minus[k][pos] -= h
      fd = (loss_np(*plus) - loss_np(*minus)) / (2 * h)
      assert float(grads[k][pos]) == pytest.approx(fd, rel=2e-3, abs=2e-4), (name, pos)


@pytest.mark.parametrize('impl', ['native', 'xla'])
def test_check_grads(rng, impl):
  x, flow, z, _ = smooth_case(rng, shape=(1, 3, 4, 2))
  f = lambda x, flow, z: splat.softmax_splat(x, flow, z, mode='softmax', impl=impl)
  args = [jnp.asarray(a, jnp.float32) for a in (x, flow, z)]
  check_grads(f, args, order=1, modes=('rev',), eps=1e-3, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize('variant', VARIANTS)
def test_gradients_are_finite_with_non_finite_and_far_flow(rng, variant):
  x, flow, z = random_case(rng)
  grads = grad_fn('softmax', variant)(x, flow, z, np.ones_like(x))
  for g in grads:
    assert np.all(np.isfinite(g))
  # A source that lands nowhere influences nothing.
  assert np.all(np.asarray(grads[0])[0, 0, 0] == 0) and np.all(np.asarray(grads[1])[-1, 1, 2] == 0)


@pytest.mark.parametrize('variant', ['native', 'xla-chunks'])
def test_gradients_equal_the_one_piece_xla_scatter(rng, variant):
  x, flow, z = random_case(rng)
  cot = rng.normal(size=x.shape).astype(np.float32)
  whole = grad_fn('softmax', 126)(x, flow, z, cot)  # all 126 sources in one XLA scatter
  for got, want in zip(grad_fn('softmax', variant)(x, flow, z, cot), whole):
    # float32 rounding relative to the largest gradient: the kernel sums the flow gradient's terms in
    # another order (<v, (1 - fy)(g1 - g0) + fy (g3 - g2)> rather than four dot products), and they cancel
    # (most where a target's normaliser is small). Measured over 2,600 seeds: the kernel's largest
    # difference was 4.7e-5 of the largest gradient, XLA's chunked scatter's 6e-8. Exactness is checked in
    # float64 (test_native_kernel_in_float64_matches_the_reference_closely).
    scale = 1e-4 if variant == 'native' else 1e-5
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=scale * float(np.abs(want).max()))


@pytest.mark.parametrize('mode', MODES)
def test_native_kernel_in_float64_matches_the_reference_closely(rng, mode):
  # The kernel's float64 instantiation: with x64 on, the splat and its gradient run in float64 and must
  # agree with NumPy's float64 to rounding (1e-12), and with XLA's float64 scatter.
  x, flow, z, cot = smooth_case(rng, shape=(2, 5, 7, 11))  # 11 + 2 floats a source: whole vectors and a tail
  with jax.enable_x64(True):
    args = [jnp.asarray(a, jnp.float64) for a in (x, flow, z)]
    out, mask = splat.softmax_splat(*args, mode=mode, return_mask=True, impl='native')
    assert out.dtype == jnp.float64
    want, want_mask = np_splat(x, flow, z, mode=mode)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(mask, want_mask)
    grads = {}
    for impl in ('native', 'xla'):
      loss = lambda x, flow, z: jnp.sum(splat.softmax_splat(x, flow, z, mode=mode, impl=impl) * cot)
      grads[impl] = jax.grad(loss, argnums=(0, 1, 2))(*args)
    for got, ref in zip(grads['native'], grads['xla']):
      assert got.dtype == jnp.float64
      np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize('mode', ['softmax', 'average'])
def test_native_kernel_on_several_threads_matches_xla_and_repeats_exactly(rng, mode):
  # 2 x 64 x 80 sources: more than one band of output pixels (the forward) and several pieces of sources
  # (the backward) for the XLA:CPU threads; 19 channels: whole float32 vectors and a tail.
  shape = (2, 64, 80, 19)
  x = rng.normal(size=shape).astype(np.float32)
  flow = rng.uniform(-6, 6, size=shape[:3] + (2,)).astype(np.float32)
  z = rng.normal(size=shape[:3] + (1,)).astype(np.float32)
  cot = rng.normal(size=shape).astype(np.float32)

  def run(impl):
    f = lambda x, flow, z: splat.softmax_splat(x, flow, z, mode=mode, return_mask=True, impl=impl)
    (out, mask), vjp = jax.vjp(f, x, flow, z)
    return out, mask, vjp((jnp.asarray(cot), jnp.zeros_like(mask)))

  out, mask, grads = run('native')
  want, want_mask, want_grads = run('xla')
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(mask, want_mask)
  for got, ref in zip(grads, want_grads):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
  again = run('native')
  for a, b in zip(jax.tree.leaves((out, mask, grads)), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)  # the same bits whichever thread did which part


def test_native_kernel_is_the_default_on_cpu_and_can_be_turned_off(rng, monkeypatch):
  from gid_jax.ops import native
  assert native.available(), 'the CPU splat kernel did not build here (is there a C++ compiler?)'
  x, flow, z = random_case(rng)
  hlo = jax.jit(lambda x, f, z: splat.softmax_splat(x, f, z)).lower(x, flow, z).as_text()
  assert native.TARGETS['scatter', 'f32'] in hlo
  hlo = jax.jit(lambda x, f, z: splat.softmax_splat(x, f, z, impl='xla')).lower(x, flow, z).as_text()
  assert native.TARGETS['scatter', 'f32'] not in hlo
  # Without the kernel (GID_JAX_NATIVE_SPLAT=0, or no compiler), 'auto' falls back and 'native' says why.
  monkeypatch.setenv('GID_JAX_NATIVE_SPLAT', '0')
  native.available.cache_clear()
  jax.clear_caches()  # the choice is made when softmax_splat is traced
  try:
    assert not native.available()
    got = splat.softmax_splat(x, flow, z, mode='average', impl='auto')
    np.testing.assert_allclose(got, np_splat(x, flow, mode='average')[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="impl='native' needs the CPU splat kernel"):
      splat.softmax_splat(x, flow, z, mode='linear', impl='native')
  finally:
    monkeypatch.delenv('GID_JAX_NATIVE_SPLAT')
    native.available.cache_clear()
    jax.clear_caches()


def test_a_compiler_that_rejects_the_cpu_flags_builds_without_them(tmp_path, monkeypatch):
  from gid_jax.ops import native
  monkeypatch.setattr(native, 'ARCH_FLAGS', ('-march=no-such-cpu',))
  monkeypatch.setenv('GID_JAX_CACHE', str(tmp_path))
  lib = native._build(native._compiler())  # pylint: disable=protected-access
  assert lib.exists() and lib.parent == tmp_path / 'native'
  assert len(list(lib.parent.glob('*.so'))) == 1  # only the build that worked is cached


def test_a_kernel_that_does_not_compile_warns_once_and_falls_back(tmp_path, monkeypatch):
  from gid_jax.ops import native
  broken = tmp_path / 'splat_cpu.cc'
  broken.write_text('this is not C++\n')
  monkeypatch.setattr(native, 'SOURCE', broken)
  monkeypatch.setenv('GID_JAX_CACHE', str(tmp_path / 'cache'))
  native.available.cache_clear()
  try:
    with pytest.warns(UserWarning, match=r'could not build the CPU splat kernel \(.*error'):
      assert not native.available()
    assert not list((tmp_path / 'cache' / 'native').glob('*.so'))  # nothing half-written is left behind
  finally:
    monkeypatch.undo()
    native.available.cache_clear()
    assert native.available()


# --- behaviour ----------------------------------------------------------------------------------------

def test_works_inside_jit(rng):
  x, flow, z = random_case(rng)
  f = jax.jit(lambda x, flow, z: splat.softmax_splat(x, flow, z, mode='linear', return_mask=True))
  out, mask = f(x, flow, z)
  want, want_mask = np_splat(x, flow, z, mode='linear')
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(mask, want_mask)


def test_larger_importance_wins_where_two_sources_meet():
  # Pixels 0 and 1 of a 1 x 3 row both land on pixel 2; pixel 2 leaves the image.
  x = np.array([10.0, 20.0, 0.0], np.float32).reshape(1, 1, 3, 1)
  flow = np.zeros((1, 1, 3, 2), np.float32)
  flow[0, 0, :, 0] = (2.0, 1.0, 5.0)
  for z, winner in (((0.0, 10.0, 0.0), 20.0), ((10.0, 0.0, 0.0), 10.0)):
    out = splat.softmax_splat(x, flow, np.array(z, np.float32).reshape(1, 1, 3, 1))
    assert float(out[0, 0, 2, 0]) == pytest.approx(winner, rel=1e-3)
  z = np.array((0.0, 3.0, 0.0), np.float32).reshape(1, 1, 3, 1)
  want = (10.0 + 20.0 * np.exp(3.0)) / (1.0 + np.exp(3.0))
  assert float(splat.softmax_splat(x, flow, z)[0, 0, 2, 0]) == pytest.approx(want, rel=1e-5)
  assert float(splat.softmax_splat(x, flow, mode='average')[0, 0, 2, 0]) == pytest.approx(15.0, rel=1e-5)
  np.testing.assert_array_equal(splat.softmax_splat(x, flow, z)[0, 0, :2], 0.0)


def test_bad_arguments_fail_clearly():
  x = np.zeros((1, 4, 5, 3), np.float32)
  flow = np.zeros((1, 4, 5, 2), np.float32)
  with pytest.raises(ValueError, match='mode'):
    splat.softmax_splat(x, flow, mode='max')
  with pytest.raises(ValueError, match='importance'):
    splat.softmax_splat(x, flow, mode='softmax')
  with pytest.raises(ValueError, match='flow'):
    splat.softmax_splat(x, flow[:, :3], mode='sum')
  with pytest.raises(ValueError, match='importance'):
    splat.softmax_splat(x, flow, np.zeros((1, 4, 5), np.float32))
  with pytest.raises(ValueError, match='x of shape'):
    splat.softmax_splat(x[0], flow[0], mode='sum')
  for bad in (0, -3, 2.5):
    with pytest.raises(ValueError, match='chunk must be a positive integer'):
      splat.softmax_splat(x, flow, mode='sum', chunk=bad)
  with pytest.raises(ValueError, match='impl must be one of'):
    splat.softmax_splat(x, flow, mode='sum', impl='cuda')


@pytest.mark.parametrize('impl', ['native', 'xla'])
def test_empty_images_splat_to_empty(impl):
  x = np.zeros((2, 0, 5, 3), np.float32)
  out, mask = splat.softmax_splat(x, np.zeros((2, 0, 5, 2), np.float32), np.zeros((2, 0, 5, 1), np.float32),
                                  return_mask=True, impl=impl)
  assert out.shape == (2, 0, 5, 3) and mask.shape == (2, 0, 5, 1)
  grads = jax.grad(lambda x: jnp.sum(splat.softmax_splat(x, jnp.zeros((2, 0, 5, 2)), mode='sum', impl=impl)))(x)
  assert grads.shape == x.shape


def test_splat_weight_is_mean_motion_magnitude(rng):
  disp = rng.normal(size=(2, 6, 4, 5, 2)).astype(np.float32)
  disp[:, :, 0, 0] = 0.0  # a static pixel: zero weight, finite gradient
  want = np.mean(np.linalg.norm(disp.astype(np.float64), axis=-1), axis=1)[..., None]
  got = splat.splat_weight(disp)
  assert got.shape == (2, 4, 5, 1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  grad = jax.jit(jax.grad(lambda d: jnp.sum(splat.splat_weight(d))))(disp)
  assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[:, :, 0, 0] == 0)
  with pytest.raises(ValueError):
    splat.splat_weight(disp[..., :1])


def np_backward_warp(x, flow):
  x = np.asarray(x, np.float64)
  b, h, w, c = x.shape
  bi, yi, xi = np.meshgrid(np.arange(b), np.arange(h), np.arange(w), indexing='ij')
  gx = np.clip(xi + flow[..., 0], 0, w - 1)
  gy = np.clip(yi + flow[..., 1], 0, h - 1)
  x0, y0 = np.floor(gx).astype(int), np.floor(gy).astype(int)
  x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
  fx, fy = (gx - x0)[..., None], (gy - y0)[..., None]
  return ((1 - fy) * ((1 - fx) * x[bi, y0, x0] + fx * x[bi, y0, x1])
          + fy * ((1 - fx) * x[bi, y1, x0] + fx * x[bi, y1, x1]))


def test_backward_warp(rng):
  x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  np.testing.assert_allclose(splat.backward_warp(x, np.zeros((2, 5, 6, 2), np.float32)), x, atol=1e-6)
  # An integer shift samples the neighbour, with the edge repeated beyond the border.
  shifted = splat.backward_warp(x, uniform_flow(5, 6, 1.0, 0.0).repeat(2, 0))
  np.testing.assert_allclose(shifted, np.concatenate([x[:, :, 1:], x[:, :, -1:]], axis=2), atol=1e-6)
  flow = rng.uniform(-3, 3, size=(2, 5, 6, 2)).astype(np.float32)
  np.testing.assert_allclose(splat.backward_warp(x, flow), np_backward_warp(x, flow), rtol=1e-5, atol=1e-5)
  flow[0, 1, 1, 0] = np.nan
  out = np.asarray(splat.backward_warp(x, flow))
  assert np.all(out[0, 1, 1] == 0) and np.all(np.isfinite(out))


def test_benchmark_runs():
  from benchmarks import splat as bench
  lines = []
  # Without torch: importing it alone takes ~2 s; the benchmark checks torch against JAX itself.
  rows = bench.run(sizes=((1, 12, 16, 3),), repeats=1, out=lines.append, bandwidth_mb=8, use_torch=False)
  assert [r['pass'] for r in rows] == ['forward', 'forward+backward']
  assert all(r['jax_ms'] > 0 and r['floor_ms'] > 0 for r in rows)
  assert any(l.startswith('| 1x12x16x3 | forward |') for l in lines)
