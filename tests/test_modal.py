import math
import os

import numpy as np
import pytest

from gid_jax import interact
from gid_jax.motion import modal, spectral


def _spec(rng, k=16, h=12, w=14, bins=None, channels=(0, 1, 2, 3)):
  """Random spectral volume (pixels); energy only in ``bins`` and ``channels`` when given."""
  spec = np.zeros((k, h, w, 4), np.float32)
  for b in (range(k) if bins is None else bins):
    for c in channels:
      spec[b, ..., c] = rng.normal(size=(h, w))
  return spec


def _energies(sim, num_frames):
  out = [sim.energy()]
  for _ in range(num_frames):
    sim._advance()  # pylint: disable=protected-access
    out.append(sim.energy())
  return np.asarray(out)


def test_no_poke_means_no_motion(rng):
  spec = _spec(rng)
  spec[0] += 5.0  # a static offset (DC) is not motion
  sim = modal.ModalSimulator(spec, modal.ModalParams(), num_frames=150)
  disp = np.asarray(sim.simulate(40))
  assert disp.shape == (40, 12, 14, 2)
  assert np.all(disp == 0)
  assert np.all(np.asarray(sim.step()) == 0) and sim.energy() == 0


def test_energy_decays_with_damping(rng):
  params = modal.ModalParams(damping=0.05)
  sim = modal.ModalSimulator(_spec(rng), params, num_frames=150)
  sim.poke(6.0, 5.0, 1.0, -0.5, 2.0)
  e = _energies(sim, 300)
  assert e[0] > 0
  # Averaged over 1 s windows (the symplectic integrator's ripple is O(h omega)), energy only goes down ...
  windows = e[1:].reshape(10, 30).mean(axis=1)
  assert np.all(np.diff(windows) < 0), windows
  # ... at least as fast as the slowest mode's exp(-2 zeta omega t).
  bound = math.exp(-2 * params.damping * sim.omega.min() * 10.0)
  assert e[-1] < 1.1 * bound * e[0], (e[-1] / e[0], bound)


def test_energy_is_conserved_without_damping(rng):
  spec = _spec(rng)
  fine = modal.ModalSimulator(spec, modal.ModalParams(damping=0.0, max_h_omega=0.005), num_frames=150)
  fine.poke(3.0, 7.0, 0.3, 1.0)
  e = _energies(fine, 300)
  np.testing.assert_allclose(e / e[0], 1.0, atol=5e-3)
  # The default step size keeps the ripple within ~h omega / 2 and, unlike explicit Euler, never grows.
  coarse = modal.ModalSimulator(spec, modal.ModalParams(damping=0.0), num_frames=150)
  coarse.poke(3.0, 7.0, 0.3, 1.0)
  e = _energies(coarse, 300)
  assert coarse.substeps == 7
  np.testing.assert_allclose(e / e[0], 1.0, atol=0.06)
  assert abs(e[-30:].mean() / e[:30].mean() - 1) < 0.01


def test_response_peaks_at_the_modes_frequencies(rng):
  t, fps = 60, 30.0
  spec = _spec(rng, k=16, bins=(3, 7))
  # Both modes get the same shape at the poked pixel, so the push excites both alike: with fully random
  # shapes one mode's response can be 1e4 times the other's and its leakage swamps the weak one.
  spec[(3, 7), 6, 7, :] = 1.0
  params = modal.ModalParams(fps=fps, damping=0.002, poke_radius_px=0.0)
  sim = modal.ModalSimulator(spec, params, num_frames=t)
  sim.poke(7.0, 6.0, 1.0, 1.0)
  disp = np.asarray(sim.simulate(t), np.float64)
  power = np.sum(np.abs(np.fft.rfft(disp, axis=0)) ** 2, axis=(1, 2, 3))
  top = np.argsort(power)[::-1]
  assert sorted(top[:2]) == [3, 7], power.round(3)
  # Frequencies of bins 3 and 7 at T = 60, 30 fps: 1.5 Hz and 3.5 Hz; all other bins hold little.
  np.testing.assert_allclose(np.fft.rfftfreq(t, 1 / fps)[[3, 7]], spectral.frequencies(16, t, fps)[[3, 7]])
  assert power[top[2]] < 0.01 * power[top[1]], power.round(6)


