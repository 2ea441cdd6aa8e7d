"""The one command-line convention of every entry point (``gid-sample``, ``python -m gid_jax.train``, ...).

Why argparse and not absl: the user-facing commands (sample, interact, app) are argparse programs with
``--dash-options`` that users type; absl would bring its own ~40 global flags into every ``--help`` and
report a config typo as a 55-line traceback. What absl gave the training commands, ml_collections config
files with ``--config.key=value`` overrides, is provided here (:func:`load_config`), with one-line errors
that name the closest valid keys. absl-style spellings keep working: ``--num_frames`` is read as
``--num-frames`` and ``--noprogress`` as ``--no-progress``.

Every entry point:

* validates every option and config value before any model, dataset or JAX device work, and reports bad
  input as one line ``error: ...`` on stderr with exit code 2 (:func:`main`), leaving nothing on disk;
* never deletes or overwrites what it did not create: an existing output is refused unless ``--overwrite``
  (``gid_jax.fileio.check_output``);
* shows progress for every long phase (:class:`Progress`), ``--no-progress`` for logs;
* is quiet by default (no third-party INFO logs or backend warnings); ``--verbose`` brings them back;
* has ``--version`` and shows defaults in ``--help``.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import importlib.util
import logging
import os
import sys
import warnings
from typing import Callable, Sequence

from absl import logging as absl_logging

from gid_jax import __version__
from gid_jax.configs import check_ranges
from gid_jax.errors import InputError
from gid_jax.progress import Bar, Progress  # pylint: disable=unused-import  (cli.Progress for entry points)

EXIT_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
  """Defaults shown after every option's help; the description's line breaks kept."""

  def _get_help_string(self, action):
    if (action.default in (None, False, '') or action.default is argparse.SUPPRESS
        or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))):  # pylint: disable=protected-access
      return action.help  # "(default: None)" says nothing
    return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
  """argparse with one-line errors (exit 2), ``--version``, ``--verbose`` and absl-style spellings."""

  def __init__(self, prog: str, description: str, *, progress: bool = True, config_default: str | None = None,
               config_required: bool = False):
    super().__init__(prog=prog, description=description, formatter_class=_Formatter)
    self.add_argument('--version', action='version', version=f'gid_jax {__version__}')
    self.add_argument('--verbose', action='store_true',
                      help='show third-party logs and warnings (JAX, orbax, TFDS) and our own INFO logs')
    if progress:
      self.add_argument('--no-progress', dest='progress', action='store_false',
                        help='no progress bars or phase lines on stderr (for logs)')
    self._has_config = config_default is not None or config_required
    if self._has_config:
      self.add_argument('--config', default=config_default, required=config_required,
                        metavar='FILE[:size=tiny|small|paper]',
                        help='config file: a path, or configs/NAME.py / NAME for the packaged configs, from '
                             'any directory. Override any value with --config.KEY=VALUE (e.g. '
                             '--config.optimizer.learning_rate=1e-4)')

  def error(self, message):
    print(f'error: {message}', file=sys.stderr)
    sys.exit(EXIT_INPUT)

  def _normalise(self, argv: Sequence[str]) -> list[str]:
    out = []
    for a in argv:
      if a.startswith('--') and not a.startswith('--config'):
        name, eq, value = a.partition('=')
        dashed = '--' + name[2:].replace('_', '-')
        if dashed in self._option_string_actions:
          a = dashed + eq + value
        elif name.startswith('--no') and not name.startswith('--no-') and '--no-' + name[4:] in self._option_string_actions:
          a = '--no-' + name[4:] + eq + value  # absl's --noprogress
      out.append(a)
    return out

  def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default sys.argv[1:]); with a config option, load it and apply its overrides."""
    argv = self._normalise(sys.argv[1:] if argv is None else argv)
    args, rest = self.parse_known_args(argv)
    overrides = []
    unknown = []
    it = iter(rest)
    for a in it:
      if self._has_config and a.startswith('--config.'):
        key, eq, value = a[len('--config.'):].partition('=')
        if not eq:
          value = next(it, None)
          if value is None:
            self.error(f'--config.{key} needs a value')
        overrides.append((key, value))
      else:
        unknown.append(a)
    if unknown:
      close = difflib.get_close_matches(unknown[0].split('=')[0], list(self._option_string_actions), n=2)
      hint = f' (did you mean {" or ".join(close)}?)' if close else ''
      self.error(f'unrecognized argument {unknown[0]}{hint}; see --help')
    if self._has_config:
      if args.config is None:
        if overrides:
          self.error('--config.KEY=VALUE needs --config=FILE')
      else:
        try:
          args.config = load_config(args.config, overrides)
        except InputError as e:
          self.error(str(e).splitlines()[0])
    setup_logging(args.verbose)
    return args


