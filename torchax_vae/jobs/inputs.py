"""A job's inputs: files, directories and lists made numbered items, cut into the fixed chunks that a
re-run redoes whole and that processes share out; and the errors that stop the job or one item."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".gif")
LIST_SUFFIXES = (".txt", ".jsonl")


class JobInputError(ValueError):
  """Job arguments that cannot be used (nothing is run)."""


class ItemError(Exception):
  """One input that cannot be done (recorded in the manifest with this reason; the job goes on)."""


@dataclasses.dataclass(frozen=True)
class Item:
  index: int  # position among the job's inputs: fixes its chunk and which process takes it
  source: Path
  name: str  # output path under OUT_DIR without suffix, POSIX: "sub/clip0"


def collect_inputs(inputs: Iterable[str | os.PathLike], suffixes: tuple[str, ...]) -> list[Item]:
  """The job's inputs, in a fixed order: files as given; directories walked recursively (sorted, files
  with one of ``suffixes``, hidden ones skipped), named by their path below the directory; ``.txt``
  lists (a path per line, ``#`` comments) and ``.jsonl`` lists (a path string, ``{"path": …}``, or an
  encode job's manifest: the outputs of its ``done`` lines), relative paths taken from the list's
  directory. A listed path that does not exist becomes an item that fails; a command-line one is a
  :class:`JobInputError`, as are two inputs that would write the same output."""
  found: list[tuple[Path, str]] = []
  for given in inputs:
    path = Path(given)
    if path.is_dir():
      for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes):
        relative = file.relative_to(path)
        if not any(part.startswith(".") for part in relative.parts):
          found.append((file, relative.with_suffix("").as_posix()))
    elif path.suffix.lower() in LIST_SUFFIXES and path.suffix.lower() not in suffixes:
      if not path.is_file():
        raise JobInputError(f"{path}: no such list file")
      found += _listed(path)
    elif path.is_file():
      if path.suffix.lower() not in suffixes:
        raise JobInputError(f"{path}: expected a file ending in {', '.join(suffixes)}, a directory or a .txt/.jsonl list")
      found.append((path, path.stem))
    else:
      raise JobInputError(f"{path}: no such file or directory")
  items, by_name, seen = [], {}, set()
  for source, name in found:
    key = os.path.abspath(source)
    if key in seen:
      continue
    seen.add(key)
    if name in by_name:
      raise JobInputError(
        f"{by_name[name]} and {source} would both be written as {name!r}; pass their directory instead, "
        "so that outputs keep the inputs' subdirectories"
      )
    by_name[name] = source
    items.append(Item(len(items), source, name))
  return items


def _listed(list_file: Path) -> list[tuple[Path, str]]:
  base = list_file.parent
  entries: list[Path] = []
  for number, line in enumerate(list_file.read_text().splitlines(), 1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    if list_file.suffix.lower() == ".txt":
      entries.append(Path(line))
      continue
    try:
      value = json.loads(line)
    except json.JSONDecodeError as err:
      raise JobInputError(f"{list_file}:{number}: not a JSON line ({err.msg})") from None
    if isinstance(value, str):
      entries.append(Path(value))
    elif isinstance(value, dict) and isinstance(value.get("path"), str):
      entries.append(Path(value["path"]))
    elif isinstance(value, dict) and "status" in value and "output" in value:  # a job manifest
      if value["status"] == "done":
        entries.append(Path(value["output"]))
    else:
      raise JobInputError(f'{list_file}:{number}: expected a path string, {{"path": …}} or a job manifest line')
  found = []
  for entry in entries:
    path = entry if entry.is_absolute() else base / entry
    try:
      name = path.relative_to(base).with_suffix("").as_posix()
    except ValueError:
      name = path.stem
    found.append((path, name))
  return found


def chunks(items: list[Item], batch: int) -> list[list[Item]]:
  """Consecutive ``batch`` items: the unit read, run and (after a kill) redone together."""
  return [items[i : i + batch] for i in range(0, len(items), batch)]


def process_share(all_chunks: list[list[Item]], process_index: int, process_count: int) -> list[list[Item]]:
  """Chunks ``process_index, process_index + process_count, …``: each process's own, no coordinator."""
  return all_chunks[process_index::process_count]
