"""Exactly-once outputs: each written under a hidden temporary name and renamed into place, carrying the
job key (what it was made from) in its own metadata, so a re-run can tell a complete output from one to redo."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

JOB_KEY = "torchax_vae_job"  # metadata name of the job key in every output (safetensors, MP4, PNG)


def job_key(source: Path, settings: dict[str, Any]) -> str:
  """What an output must have been made from to count as done: the source (path, size, mtime) and
  every setting that changes the result. A re-run with any of them changed redoes the output."""
  stat = source.stat()
  described = {"source": os.path.abspath(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **settings}
  return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def _partial_name(path: Path) -> Path:
  return path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.partial")


def _clear_partials(path: Path) -> None:
  """Temporaries an earlier, killed run left for ``path`` (this process owns the item)."""
  if path.parent.is_dir():
    for stale in path.parent.glob(f".{path.name}.*.partial"):
      stale.unlink(missing_ok=True)


def _publish(partial: Path, path: Path) -> None:
  """The one step that makes an output exist: an atomic rename of its complete temporary."""
  os.replace(partial, path)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
  """``write(temporary)``, flushed to disk, then renamed to ``path``; nothing is left on failure."""
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = _partial_name(path)
  try:
    write(partial)
    with open(partial, "rb") as handle:
      os.fsync(handle.fileno())
    _publish(partial, path)
  except BaseException:
    partial.unlink(missing_ok=True)
    raise


def stored_job_key(path: Path) -> str | None:
  """The job key in an output's metadata (``None``: no file, or not one of ours)."""
  if not path.is_file():
    return None
  suffix = path.suffix.lower()
  try:
    if suffix == ".safetensors":
      from safetensors import safe_open

      with safe_open(str(path), framework="numpy") as handle:
        return (handle.metadata() or {}).get(JOB_KEY)
    if suffix == ".png":
      from PIL import Image

      with Image.open(path) as image:
        return image.text.get(JOB_KEY)
    if suffix == ".mp4":
      return _mp4_comment(path)
  except Exception:  # unreadable: not complete, so redone
    return None
  return None


def _mp4_comment(path: Path) -> str | None:
  import subprocess

  import imageio_ffmpeg

  out = subprocess.run(
    [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
    capture_output=True, text=True, timeout=60, check=False,
  )  # fmt: skip
  for line in out.stdout.splitlines():
    if line.startswith("comment="):
      return line.removeprefix("comment=").strip()
  return None
