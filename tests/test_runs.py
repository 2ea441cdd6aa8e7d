"""Run folders: the config as given and its derived facts, stored apart; the one migration of older runs."""

import copy
import json
import os

import pytest

from gid_jax import runs
from gid_jax.configs import ldm as ldm_config

# The config item of the bundled model of 2026-12-06 (a stage-2 run), saved by code older than the facts item
# (git show 34bde5d:gid_jax/assets/default/ldm/checkpoints/1000/config/metadata).
OLD_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'old_ldm_config.json')


def _raw_bundled() -> dict:
  with open(OLD_CONFIG, encoding='utf-8') as f:
    return json.load(f)


def test_an_old_ldm_run_migrates_to_config_and_facts():
  old = _raw_bundled()
  config, facts = runs.migrate(old)
  # Facts left the config; what the code of the time derived is all in the facts.
  for path in runs.FACTS['ldm']:
    node = config
    *parents, last = path.split('.')
    for p in parents:
      node = node.get(p, {})
    assert last not in node, path
  assert set(facts) == {'data_info', 'norm_stats_json', 'latent_scale', 'vae', 'model', 'num_freqs', 'normalize'}
  assert facts['model']['mask_head'] == 'middle'
  # Facts the run predates: what its code used (the image at the motion's size).
  assert 'image_scale' not in old['data_info'] and facts['data_info'] == {**old['data_info'], 'image_scale': 1}
  assert 'vae' not in config
  # Options the run predates take their packaged defaults (what the old code did), stated once in configs/.
  assert 'cache_latents' not in old and config['cache_latents'] == ldm_config.get_config('size=tiny').cache_latents
  assert facts['vae']['model']['norm'] == 'group' and 'norm' not in old['vae']['model']
  # Resolved, it is the stored config again (plus the filled-in options): the model it builds is unchanged.
  resolved = runs.resolve(config, facts)
  flat_old, flat_new = runs._flat(old), runs._flat(resolved)  # pylint: disable=protected-access
  assert {k: flat_new[k] for k in flat_old} == flat_old
  # Migrating a migrated run changes nothing; the input is not modified.
  assert runs.migrate(config, facts) == (config, facts)
  assert old == _raw_bundled()


def test_old_values_of_an_old_type_and_missing_options():
  old = _raw_bundled()
  old['model']['mask_head'] = True  # the first version's only head: on the last features
  del old['aux_mask_at']
  config, facts = runs.migrate(old)
  assert facts['model']['mask_head'] == 'out' and config['aux_mask_at'] == 'out'
  old['model']['mask_head'] = False
  assert runs.migrate(old)[1]['model']['mask_head'] == ''
  renderer = {'trainer': 'renderer', 'size': 'tiny', 'model': {'widths': [8, 16], 'blocks': [1, 1],
                                                               'decoder_blocks': 1}}
  config, facts = runs.migrate(renderer)
  assert config['model']['rgb_base'] == 'softmax' and config['model']['widths'] == [8, 16] and facts == {}
  assert config['loss']['ssim'] == 0.0 and config['loss']['psnr'] == 0.0
  with pytest.raises(ValueError, match="unknown trainer 'gan'"):
    runs.migrate({'trainer': 'gan'})


def test_merge_and_resolve_do_not_change_their_inputs():
  a = {'x': 1, 'm': {'p': 1, 'q': 2}}
  b = {'m': {'q': 3, 'r': 4}, 'y': 5}
  a0, b0 = copy.deepcopy(a), copy.deepcopy(b)
  assert runs.resolve(a, b) == {'x': 1, 'm': {'p': 1, 'q': 3, 'r': 4}, 'y': 5}
  assert a == a0 and b == b0


def test_identity_of_a_migrated_run_against_a_fresh_config():
  old = _raw_bundled()
  config, _ = runs.migrate(old)
  fresh = ldm_config.get_config('size=tiny').to_dict()
  diff = runs.config_differences(config, fresh)
  # Another run (stage 2, its own model), never because of the facts the old config held.
  assert diff and not any(k.startswith(('data_info', 'norm_stats_json', 'latent_scale', 'vae')) for k in diff)
  assert not any(k in ('model.in_channels', 'model.mask_head', 'model.cond_channels') for k in diff)
