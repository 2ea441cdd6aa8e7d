"""The CPU splat kernels of ``splat_cpu.cc``, built on first use and registered as XLA FFI targets.

The shared library is compiled once per (source, jaxlib, compiler) with the system C++ compiler (``$CXX``,
else ``c++``/``g++``/``clang++``) against the FFI headers inside jaxlib, into ``$GID_JAX_CACHE`` (default
``~/.cache/gid_jax``) under a file lock, written atomically; later processes just load it. Set
``GID_JAX_NATIVE_SPLAT=0`` to never build or use it. When it cannot be built (no compiler, a compile
error), ``available()`` is False, a warning says why once, and gid_jax.ops.splat uses its pure-JAX
scatter instead.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import warnings

import filelock
import jax

SOURCE = pathlib.Path(__file__).with_name('splat_cpu.cc')
# -ffp-contract=off: no fused multiply-adds the source does not write. With GCC's default (fast) the compiler
# fused differently in different inlined copies of one loop (the copy the calling thread runs vs the helpers'),
# so a result's last bits depended on which thread did which piece; off, they do not.
FLAGS = ('-O3', '-std=c++17', '-shared', '-fPIC', '-fno-math-errno', '-ffp-contract=off', '-w')
# Tried first: the library is built on the machine that runs it (the cache key holds the CPU's features, so
# a home directory shared by different machines gets one build per kind of CPU). A compiler that does not
# take it (some clang versions on arm64) builds without it.
ARCH_FLAGS = ('-march=native',)
TARGETS = {(kind, dtype): f'gid_splat_{kind}_{dtype}' for kind in ('scatter', 'gather') for dtype in ('f32', 'f64')}


def _compiler() -> str | None:
  for name in (os.environ.get('CXX'), 'c++', 'g++', 'clang++'):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get('GID_JAX_CACHE', pathlib.Path.home() / '.cache' / 'gid_jax'))


def _cpu_features() -> bytes:
  try:
    text = pathlib.Path('/proc/cpuinfo').read_text()
  except OSError:
    return platform.processor().encode()
  flags = next((line for line in text.splitlines() if line.startswith(('flags', 'Features'))), '')
  return (platform.machine() + flags).encode()


def _build(compiler: str) -> pathlib.Path:
  try:
    return _build_with(compiler, FLAGS + ARCH_FLAGS)
  except RuntimeError:
    return _build_with(compiler, FLAGS)


def _build_with(compiler: str, flags: tuple[str, ...]) -> pathlib.Path:
  include = jax.ffi.include_dir()
  key = hashlib.sha256(b'\0'.join([SOURCE.read_bytes(), jax.lib.__version__.encode(), compiler.encode(),
                                   ' '.join(flags).encode(), _cpu_features()])).hexdigest()[:16]
  out_dir = cache_dir() / 'native'
  out_dir.mkdir(parents=True, exist_ok=True)
  lib = out_dir / f'splat_cpu-{key}.so'
  with filelock.FileLock(str(lib) + '.lock'):
    if not lib.exists():
      fd, tmp = tempfile.mkstemp(dir=out_dir, suffix='.so.tmp')
      os.close(fd)
      try:
        cmd = [compiler, *flags, f'-I{include}', str(SOURCE), '-o', tmp]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
          lines = res.stderr.strip().splitlines() or ['no output']
          first = next((line for line in lines if 'error' in line), lines[-1]).strip()
          raise RuntimeError(f'{os.path.basename(compiler)} exited with {res.returncode}: {first}')
        os.replace(tmp, lib)
      finally:
        if os.path.exists(tmp):
          os.remove(tmp)
  return lib


@functools.cache
def available() -> bool:
  """True when the kernels are built and registered with XLA:CPU (builds them on the first call)."""
  if os.environ.get('GID_JAX_NATIVE_SPLAT', '1') == '0':
    return False
  compiler = _compiler()
  if compiler is None:
    warnings.warn('gid_jax: no C++ compiler found (set CXX); the CPU splat uses the slower pure-JAX scatter',
                  stacklevel=2)
    return False
  try:
    lib = ctypes.cdll.LoadLibrary(str(_build(compiler)))
  except (OSError, RuntimeError) as e:
    warnings.warn(f'gid_jax: could not build the CPU splat kernel ({e}); using the pure-JAX scatter',
                  stacklevel=2)
    return False
  for (kind, dtype), name in TARGETS.items():
    symbol = getattr(lib, f'GidSplat{kind.capitalize()}{dtype.upper()}')
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(symbol), platform='cpu')
  return True
