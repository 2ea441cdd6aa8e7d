import os

import numpy as np
import orbax.checkpoint as ocp
import grain
import pytest

from gid_jax.configs import data as data_config
from gid_jax.data import build, pipeline, video
from gid_jax.motion import normalize as nl


@pytest.fixture(scope='module')
def dataset(synthetic_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('ds'))
  build.build(synthetic_dir, out, data_config.get_config('size=tiny'), progress=False)
  return out


def _keys(batch):
  return tuple(batch['start_frame'].tolist()), float(batch['nspec'].sum())


def test_batches_are_normalised(dataset):
  it = iter(pipeline.make_dataset(dataset, 'train', batch_size=3, seed=0, shuffle=False,
                                  shard_index=0, shard_count=1))
  b = next(it)
  assert b['image'].shape == (3, 40, 64, 3) and b['image'].dtype == np.float32
  assert -1.0 <= b['image'].min() and b['image'].max() <= 1.0
  assert b['nspec'].shape == (3, 8, 40, 64, 4)
  src = pipeline.data_source(dataset, 'train')
  stats = pipeline.load_stats(dataset)
  for i in range(3):
    np.testing.assert_allclose(nl.denormalize(b['nspec'][i], stats), src[i]['spectral_volume'],
                               rtol=1e-6, atol=1e-7)
  raw = next(iter(pipeline.make_dataset(dataset, 'train', batch_size=3, shuffle=False, normalize=False,
                                        shard_index=0, shard_count=1)))
  np.testing.assert_array_equal(raw['spec'][0], src[0]['spectral_volume'])


def test_seeded_shuffle(dataset):
  def first(seed):
    it = iter(pipeline.make_dataset(dataset, 'train', batch_size=4, seed=seed, shard_index=0,
                                    shard_count=1))
    return [_keys(next(it)) for _ in range(3)]
  assert first(0) == first(0)
  assert first(0) != first(1)


def test_sharding_is_disjoint_and_equal(dataset):
  n = len(pipeline.data_source(dataset, 'train'))
  seen = []
  for i in range(2):
    ds = pipeline.make_dataset(dataset, 'train', batch_size=1, shuffle=False, num_epochs=1,
                               shard_index=i, shard_count=2)
    seen.append({(int(b['start_frame'][0]), round(float(b['nspec'].sum()), 3)) for b in ds})
  assert len(seen[0]) == len(seen[1]) == n // 2
  assert not seen[0] & seen[1]


def test_iterator_state_round_trips_through_orbax(dataset, tmp_path):
  it = iter(pipeline.make_dataset(dataset, 'train', batch_size=2, seed=3, shard_index=0, shard_count=1))
  for _ in range(5):
    next(it)
  mngr = ocp.CheckpointManager(str(tmp_path / 'ckpt'), options=ocp.CheckpointManagerOptions(create=True))
  mngr.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  expected = [_keys(next(it)) for _ in range(4)]
  fresh = iter(pipeline.make_dataset(dataset, 'train', batch_size=2, seed=3, shard_index=0,
                                     shard_count=1))
  mngr.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  assert [_keys(next(fresh)) for _ in range(4)] == expected


def test_errors(dataset, tmp_path):
  with pytest.raises(FileNotFoundError, match='no gid_motion dataset'):
    pipeline.make_dataset(str(tmp_path), batch_size=1, shard_index=0, shard_count=1)
  with pytest.raises(ValueError, match='too few'):
    pipeline.make_dataset(dataset, 'test', batch_size=1000, shard_index=0, shard_count=1)
  with pytest.raises(ValueError, match='no split'):
    pipeline.make_dataset(dataset, 'validation', batch_size=1, shard_index=0, shard_count=1)


def test_renderer_triples(dataset, synthetic_dir):
  src = pipeline.data_source(dataset, 'train', name=build.FRAMES_DATASET_NAME)
  assert len(src) == 2 * len(pipeline.data_source(dataset, 'train'))  # frame_pairs_per_clip = 2
  ex = src[0]
  t, start = int(ex['t']), int(ex['start_frame'])
  assert 1 <= t < 40 and ex['target'].shape == (40, 64, 3) and ex['flow'].shape == (40, 64, 2)
  # The target is the clip's frame t of the decoded video, the image its frame 0.
  frames = video.read_video(os.path.join(synthetic_dir, ex['video_id'].decode() + '.mp4'), fps=30,
                            size=(64, 40))
  np.testing.assert_array_equal(ex['image'], frames[start])
  np.testing.assert_array_equal(ex['target'], frames[start + t])
  b = next(iter(pipeline.make_dataset(dataset, 'train', batch_size=2, name=build.FRAMES_DATASET_NAME,
                                      shard_index=0, shard_count=1)))
  assert b['target'].shape == (2, 40, 64, 3) and b['flow'].shape == (2, 40, 64, 2)
  assert -1 <= b['target'].min() and b['target'].max() <= 1