def test_push_orthogonal_to_a_purely_x_mode_excites_nothing(rng):
  spec = _spec(rng, channels=(0, 1))
  sim = modal.ModalSimulator(spec, num_frames=150)
  sim.poke(5.0, 5.0, 0.0, 3.0, 10.0)
  assert np.all(sim.v == 0)
  assert np.all(np.asarray(sim.simulate(20)) == 0)
  sim.poke(5.0, 5.0, 1.0, 0.0)
  assert np.abs(np.asarray(sim.simulate(20))[..., 0]).max() > 0


def test_poked_point_starts_moving_along_the_push(rng):
  # The conjugate projection makes every mode move the poked pixel along +d, whatever its phase there.
  for _ in range(5):
    sim = modal.ModalSimulator(_spec(rng), modal.ModalParams(poke_radius_px=0.0), num_frames=150)
    x, y = rng.integers(0, 14), rng.integers(0, 12)
    d = rng.normal(size=2)
    sim.poke(float(x), float(y), d[0], d[1])
    first = np.asarray(sim.step())[y, x]
    assert first @ d > 0, (first, d)


def test_linearity(rng):
  spec = _spec(rng)
  params = modal.ModalParams(max_disp_frac=None)
  pokes = [(0, (4.0, 3.0, 0.7, -0.2, 1.0)), (9, (10.5, 8.2, -0.3, 0.9, 0.5))]
  one = np.asarray(modal.ModalSimulator(spec, params).simulate(30, pokes), np.float64)
  doubled = [(f, p[:4] + (2 * p[4],)) for f, p in pokes]
  two = np.asarray(modal.ModalSimulator(spec, params).simulate(30, doubled))
  first = np.asarray(modal.ModalSimulator(spec, params).simulate(30, pokes[:1]), np.float64)
  second = np.asarray(modal.ModalSimulator(spec, params).simulate(30, pokes[1:]), np.float64)
  scale = np.abs(one).max()
  assert scale > 1e-3
  np.testing.assert_allclose(two, 2 * one, atol=1e-5 * scale)
  np.testing.assert_allclose(one, first + second, atol=1e-5 * scale)  # superposition of pokes


def test_strength_reads_as_pixels_for_a_1hz_mode():
  # A uniform x mode at bin 5 (1 Hz at T = 150, 30 fps): a strength-1 unit push peaks at 1 px.
  spec = np.zeros((16, 10, 12, 4), np.float32)
  spec[5, ..., 0] = 0.7
  sim = modal.ModalSimulator(spec, modal.ModalParams(damping=0.0), num_frames=150)
  disp = np.asarray(sim.simulate(31, [(0, (6.0, 5.0, 1.0, 0.0))]))
  assert np.abs(disp[..., 1]).max() == 0
  assert np.abs(disp[..., 0]).max() == pytest.approx(1.0, abs=0.01)
  np.testing.assert_allclose(disp[8, ..., 0], 1.0, atol=0.01)  # a quarter period later: the peak
  # A held push settles (with damping) at the static deflection force / (m omega^2) = 1 px.
  sim = modal.ModalSimulator(spec, modal.ModalParams(damping=0.7), num_frames=150)
  sim.hold(6.0, 5.0, 1.0, 0.0)
  for _ in range(150):
    disp = np.asarray(sim.step())
  np.testing.assert_allclose(disp[..., 0], 1.0, atol=1e-3)
  sim.release()
  for _ in range(150):
    disp = np.asarray(sim.step())
  np.testing.assert_allclose(disp, 0.0, atol=1e-3)


def test_displacement_is_clamped_for_display(rng):
  spec = _spec(rng)
  sim = modal.ModalSimulator(spec, modal.ModalParams(max_disp_frac=0.1), num_frames=150)
  free = modal.ModalSimulator(spec, modal.ModalParams(max_disp_frac=None), num_frames=150)
  for s in (sim, free):
    s.poke(5.0, 5.0, 1.0, 1.0, 200.0)
  d, f = np.asarray(sim.simulate(10)), np.asarray(free.simulate(10))
  mag, fmag = np.linalg.norm(d, axis=-1), np.linalg.norm(f, axis=-1)
  assert fmag.max() > 1.2 and mag.max() == pytest.approx(1.2, rel=1e-5)  # 0.1 * min(12, 14)
  small = fmag <= 1.2
  np.testing.assert_array_equal(d[small], f[small])
  big = ~small
  np.testing.assert_allclose((d[big] * f[big]).sum(-1), mag[big] * fmag[big], rtol=1e-5)  # same direction


