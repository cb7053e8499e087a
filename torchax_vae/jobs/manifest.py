"""The job's manifest in OUT_DIR: a JSONL line per input's outcome, appended as the job goes; its record of
each output's size and mtime lets a re-run skip reading keys back."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from .commit import write_atomically
from .inputs import Item


class Manifest:
  """``OUT_DIR/manifest.jsonl`` (``manifest.<i>-of-<n>.jsonl`` for process ``i`` of ``n``): one JSON
  line per outcome, appended and flushed as the job goes; :meth:`close` rewrites it with the last line
  of each input (inputs of earlier runs kept)."""

  def __init__(self, out_dir: Path, process_index: int = 0, process_count: int = 1):
    name = "manifest.jsonl" if process_count == 1 else f"manifest.{process_index}-of-{process_count}.jsonl"
    self.path = out_dir / name
    self._lock = threading.Lock()
    self.previous = _last_lines(self.path)  # source -> its last line of earlier runs
    self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

  def vouches(self, item: Item, key: str, paths: list[Path]) -> bool:
    """Whether an earlier run's line says these outputs were made with ``key`` and each file is still
    the one it wrote (size and mtime): a re-run then skips reading each output's key back (for an MP4,
    one ffmpeg call)."""
    entry = self.previous.get(str(item.source))
    if not entry or entry.get("status") != "done" or entry.get("key") != key:
      return False
    files = entry.get("files") or {}
    for path in paths:
      recorded = files.get(path.name)
      try:
        stat = path.stat()
      except OSError:
        return False
      if recorded != [stat.st_size, stat.st_mtime_ns]:
        return False
    return True

  def record(self, item: Item, status: str, output: Path | None = None, **fields: Any) -> dict[str, Any]:
    entry = {"source": str(item.source), "output": output.as_posix() if output else None, "status": status, **fields}
    line = json.dumps(entry) + "\n"
    with self._lock:
      self._file.write(line)
      self._file.flush()
    return entry

  def close(self) -> None:
    with self._lock:
      self._file.close()
      latest = _last_lines(self.path)
      text = "".join(json.dumps(entry) + "\n" for entry in latest.values())
      write_atomically(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _last_lines(path: Path) -> dict[str, dict[str, Any]]:
  """A manifest's last line per source (lines a killed run left half-written are skipped)."""
  latest: dict[str, dict[str, Any]] = {}
  if path.is_file():
    for line in path.read_text(encoding="utf-8").splitlines():
      try:
        entry = json.loads(line)
        latest[entry["source"]] = entry
      except (json.JSONDecodeError, KeyError, TypeError):
        continue
  return latest


def _file_stats(paths: list[Path]) -> dict[str, list[int]]:
  """``{file name: [size, mtime_ns]}`` of an item's outputs, recorded with its manifest line."""
  return {path.name: [path.stat().st_size, path.stat().st_mtime_ns] for path in paths}
