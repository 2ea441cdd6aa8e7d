"""Progress for every long phase, on stderr: phase lines and bars whose rate and ETA skip XLA's compile.

Low in the package (like ``fileio``) so that the training loop, the dataset builder and the evaluators use
the same display as the command-line entry points (``gid_jax.cli`` re-exports it).
"""

from __future__ import annotations

import contextlib
import sys
import time

from tqdm.auto import tqdm


class Progress:
  """Phase lines and bars on stderr: ``loading models ... done (2.1 s)``; bars whose ETA skips compiling.

  A bar for a jitted loop starts after its first step (which includes XLA's compile): until then the line
  says ``compiling``, so the rate and ETA count only steps that ran compiled code.
  """

  def __init__(self, enabled: bool = True, stream=None):
    self.enabled = enabled
    self.stream = stream or sys.stderr

  def _say(self, text: str) -> None:
    print(text, file=self.stream, flush=True)

  @contextlib.contextmanager
  def phase(self, name: str):
    t0 = time.perf_counter()
    if self.enabled:
      self.stream.write(f'{name} ...')
      self.stream.flush()
    try:
      yield
    except BaseException:
      if self.enabled:
        self._say(' failed')
      raise
    if self.enabled:
      self._say(f' done ({time.perf_counter() - t0:.1f} s)')

  def bar(self, name: str, total: int, unit: str = 'step', compiles: bool = True) -> 'Bar':
    return Bar(self, name, total, unit, compiles)


class Bar:
  """``callback(done, total)`` target for a loop's progress; also a context manager that closes it.

  ``start()`` (or a first call with done = 0) says ``NAME: compiling ...``; the tqdm bar opens at the first
  call with done > 0, with everything before it (XLA's compile) outside its rate and ETA. ``compiles=False``
  opens the bar at once (nothing to compile: encoding, extraction).
  """

  def __init__(self, progress: Progress, name: str, total: int, unit: str, compiles: bool):
    self.p, self.name, self.total, self.unit, self.compiles = progress, name, total, unit, compiles
    self._bar = None
    self._t0 = None
    self._closed = False

  def start(self) -> 'Bar':
    if self._t0 is None:
      self._t0 = time.perf_counter()
      if self.p.enabled:
        if self.compiles:
          self.p.stream.write(f'{self.name}: compiling ...\n')
          self.p.stream.flush()
        else:
          self._open(0)
    return self

  def _open(self, initial: int) -> None:
    self._bar = tqdm(total=self.total, initial=initial, desc=self.name, unit=self.unit, file=self.p.stream,
                     dynamic_ncols=True, leave=True)

  def __call__(self, done: int, total: int | None = None) -> None:
    if self._closed:
      return
    self.start()
    if total is not None:
      self.total = total
    if not self.p.enabled or done == 0:
      return
    if self._bar is None:
      self._open(done)  # everything up to here included compiling: not part of the rate
      return
    self._bar.total = self.total
    self._bar.n = done
    self._bar.refresh()

  def set_postfix(self, **values) -> None:
    if self._bar is not None:
      self._bar.set_postfix(**values)

  def close(self) -> None:
    if self._closed:
      return
    self._closed = True
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    elif self.p.enabled and self._t0 is not None:
      self.p._say(f'{self.name}: done ({time.perf_counter() - self._t0:.1f} s)')  # pylint: disable=protected-access

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