def test_one_step_matches_float64_reference(rng):
  k, h, w, t, fps = 6, 5, 7, 40, 24.0
  spec = rng.normal(size=(k, h, w, 4)).astype(np.float32)
  params = modal.ModalParams(fps=fps, mass=1.7, damping=0.08, max_disp_frac=None)
  sim = modal.ModalSimulator(spec, params, num_frames=t)
  j = k - 1
  q = rng.normal(size=j) + 1j * rng.normal(size=j)
  v = rng.normal(size=j) + 1j * rng.normal(size=j)
  sim.set_state(q, v)
  sim.hold(2.5, 1.0, 0.3, -1.2, 0.4)
  # float64 reference, written independently from the module.
  s64 = spec.astype(np.float64)
  phi = np.stack([s64[1:, ..., 0] + 1j * s64[1:, ..., 1], s64[1:, ..., 2] + 1j * s64[1:, ..., 3]], -1)
  phi /= np.sqrt(np.max(np.sum(np.abs(phi) ** 2, axis=(0, -1))))
  omega = 2 * np.pi * np.arange(1, k) * fps / t
  n = math.ceil(omega.max() / fps / 0.1)
  hh = 1 / fps / n
  near = [(yy, xx) for yy in range(h) for xx in range(w) if (xx - 2.5) ** 2 + (yy - 1.0) ** 2 <= 1.5 ** 2]
  phi_p = np.mean([phi[:, yy, xx] for yy, xx in near], axis=0)
  force = 0.4 * (2 * np.pi) ** 2 * np.conj(phi_p[:, 0] * 0.3 + phi_p[:, 1] * -1.2)
  for _ in range(n):
    v = v + hh * (force / 1.7 - 2 * 0.08 * omega * v - omega ** 2 * q)
    q = q + hh * v
  disp = np.real(np.einsum('jhwc,j->hwc', phi, q))
  got = np.asarray(sim.step())
  assert sim.substeps == n
  np.testing.assert_allclose(sim.q, q, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(sim.v, v, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(got, disp, atol=1e-5 * np.abs(disp).max())


def test_mode_shape_normalisations(rng):
  spec = _spec(rng, k=6)
  spec[0] = 100.0  # DC never enters a mode shape
  spec[4] = 0.0  # a mode with no motion stays zero, not NaN
  raw = spec[1:, ..., 0::2].astype(np.float64) + 1j * spec[1:, ..., 1::2]
  np.testing.assert_allclose(modal.mode_shapes(spec, 'none'), raw, rtol=1e-12)
  glob = modal.mode_shapes(spec, 'global')
  norm2 = np.sum(np.abs(glob) ** 2, axis=(0, -1))
  assert norm2.max() == pytest.approx(1.0)
  np.testing.assert_allclose(glob * np.sqrt(np.sum(np.abs(raw) ** 2, axis=(0, -1)).max()), raw, rtol=1e-12)
  per = modal.mode_shapes(spec, 'per_mode')
  peak = np.sqrt(np.sum(np.abs(per) ** 2, axis=-1)).max(axis=(1, 2))
  np.testing.assert_allclose(peak, [1, 1, 1, 0, 1])
  assert np.all(np.isfinite(modal.mode_shapes(np.zeros_like(spec))))


def test_bad_input(rng):
  spec = _spec(rng)
  with pytest.raises(ValueError, match='outside the 14 x 12 image'):
    modal.ModalSimulator(spec).poke(14.5, 3.0, 1.0, 0.0)
  with pytest.raises(ValueError, match='K >= 2'):
    modal.ModalSimulator(spec[:1])
  with pytest.raises(ValueError, match=r'\(K, H, W, 4\)'):
    modal.ModalSimulator(spec[..., :2])
  with pytest.raises(ValueError, match='damping'):
    modal.ModalParams(damping=-0.1)
  with pytest.raises(ValueError, match='unstable'):
    modal.ModalSimulator(spec, modal.ModalParams(fps=5.0, substeps=1), spectral_fps=30.0)
  with pytest.raises(ValueError, match='Nyquist'):
    modal.ModalSimulator(spec, num_frames=20)


def test_spectral_file_round_trip_and_errors(rng, tmp_path):
  spec = _spec(rng, k=8)
  path = modal.save_spectral(str(tmp_path / 's.npz'), spec, num_frames=40, fps=24.0)
  back = modal.load_spectral(path)
  np.testing.assert_array_equal(back.spectral_volume, spec)
  assert (back.num_frames, back.fps) == (40, 24.0)
  assert sorted(os.listdir(tmp_path)) == ['s.npz']  # no temporary left behind
  (tmp_path / 'junk.npz').write_text('not a zip')
  with pytest.raises(ValueError, match='junk.npz: not a readable'):
    modal.load_spectral(str(tmp_path / 'junk.npz'))
  np.savez(tmp_path / 'partial.npz', spectral_volume=spec)
  with pytest.raises(ValueError, match='missing num_frames, fps'):
    modal.load_spectral(str(tmp_path / 'partial.npz'))
  np.savez(tmp_path / 'short.npz', spectral_volume=spec, num_frames=10, fps=30.0)
  with pytest.raises(ValueError, match='short.npz: num_freqs=8 needs more than 14 frames'):
    modal.load_spectral(str(tmp_path / 'short.npz'))
  with pytest.raises(FileNotFoundError):
    modal.load_spectral(str(tmp_path / 'none.npz'))


# -- the CLI -------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def cli_inputs(tmp_path_factory):
  from PIL import Image
  from gid_jax.data import synthetic
  d = tmp_path_factory.mktemp('interact')
  photo = synthetic.load_photo('astronaut')
  Image.fromarray(photo[::4, ::4]).save(d / 'photo.png')  # 128 x 128: centre-cropped to 64:40
  rng = np.random.default_rng(0)
  spec = np.zeros((16, 40, 64, 4), np.float32)
  spec[2:6, 8:32, 16:48] = rng.normal(size=(4, 24, 32, 4)) * 0.5  # a moving patch, the rest still
  modal.save_spectral(str(d / 'spec.npz'), spec, num_frames=150, fps=30.0)
  (d / 'notes.png').write_text('not an image')
  return d


def test_cli_end_to_end(cli_inputs, tmp_path, capsys):
  from gid_jax.data import video
  out = str(tmp_path / 'poke.mp4')
  rc = interact.main(['--image', str(cli_inputs / 'photo.png'), '--spectral', str(cli_inputs / 'spec.npz'),
                      '--poke', '0.5,0.5,3,1', '--poke', '0.4,0.3,0,-2,10', '--strength', '2',
                      '--num-frames', '24', '--out', out])
  assert rc == 0, capsys.readouterr().err
  frames = video.read_video(out)
  assert frames.shape == (24, 40, 64, 3)
  # The patch moves, the still border does not (H.264 noise aside).
  diff = np.abs(frames[1:].astype(np.float32) - frames[:1]).mean(axis=(0, 3))
  assert diff[8:32, 16:48].mean() > 3 * diff[36:].mean() + 0.5, (diff[8:32, 16:48].mean(), diff[36:].mean())


@pytest.mark.parametrize('change, message', [
    ({'--image': 'missing.png'}, 'photo not found'),
    ({'--image': 'notes.png'}, 'not a readable image'),
    ({'--poke': '0.5,0.5,1'}, 'expected X,Y,DX,DY'),
    ({'--poke': '1.5,0.5,1,0'}, 'must lie in [0, 1]'),
    ({'--spectral': 'notes.png'}, 'not a readable .npz'),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(cli_inputs, tmp_path, capsys, change, message):
  args = {'--image': 'photo.png', '--spectral': 'spec.npz', '--poke': '0.5,0.5,1,0'}
  args.update(change)
  argv = [a for k, v in args.items() for a in (k, str(cli_inputs / v) if k != '--poke' else v)]
  out = tmp_path / 'out.mp4'
  assert interact.main(argv + ['--num-frames', '4', '--out', str(out)]) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith('error: ') and message in err, err
  assert not os.listdir(tmp_path)
