"""A progress bar for long decodes: ``progress=True`` anywhere a ``progress(done, total)`` callback is taken.

Off by default in library calls (``progress=None``); the CLI turns it on. A callable is called after each
frame step (of each tile) has run, with the steps done and the total.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

ProgressArg = Callable[[int, int], None] | bool | None


class ProgressBar:
  """A tqdm bar on stderr over frame steps (and tiles), filled by ``progress(done, total)`` calls."""

  def __init__(self, desc: str = "decode", enabled: bool = True):
    self.desc = desc
    self.enabled = enabled
    self.bar = None

  def __call__(self, done: int, total: int) -> None:
    if not self.enabled:
      return
    if self.bar is None:
      from tqdm.auto import tqdm

      self.bar = tqdm(total=total, desc=self.desc, unit="step", file=sys.stderr, leave=False)
    self.bar.update(done - self.bar.n)
    if done >= total:
      self.close()

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None


def callback(progress: ProgressArg, desc: str = "decode") -> Callable[[int, int], None] | None:
  """``progress`` as a callback: ``True`` a :class:`ProgressBar`, ``None``/``False`` none, else as given."""
  if progress is True:
    return ProgressBar(desc)
  if progress is None or progress is False:
    return None
  if not callable(progress):
    raise TypeError(f"progress: expected True, False, None or a callable(done, total), got {type(progress).__name__}")
  return progress
