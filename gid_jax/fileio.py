"""Atomic file writes: a reader (or a resumed job) sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str, *, is_dir: bool = False) -> Iterator[str]:
  """Yields a temporary path beside ``path``; on success it is renamed onto ``path``, else removed.

  The temporary name keeps the final extension, so writers that pick a format by extension still work.
  """
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  base = os.path.basename(path)
  stem, ext = os.path.splitext(base)
  if is_dir:
    tmp = tempfile.mkdtemp(dir=parent, prefix=f'.tmp-{base}-')
  else:
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f'.tmp-{stem}-', suffix=ext)
    os.close(fd)
  try:
    yield tmp
    if is_dir and os.path.isdir(path):
      shutil.rmtree(path)
    # mkstemp/mkdtemp create owner-only files; give the result the usual permissions (umask applied).
    umask = os.umask(0)
    os.umask(umask)
    if os.path.exists(tmp):
      os.chmod(tmp, (0o777 if os.path.isdir(tmp) else 0o666) & ~umask)
    os.replace(tmp, path)
  except BaseException:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
    elif os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write_bytes(path: str, data: bytes) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())


def atomic_write_text(path: str, text: str) -> None:
  atomic_write_bytes(path, text.encode('utf-8'))
