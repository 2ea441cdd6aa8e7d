"""ml_collections configs, one file per experiment, each ``get_config(arg)`` with ``size=...`` variants."""


def parse_size(arg: str | None, sizes, default: str) -> str:
  """The ``size`` of a config argument string like ``'size=tiny'`` (None or '' gives ``default``)."""
  size = default
  for kv in (arg or '').split(','):
    if not kv:
      continue
    k, _, v = kv.partition('=')
    if k != 'size':
      raise ValueError(f'unknown config argument {k!r} (expected size={"|".join(sizes)})')
    size = v
  if size not in sizes:
    raise ValueError(f'size must be one of {tuple(sizes)}, got {size!r}')
  return size


def override(config, **values):
  """Set nested values by dotted name, e.g. ``override(c, **{'flow.method': 'dis'})``; returns config."""
  for name, value in values.items():
    node = config
    *path, last = name.split('.')
    for p in path:
      node = node[p]
    node[last] = value
  return config