# --------------------------------------------------------------------------------------------------------
# Configs: packaged files resolved from any directory, overrides with one-line errors


def resolve_config_path(path: str) -> str:
  """``configs/ldm.py``, ``ldm.py``, ``ldm`` or any file path -> the file (packaged configs from anywhere)."""
  if os.path.isfile(path):
    return path
  name = os.path.basename(path)
  if not name.endswith('.py'):
    name += '.py'
  packaged = os.path.join(CONFIG_DIR, name)
  parent = os.path.dirname(os.path.normpath(path))
  if os.path.isfile(packaged) and os.path.basename(parent) in ('', 'configs'):
    return packaged
  names = sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith('.py') and not f.startswith('_'))
  raise InputError(f'config file not found: {path} (packaged configs: {", ".join(names)}, as configs/NAME.py)')


def _import_config_module(path: str):
  if os.path.dirname(os.path.abspath(path)) == CONFIG_DIR:
    return importlib.import_module(f'gid_jax.configs.{os.path.basename(path)[:-3]}')
  spec = importlib.util.spec_from_file_location(f'_gid_config_{abs(hash(os.path.abspath(path)))}', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # a user's config file that does not import: say where, in one line
    raise InputError(f'config file {path} does not load: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}') from e
  return module


def _all_keys(config, prefix: str = '') -> list[str]:
  keys = []
  for k, v in config.items():
    keys.append(prefix + k)
    if hasattr(v, 'items') and hasattr(v, 'lock'):
      keys += _all_keys(v, prefix + k + '.')
  return keys


def _parse_value(text: str, current, key: str):
  """``text`` as the type of the config's current value (bool, int, float, str, tuple, None)."""
  if isinstance(current, bool):
    low = text.lower()
    if low in ('true', '1', 'yes'):
      return True
    if low in ('false', '0', 'no'):
      return False
    raise InputError(f'--config.{key}={text}: expected true or false')
  if isinstance(current, str):
    return text
  if isinstance(current, float):
    try:
      return float(text)  # also nan / inf, which the range check then names
    except ValueError:
      pass
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if current is None:
      return text
    if isinstance(current, (tuple, list)):  # absl's spelling of a sequence: a,b,c
      parts = [p.strip() for p in text.split(',') if p.strip()]
      return tuple(_literal_or_str(p) for p in parts)
    raise InputError(f'--config.{key}={text}: expected {type(current).__name__}, got {text!r}') from None
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list, str, int, float)):
    value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
  if current is not None and not isinstance(value, type(current)) and not (
      isinstance(current, (tuple, list)) and isinstance(value, (tuple, list))):
    raise InputError(f'--config.{key}={text}: expected {type(current).__name__}, got {type(value).__name__}')
  return value


