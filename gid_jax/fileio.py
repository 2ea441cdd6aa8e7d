"""Atomic writes that never lose what the program did not create.

* A reader (or a resumed job) sees the old file or the new one, never half of one.
* A folder we write (a folder of PNG frames, an export) carries :data:`OWNER_FILE`, the list of the entries
  we put there. Replacing a folder swaps it whole only when everything in it is ours; a folder that also
  holds a user's files gets only our entries replaced, file by file, and the user's files are kept.
* :func:`check_output` is the one policy of every command's output options: an existing file or non-empty
  folder is refused (one line, exit 2) unless ``--overwrite`` is given.
* Run folders (training workdirs, exports) may also be object-storage URLs (``gs://bucket/run``, any
  scheme etils.epath, orbax and tensorstore accept): :func:`path` and :func:`absolute` are how code reaches
  them. ``gs://`` needs the ``cloud`` extra (gcsfs); tensorstore has its own GCS client.
* Datasets and video folders in object storage are read from a local mirror (:func:`download`; ArrayRecord's
  and PyAV's readers open local files): ``$GID_JAX_CACHE`` (default ``~/.cache/gid_jax``) ``/mirror/<scheme>/
  <bucket>/<path>``, one copy per host, only files missing or of another size fetched. The dataset builder
  builds into the mirror of its ``--out`` URL and uploads the result (:func:`upload`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Iterator

import filelock
from etils import epath

from gid_jax.errors import InputError

OWNER_FILE = '.gid_jax-output.json'  # in a folder we wrote: {"entries": [the names we put there]}


def is_remote(name) -> bool:
  """Whether ``name`` is a URL (``gs://``, ``s3://``, ...) rather than a local path."""
  return '://' in str(name)


def absolute(name) -> str:
  """A local path made absolute; a URL as it is."""
  return str(name) if is_remote(name) else os.path.abspath(name)


def path(name) -> epath.Path:
  """``name`` (local path or URL) as an etils.epath.Path: one API for local disks and object storage."""
  return epath.Path(absolute(name))


def mirror(url: str) -> str:
  """The local folder that mirrors the object-storage folder ``url`` (module docstring)."""
  scheme, rest = str(url).split('://', 1)
  root = os.environ.get('GID_JAX_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'gid_jax')
  return os.path.join(root, 'mirror', scheme, *[p for p in rest.split('/') if p not in ('', '.', '..')])


def files(where: epath.Path) -> list[epath.Path]:
  """Every file under ``where``, listed folder by folder (epath refuses '**' on GCS)."""
  todo, files = [where], []
  while todo:
    for p in todo.pop().iterdir():
      (todo if p.is_dir() else files).append(p)
  return files


def download(url: str) -> str:
  """A local copy of the folder ``url`` (a local path is returned as it is): the files missing from its mirror
  or of another size are fetched, each written atomically; processes on one host take turns (a file lock)."""
  if not is_remote(url):
    return url
  local = mirror(url)
  os.makedirs(local, exist_ok=True)
  where = epath.Path(url)
  if not where.is_dir():
    raise FileNotFoundError(f'{url}: no such folder')
  with filelock.FileLock(local.rstrip('/') + '.lock'):
    for p in files(where):
      dest = os.path.join(local, str(p.relative_to(where)))
      if os.path.isfile(dest) and os.path.getsize(dest) == p.stat().length:
        continue
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      with atomic_path(dest) as tmp:
        with open(tmp, 'wb') as f:
          f.write(p.read_bytes())
  return local


def upload(local: str, url: str) -> None:
  """Copy every file of the local folder ``local`` to the object-storage folder ``url`` (each object whole)."""
  where = epath.Path(url)
  for root, _, files in os.walk(local):
    for f in files:
      target = where / os.path.relpath(os.path.join(root, f), local)
      with open(os.path.join(root, f), 'rb') as src:
        target.write_bytes(src.read())


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
    # mkstemp/mkdtemp create owner-only files; give the result the usual permissions (umask applied).
    umask = os.umask(0)
    os.umask(umask)
    if os.path.exists(tmp):
      os.chmod(tmp, (0o777 if os.path.isdir(tmp) else 0o666) & ~umask)
    if is_dir:
      _publish_dir(tmp, path)
    else:
      os.replace(tmp, path)
  except BaseException:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
    elif os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write_bytes(path: str, data: bytes) -> None:
  """``data`` to ``path``: renamed into place on a local disk; in object storage, one object written whole
  (readers see the old object or the new one there too)."""
  if is_remote(path):
    epath.Path(path).write_bytes(data)
    return
  with atomic_path(path) as tmp:
    with open(tmp, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())


def atomic_write_text(path: str, text: str) -> None:
  atomic_write_bytes(path, text.encode('utf-8'))


def owned_entries(path: str) -> set[str] | None:
  """The names we put in the folder ``path`` (from its :data:`OWNER_FILE`), or None if we did not write it."""
  try:
    with open(os.path.join(path, OWNER_FILE), encoding='utf-8') as f:
      return set(json.load(f)['entries'])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def _publish_dir(tmp: str, path: str) -> None:
  """Move the finished folder ``tmp`` to ``path`` without losing anything we did not create there."""
  names = sorted(n for n in os.listdir(tmp) if n != OWNER_FILE)
  with open(os.path.join(tmp, OWNER_FILE), 'w', encoding='utf-8') as f:
    json.dump({'created_by': 'gid_jax', 'entries': names}, f)
  if not os.path.lexists(path):
    os.replace(tmp, path)
    return
  if not os.path.isdir(path) or os.path.islink(path):  # a file (or link) at path: the caller allowed it
    os.remove(path)
    os.replace(tmp, path)
    return
  old = owned_entries(path) or set()
  present = set(os.listdir(path)) - {OWNER_FILE}
  if present <= old:  # all ours (or empty): swap the folder whole
    aside = tempfile.mkdtemp(dir=os.path.dirname(path), prefix='.old-')
    os.replace(path, os.path.join(aside, 'old'))
    os.replace(tmp, path)
    shutil.rmtree(aside, ignore_errors=True)
    return
  # The folder holds files we did not create: replace our own entries only, one atomic rename each.
  for n in names:
    dest = os.path.join(path, n)
    if os.path.isdir(dest) and not os.path.islink(dest):
      if n not in old:
        raise InputError(f'{path} holds a folder {n} that this program did not create; nothing was replaced')
      shutil.rmtree(dest)
    os.replace(os.path.join(tmp, n), dest)
  for n in old - set(names):  # ours from an earlier run, not written this time
    dest = os.path.join(path, n)
    if os.path.isdir(dest) and not os.path.islink(dest):
      shutil.rmtree(dest, ignore_errors=True)
    elif os.path.lexists(dest):
      os.remove(dest)
  os.replace(os.path.join(tmp, OWNER_FILE), os.path.join(path, OWNER_FILE))
  shutil.rmtree(tmp, ignore_errors=True)


def check_output(path: str, overwrite: bool = False, option: str = '--out', kind: str = 'any') -> None:
  """The output policy of every command: refuse (InputError, one line) to replace what exists at ``path``.

  An existing file, or a folder that is not empty, is refused unless ``overwrite``; with it, a file is
  replaced atomically and a folder gets only our own entries replaced (see :func:`_publish_dir`).
  ``kind``: 'file' or 'dir' refuses the other kind even with ``overwrite`` (a file never replaces a folder).
  Also refused: a parent that is a file, or a folder we cannot write to.
  """
  if not path:
    raise InputError(f'{option} must not be empty')
  if is_remote(path):  # object storage: no parents to check; a non-empty prefix is refused alike
    where = epath.Path(path)
    if where.is_dir() and any(where.iterdir()) and not overwrite:
      raise InputError(f'{option} {path} is a folder that is not empty; choose a new name, or pass --overwrite')
    if where.is_file() and (kind == 'dir' or not overwrite):
      raise InputError(f'{option} {path} is a file' + ('' if kind == 'dir' else '; pass --overwrite to replace it'))
    return
  full = os.path.abspath(path)
  parent = os.path.dirname(full)
  probe = parent
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise InputError(f'{option} {path}: {probe} is a file, not a folder')
  if not os.access(probe, os.W_OK):
    raise InputError(f'{option} {path}: cannot write in {probe} (permission denied)')
  if not os.path.lexists(full):
    return
  if os.path.isdir(full):
    if kind == 'file':
      raise InputError(f'{option} {path} is a folder; give a file name')
    if not os.listdir(full):
      return
    if not overwrite:
      raise InputError(f'{option} {path} is a folder that is not empty; choose a new name, or pass --overwrite '
                       'to replace only our own output in it (other files are kept)')
    return
  if kind == 'dir':
    raise InputError(f'{option} {path} is a file, not a folder; choose another name')
  if not overwrite:
    raise InputError(f'{option} {path} exists; choose a new name, or pass --overwrite to replace it')