def _literal_or_str(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config, overrides: Sequence[tuple[str, str]]):
  """Set ``key=value`` pairs (dotted keys); a key not in the config -> InputError naming the closest keys."""
  keys = _all_keys(config)
  for key, text in overrides:
    *path, last = key.split('.')
    node = config
    ok = True
    for p in path:
      if p in node and hasattr(node[p], 'items'):
        node = node[p]
      else:
        ok = False
        break
    if not ok or last not in node:
      close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
      if not close:  # a typo in the last part only: compare with the keys of the same section
        close = [k for k in keys if k.rsplit('.', 1)[-1] in difflib.get_close_matches(last, [
            k.rsplit('.', 1)[-1] for k in keys], n=3, cutoff=0.6)][:3]
      hint = f'; did you mean {", ".join("config." + c for c in close)}?' if close else ''
      raise InputError(f'config has no key {key!r}{hint}')
    current = node[last]
    if hasattr(current, 'items'):
      raise InputError(f'--config.{key} is a section; set one of its keys, e.g. --config.{key}.'
                       f'{next(iter(current.keys()), "KEY")}=...')
    value = _parse_value(text, current, key)
    try:
      node[last] = value
    except (TypeError, ValueError) as e:
      raise InputError(f'--config.{key}={text}: {str(e).splitlines()[0]}') from None
  return config


def load_config(spec: str, overrides: Sequence[tuple[str, str]] = ()):
  """``FILE[:ARG]`` + overrides -> the config (a ConfigDict), range-checked; InputError if anything is off."""
  path, _, arg = spec.partition(':')
  path = resolve_config_path(path)
  module = _import_config_module(path)
  if not hasattr(module, 'get_config'):
    raise InputError(f'config file {path} has no get_config()')
  try:
    config = module.get_config(arg or None)
  except (ValueError, TypeError) as e:
    raise InputError(f'--config={spec}: {str(e).splitlines()[0]}') from None
  apply_overrides(config, overrides)
  try:
    check_ranges(config)
  except ValueError as e:
    raise InputError(str(e).splitlines()[0]) from None
  return config


# --------------------------------------------------------------------------------------------------------
# Quiet by default


_NOISY_LOGGERS = ('absl', 'jax', 'jax._src', 'orbax', 'orbax.checkpoint', 'tensorflow', 'tensorflow_datasets',
                  'grain', 'etils', 'matplotlib', 'PIL', 'urllib3', 'filelock', 'gcsfs', 'fsspec', 'google')


def setup_logging(verbose: bool = False) -> None:
  """Quiet third-party logs and warnings unless ``verbose``; call before importing JAX and friends."""
  level = logging.INFO if verbose else logging.WARNING
  logging.basicConfig(level=level, format='%(levelname)s %(name)s: %(message)s')
  logging.getLogger().setLevel(level)
  logging.getLogger('gid_jax').setLevel(logging.INFO if verbose else logging.WARNING)
  if verbose:
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')
  for name in _NOISY_LOGGERS:
    logging.getLogger(name).setLevel(logging.ERROR)
  try:
    absl_logging.set_verbosity(absl_logging.ERROR)
    absl_logging.set_stderrthreshold('error')
  except ImportError:
    pass
  # Our own checks (photo size, pixel limit) say it in one line; PIL's warning would come first.
  warnings.filterwarnings('ignore', category=Warning, module='PIL')
  warnings.filterwarnings('ignore', message='.*backend.*tpu.*', category=UserWarning)
  warnings.filterwarnings('ignore', category=DeprecationWarning)
  warnings.filterwarnings('ignore', category=FutureWarning)


# --------------------------------------------------------------------------------------------------------
# The one error-to-exit-code wrapper


def main(run: Callable[[argparse.Namespace], int | None], parser: Parser, argv: Sequence[str] | None = None,
         expected: tuple[type[BaseException], ...] = ()) -> int:
  """Parse ``argv`` and call ``run(args)``. InputError (and ``expected``) -> one line on stderr, exit 2."""
  args = parser.parse(argv)
  try:
    code = run(args)
  except (InputError, *expected) as e:
    print(f'error: {_one_line(e)}', file=sys.stderr)
    return EXIT_INPUT
  except KeyboardInterrupt:
    print('interrupted; nothing was written at the output (a training run resumes from its last checkpoint)',
          file=sys.stderr)
    return EXIT_INTERRUPTED
  return 0 if code is None else int(code)


def _one_line(e: BaseException) -> str:
  text = str(e).strip()
  if isinstance(e, FileNotFoundError) and e.filename:
    return f'not found: {e.filename}'
  return text.splitlines()[0] if text else type(e).__name__
