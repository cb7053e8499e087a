"""Dataset jobs: videos -> latent files (``python -m torchax_vae encode``) and latent files -> videos
(``python -m torchax_vae decode INPUT... -o OUT_DIR``), resumable, on every device of every host.

    items = collect_inputs(["clips/"], VIDEO_SUFFIXES)            # [Item(0, clips/a.mp4, "a"), …]
    summary = encode_job(runner, items, "latents/", EncodeSettings(size=(480, 720), frames=49))

What a long job needs, and where it is:

* **Exactly once.** Each output is written under a hidden temporary name beside it and renamed
  (:func:`_publish`); an output carries its *job key* (source path, size and mtime, model, settings)
  in its own metadata. A re-run takes an output whose key matches as done and redoes every other.
  Items go in fixed *chunks* of ``batch`` consecutive inputs, and a chunk with any output missing is
  read and run whole again, so every output is computed in the batch an uninterrupted run computes it
  in: a killed and re-run job is bit-identical to one that was not killed.
* **Bad inputs do not stop the job.** An unreadable or short video, a latent file of the wrong
  channels, … is an :class:`ItemError`: recorded in the manifest with its reason and skipped.
* **A manifest** (JSONL in OUT_DIR: ``manifest.jsonl``; ``manifest.<i>-of-<n>.jsonl`` per process
  of a multi-process job): one line per input, ``done`` (``reused`` when a re-run found it complete)
  or ``failed`` with the reason; appended as the job goes, compacted to the last line per input at
  the end.
* **Host work beside device work.** A bounded prefetching reader (:class:`Prefetcher`: ``ahead``
  chunks read on a thread pool while the device runs the current one) and background writers; the
  summary says how long the device waited for input (``input_wait_s``) and for the writers.
* **Many hosts.** Under JAX's multi-controller runtime each process takes chunks ``i, i + n, …``
  (``i`` its ``jax.process_index()``, ``n`` the process count) and runs them on its own devices: no
  coordinator, no collective.

Videos are read with ffmpeg (imageio-ffmpeg's binary), streamed: ffmpeg picks the frame rate
(``fps`` filter), resizes the short side and centre-crops (``scale``/``crop``, bicubic), and stops
after the frames asked for; frames come as ``(F, H, W, 3)`` uint8 and are normalised on the device
as diffusers' ``VideoProcessor.preprocess_video`` does (``x / 255 * 2 - 1`` in float32).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".gif")
LIST_SUFFIXES = (".txt", ".jsonl")
LATENTS_KEY = "latents"
FORMAT = "torchax_vae.latents/1"  # the metadata "format" of an encode job's output
JOB_KEY = "torchax_vae_job"  # metadata name of the job key in every output (safetensors, MP4, PNG)

# ffmpeg (reading and writing) is started by subprocess's fork+exec, which runs no Python in the child
# before exec: JAX's warning about fork in a multithreaded process does not apply to it.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)


class JobInputError(ValueError):
  """Job arguments that cannot be used (nothing is run)."""


class ItemError(Exception):
  """One input that cannot be done (recorded in the manifest with this reason; the job goes on)."""


# --- inputs ---------------------------------------------------------------------------------------


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


# --- outputs: exactly once ------------------------------------------------------------------------


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


# --- reading ahead, writing behind ----------------------------------------------------------------


class Prefetcher:
  """Reads the items of ``ahead`` chunks beyond the current one on ``workers`` threads (ffmpeg runs
  in its own processes, so threads overlap), yielding ``(chunk, [value or ItemError, …])`` in order.
  Host memory is bounded by ``ahead + 1`` chunks; ``wait_s`` is the time the caller waited."""

  def __init__(self, all_chunks: list[list[Item]], read: Callable[[Item], Any], *, workers: int, ahead: int = 2):
    self.chunks, self.read, self.workers, self.ahead = all_chunks, read, max(1, workers), max(0, ahead)
    self.wait_s = 0.0

  def _read(self, item: Item) -> Any:
    try:
      return self.read(item)
    except ItemError as err:
      return err
    except Exception as err:  # an input's own failure must not stop the job
      return ItemError(f"{type(err).__name__}: {_first_line(err)}")

  def __iter__(self) -> Iterator[tuple[list[Item], list[Any]]]:
    pending: collections.deque = collections.deque()
    remaining = iter(self.chunks)
    with concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="job-reader") as pool:
      try:

        def fill() -> None:
          while len(pending) <= self.ahead:
            chunk = next(remaining, None)
            if chunk is None:
              return
            pending.append((chunk, [pool.submit(self._read, item) for item in chunk]))

        fill()
        while pending:
          chunk, futures = pending.popleft()
          fill()
          start = time.perf_counter()
          values = [future.result() for future in futures]
          self.wait_s += time.perf_counter() - start
          yield chunk, values
      finally:
        for _, futures in pending:
          for future in futures:
            future.cancel()


class Writers:
  """Background writes (``threads`` of them, at most ``bound`` queued): the device goes on while
  files are written. ``wait_s``: time the caller waited for a free slot."""

  def __init__(self, threads: int = 1, bound: int = 4):
    self._pool = concurrent.futures.ThreadPoolExecutor(max(1, threads), thread_name_prefix="job-writer")
    self._slots = threading.BoundedSemaphore(max(1, bound))
    self._futures: list[concurrent.futures.Future] = []
    self.wait_s = 0.0

  def submit(self, fn: Callable[[], None]) -> None:
    start = time.perf_counter()
    self._slots.acquire()
    self.wait_s += time.perf_counter() - start

    def run() -> None:
      try:
        fn()
      finally:
        self._slots.release()

    self._futures.append(self._pool.submit(run))

  def close(self) -> None:
    start = time.perf_counter()
    self._pool.shutdown(wait=True)
    self.wait_s += time.perf_counter() - start
    for future in self._futures:
      future.result()  # a writer's own error (already recorded per item) re-raised here only if unexpected


# --- the job loop ---------------------------------------------------------------------------------


@dataclasses.dataclass
class JobSummary:
  kind: str  # "encode" or "decode"
  items: int = 0  # this process's inputs
  done: int = 0  # made in this run
  reused: int = 0  # complete from an earlier run
  failed: int = 0
  frames: int = 0  # video frames encoded or decoded in this run
  seconds: float = 0.0  # wall time of the job loop (after the model is loaded)
  device_s: float = 0.0  # in device work: from handing a batch over to its result on the host
  input_wait_s: float = 0.0  # the device waiting for the reader
  output_wait_s: float = 0.0  # waiting for the writers (a full queue, and the last writes)
  manifest: str = ""
  failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  @property
  def device_busy(self) -> float:
    return self.device_s / self.seconds if self.seconds else 0.0

  def describe(self) -> str:
    rate = f"{self.done / self.seconds:.2f} items/s, {self.frames / self.seconds:.1f} frames/s" if self.seconds else ""
    return (
      f"{self.kind}: {self.items} items: {self.done} done, {self.reused} already done, {self.failed} failed; "
      f"{self.frames} frames in {self.seconds:.2f} s ({rate}; device busy {100 * self.device_busy:.0f}%, "
      f"waited {self.input_wait_s:.2f} s for input, {self.output_wait_s:.2f} s for writes) -> {self.manifest}"
    )

  def to_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "device_busy": self.device_busy}


@dataclasses.dataclass(frozen=True)
class _Plan:
  """What a job does per item: where it writes, what it reads, how a batch runs and what it writes."""

  kind: str
  settings: dict[str, Any]  # what changes its outputs beyond the runner and the checkpoint (in every job key)
  outputs: Callable[[Item, Any], list[Path]]  # the item's output paths (its read value may refine them)
  expected: Callable[[Item], list[Path] | None]  # the outputs an earlier run made, before reading the item
  read: Callable[[Item], Any]
  shape_of: Callable[[Any], tuple]  # items of equal shape run as one batch
  run: Callable[[list[Any]], list[Any]]  # read values -> per-item results on the host
  write: Callable[[Item, Any, Any, str, list[Path]], int]  # -> frames written


def _run_job(
  plan: _Plan,
  runner: Any,
  items: list[Item],
  out_dir: Path,
  *,
  model: dict[str, Any] | None,
  batch: int,
  process_index: int | None,
  process_count: int | None,
  readers: int | None,
  ahead: int,
  writers: int,
  progress: bool,
) -> JobSummary:
  """The job loop both jobs share (the arguments as :func:`encode_job` takes them)."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  key_settings = {
    "job": plan.kind, "model": model or {}, "path": type(runner).__module__.split(".")[0],
    "dtype": jnp.dtype(runner.compute_dtype).name, **plan.settings,
  }  # fmt: skip
  expected_outputs = plan.expected
  out_dir.mkdir(parents=True, exist_ok=True)
  summary = JobSummary(plan.kind)
  manifest = Manifest(out_dir, process_index, process_count)
  summary.manifest = str(manifest.path)
  mine = process_share(chunks(items, batch), process_index, process_count)
  summary.items = sum(map(len, mine))
  keys = {item.index: job_key(item.source, key_settings) for chunk in mine for item in chunk if item.source.is_file()}

  def complete(item: Item) -> bool:
    paths = expected_outputs(item)
    if not paths or item.index not in keys:
      return False
    key = keys[item.index]
    return manifest.vouches(item, key, paths) or all(stored_job_key(p) == key for p in paths)

  def reused(item: Item, paths: list[Path]) -> None:
    manifest.record(item, "done", _relative(paths[0], out_dir), reused=True, key=keys[item.index], files=_file_stats(paths))

  todo = []
  for chunk in mine:
    finished = [complete(item) for item in chunk]
    if all(finished):
      for item in chunk:
        reused(item, expected_outputs(item))
        summary.reused += 1
    else:
      todo.append((chunk, finished))
  bar = _bar(summary.items, plan.kind, progress)
  if bar is not None:
    bar.update(summary.reused)

  writer = Writers(writers, bound=2 * batch)
  lock = threading.Lock()

  def write(item: Item, value: Any, result: Any, paths: list[Path]) -> None:
    try:
      frames = plan.write(item, value, result, keys[item.index], paths)
    except Exception as err:
      fail(item, f"writing {paths[0]}: {type(err).__name__}: {_first_line(err)}")
      return
    manifest.record(item, "done", _relative(paths[0], out_dir), frames=frames, key=keys[item.index], files=_file_stats(paths))
    with lock:
      summary.done += 1
      summary.frames += frames
      if bar is not None:
        bar.update(1)

  def fail(item: Item, reason: str) -> None:
    entry = manifest.record(item, "failed", None, reason=reason)
    with lock:
      summary.failed += 1
      summary.failures.append(entry)
      if bar is not None:
        bar.update(1)

  finished_in = {chunk[0].index: finished for chunk, finished in todo}
  reader = Prefetcher([chunk for chunk, _ in todo], plan.read, workers=readers or _DEFAULT_THREADS, ahead=ahead)
  start = time.perf_counter()
  try:
    for chunk, values in reader:
      readable = []
      for item, value, done in zip(chunk, values, finished_in[chunk[0].index]):
        if item.index not in keys:  # listed, but not there (when the job started)
          fail(item, f"{item.source}: no such file")
        elif isinstance(value, ItemError):
          fail(item, str(value))
        else:
          readable.append((item, value, done))
      groups: dict[tuple, list] = {}
      for entry in readable:
        groups.setdefault(plan.shape_of(entry[1]), []).append(entry)
      for group in groups.values():
        begun = time.perf_counter()
        try:
          results = plan.run([value for _, value, _ in group])
        except ItemError as err:
          for item, _, _ in group:
            fail(item, str(err))
          continue
        summary.device_s += time.perf_counter() - begun
        for (item, value, done), result in zip(group, results):
          paths = plan.outputs(item, value)
          if done:  # complete from the earlier run: the same batch, so the same bits; not rewritten
            reused(item, paths)
            with lock:
              summary.reused += 1
              if bar is not None:
                bar.update(1)
            continue
          for path in paths:
            _clear_partials(path)
          writer.submit(lambda item=item, value=value, result=result, paths=paths: write(item, value, result, paths))
  finally:
    writer.close()
    summary.seconds = time.perf_counter() - start
    summary.input_wait_s, summary.output_wait_s = reader.wait_s, writer.wait_s
    manifest.close()
    if bar is not None:
      bar.close()
  return summary


_DEFAULT_THREADS = min(4, os.cpu_count() or 1)  # readers; the decode job's MP4 writers


def _relative(path: Path, out_dir: Path) -> Path:
  try:
    return path.relative_to(out_dir)
  except ValueError:
    return path


def _bar(total: int, kind: str, enabled: bool):
  if not enabled:
    return None
  from tqdm.auto import tqdm

  return tqdm(total=total, desc=kind, unit="item", file=sys.stderr, smoothing=0.1)


def _first_line(err: BaseException) -> str:
  text = str(err).strip()
  return text.splitlines()[0] if text else type(err).__name__


# --- encode ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EncodeSettings:
  size: tuple[int, int] | None = None  # (H, W): resize the short side to cover it, centre-crop
  frames: int | None = None  # frames per video (None: the most the model's rule allows)
  fps: float | None = None  # resample to this rate (None: consecutive frames of the source)
  sample_seed: int | None = None  # a keyed posterior sample instead of the mode


def check_encode_settings(adapter: Any, settings: EncodeSettings) -> None:
  """:class:`JobInputError` for a size or frame count the model cannot take, before anything runs."""
  s = adapter.spatial_compression
  if settings.size is not None:
    h, w = settings.size
    if h < 1 or w < 1 or h % s or w % s:
      raise JobInputError(f"--size {h},{w}: expected positive multiples of {s} ({adapter.class_name}'s spatial compression)")
  if settings.frames is not None:
    valid = adapter.encodable_num_frames(settings.frames)
    if settings.frames < 1 or valid != settings.frames:
      above = next(n for n in range(settings.frames + 1, settings.frames + 65) if adapter.encodable_num_frames(n) == n)
      nearest = f"the nearest are {valid} and {above}" if valid else f"the least is {above}"
      raise JobInputError(
        f"--frames {settings.frames}: {adapter.class_name} encodes 1 + k * (its time compression) frames with "
        f"none dropped; {nearest}"
      )
  if settings.fps is not None and not settings.fps > 0:
    raise JobInputError(f"--fps {settings.fps}: expected a positive frame rate")


def read_video(path: Path, settings: EncodeSettings, adapter: Any) -> tuple[np.ndarray, dict[str, Any]]:
  """``(F, H, W, 3)`` uint8 frames of ``path`` as ``settings`` ask (ffmpeg filters, streamed: ffmpeg
  stops after ``settings.frames``), and what was taken; :class:`ItemError` for what cannot be used."""
  import imageio_ffmpeg

  logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)  # "frame size differs from the source": asked for
  filters = []
  if settings.fps is not None:
    filters.append(f"fps={settings.fps:g}")
  if settings.size is not None:
    h, w = settings.size
    # Cover (H, W) keeping the aspect (the other side rounded to even), then cut the centre.
    filters.append(f"scale='if(gt(a,{w}/{h}),-2,{w})':'if(gt(a,{w}/{h}),{h},-2)':flags=bicubic")
    filters.append(f"crop={w}:{h}")
  params = (["-vf", ",".join(filters)] if filters else []) + (["-frames:v", str(settings.frames)] if settings.frames else [])
  try:
    reader = imageio_ffmpeg.read_frames(str(path), output_params=params or None)
    meta = next(reader)
  except (OSError, RuntimeError, StopIteration) as err:
    raise ItemError(f"{path}: not a readable video ({_ffmpeg_reason(err)})") from None
  width, height = meta["size"]
  frames: list[np.ndarray] = []
  try:
    for buffer in reader:
      frames.append(np.frombuffer(buffer, np.uint8).reshape(height, width, 3))
      if settings.frames is not None and len(frames) == settings.frames:
        break
  except RuntimeError as err:
    raise ItemError(f"{path}: the video breaks off after {len(frames)} frames ({_ffmpeg_reason(err)})") from None
  finally:
    reader.close()
  wanted = settings.frames or adapter.encodable_num_frames(len(frames))
  if len(frames) < max(wanted, 1):
    raise ItemError(
      f"{path}: too few frames: {len(frames)}"
      + (f" at {settings.fps:g} fps" if settings.fps else "")
      + f", {wanted or 1} needed"
    )
  s = adapter.spatial_compression
  if height % s or width % s:
    raise ItemError(f"{path}: frames of {width}x{height} (W x H) are not multiples of {s}; pass --size H,W to resize and crop")
  info = {
    "source_width": meta["source_size"][0],
    "source_height": meta["source_size"][1],
    "source_fps": meta.get("fps"),
    "fps": settings.fps or meta.get("fps"),
  }
  return np.stack(frames[:wanted]), info


def _ffmpeg_reason(err: BaseException) -> str:
  """The telling line of an imageio-ffmpeg error (ffmpeg's own message, not the wrapper's)."""
  lines = [line.strip() for line in str(err).splitlines() if line.strip() and not line.startswith("===")]
  for line in reversed(lines):
    if "Invalid data" in line or "moov atom" in line or "not found" in line or "No such file" in line:
      return line
  return lines[-1] if lines else type(err).__name__


@jax.jit
def _frames_to_video(frames: jax.Array) -> jax.Array:
  """``(B, F, H, W, 3)`` uint8 -> ``(B, 3, F, H, W)`` float32 in ``[-1, 1]``: diffusers'
  ``VideoProcessor.preprocess_video`` (``x / 255``, then ``2 * x - 1``, in float32)."""
  x = frames.astype(jnp.float32) / 255.0
  return jnp.transpose(2.0 * x - 1.0, (0, 4, 1, 2, 3))


def sample_key(seed: int, item: Item) -> jax.Array:
  """The PRNG key of one item's posterior sample: ``fold_in(key(seed), crc32(name))``, so an item's
  sample depends on the seed and its output name, not on its batch, process or run."""
  return jax.random.fold_in(jax.random.key(seed), zlib.crc32(item.name.encode()) & 0x7FFFFFFF)


def model_identity(directory: Path) -> dict[str, Any]:
  """The checkpoint as job keys see it: its config.json (without diffusers' bookkeeping) and, per
  weights file, name, size and a digest of its first and last MiB (a re-trained VAE of the same config
  differs there; hashing every byte would cost a second per GB at each start)."""
  from .core.checkpoint import read_raw_config, weight_files

  config = {k: v for k, v in read_raw_config(directory).items() if k not in ("_diffusers_version", "_name_or_path")}
  weights = {}
  for file in weight_files(directory):
    size = file.stat().st_size
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
      digest.update(handle.read(1 << 20))
      handle.seek(max(0, size - (1 << 20)))
      digest.update(handle.read(1 << 20))
    weights[file.name] = [size, digest.hexdigest()]
  config_sha256 = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
  return {"class": config.get("_class_name"), "config_sha256": config_sha256, "weights": weights}


def encode_job(
  runner: Any,
  items: list[Item],
  out_dir: str | os.PathLike,
  settings: EncodeSettings = EncodeSettings(),
  *,
  model: dict[str, Any] | None = None,
  batch: int = 1,
  process_index: int | None = None,
  process_count: int | None = None,
  readers: int | None = None,
  ahead: int = 2,
  writers: int = 1,
  progress: bool = False,
) -> JobSummary:
  """Encodes every video of ``items`` (this process's share) to ``OUT_DIR/<name>.safetensors``.

  Each output holds ``latents`` ``(1, …)`` in the model's pipeline layout and scaling
  (:meth:`~torchax_vae.core.models.base.VideoVAE.latents_from_encode`: CogVideoX ``(1, T, C, H, W)``
  ``* scaling_factor``; Wan ``(1, C, T, H, W)`` normalised), in the runner's dtype, and metadata (all
  strings): the source, its size and mtime, the frames, size and fps taken, the model's class and
  config hash, dtype, layout, and the sample seed (``posterior``: ``mode`` or ``sample``). Decoding it
  with ``python -m torchax_vae decode`` (or :func:`~torchax_vae.pipeline.decode_latents`) gives the
  video back. ``model``: :func:`model_identity` of the checkpoint (part of every job key).
  """
  from . import pipeline

  adapter = runner.adapter
  check_encode_settings(adapter, settings)
  out_dir = Path(out_dir)
  dtype = jnp.dtype(runner.compute_dtype).name
  buffers = pipeline.buffer_arguments(runner)  # LTX's latent statistics (weights)

  def run(values: list[tuple[np.ndarray, dict, Item]]) -> list[np.ndarray]:
    frames = np.stack([frames for frames, _, _ in values])  # (B, F, H, W, 3) uint8: a quarter of float32's bytes
    video = _frames_to_video(jnp.asarray(frames)).astype(runner.compute_dtype)
    try:
      moments = runner.encode_moments(video, check_finite=False)  # uint8 frames are finite
    except ValueError as err:
      raise ItemError(f"encode: {_first_line(err)}") from None
    if settings.sample_seed is None:
      latents = adapter.posterior(moments, None)
    else:
      keys = jnp.stack([sample_key(settings.sample_seed, item) for _, _, item in values])
      latents = jax.vmap(lambda m, k: adapter.posterior(m[None], k)[0])(moments, keys)
    return list(np.asarray(adapter.latents_from_encode(latents, **buffers)))  # blocks until the device is done

  def write(item: Item, value: Any, latents: np.ndarray, key: str, paths: list[Path]) -> int:
    frames, info, _ = value
    stat = item.source.stat()
    metadata = {
      "format": FORMAT, JOB_KEY: key, "source": str(item.source), "source_size": stat.st_size,
      "source_mtime_ns": stat.st_mtime_ns, "frames": frames.shape[0], "height": frames.shape[1],
      "width": frames.shape[2], "first_frame": 0, **info, "model_class": adapter.class_name,
      "model_config_sha256": (model or {}).get("config_sha256", ""), "dtype": dtype,
      "layout": adapter.pipeline_layout, "scaling": f"pipeline latents (its decode: {adapter.describe_latent_scaling()})",
      "posterior": "mode" if settings.sample_seed is None else "sample",
      "sample_seed": "" if settings.sample_seed is None else settings.sample_seed,
    }  # fmt: skip
    _write_safetensors(paths[0], latents[None], {k: str(v) for k, v in metadata.items()})
    return int(frames.shape[0])

  def output(item: Item, _value: Any = None) -> list[Path]:
    return [out_dir / f"{item.name}.safetensors"]

  plan = _Plan(
    "encode",
    settings=dataclasses.asdict(settings),
    outputs=output,
    expected=output,
    read=lambda item: (*read_video(item.source, settings, adapter), item),
    shape_of=lambda value: value[0].shape,
    run=run,
    write=write,
  )
  return _run_job(
    plan, runner, items, out_dir, model=model, batch=batch, process_index=process_index, process_count=process_count,
    readers=readers, ahead=ahead, writers=writers, progress=progress,
  )  # fmt: skip


def _write_safetensors(path: Path, array: np.ndarray, metadata: dict[str, str]) -> None:
  """One tensor as safetensors, byte for byte the same for the same values: the header's keys sorted
  (safetensors' own writer orders metadata by a per-process hash, so a re-run's file would differ)."""
  array = np.ascontiguousarray(array)
  dtype = _SAFETENSORS_DTYPES[array.dtype.name]
  header = {
    "__metadata__": dict(sorted(metadata.items())),
    LATENTS_KEY: {"dtype": dtype, "shape": list(array.shape), "data_offsets": [0, array.nbytes]},
  }
  encoded = json.dumps(header, separators=(",", ":")).encode()
  encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it

  def write(tmp: Path) -> None:
    with open(tmp, "wb") as handle:
      handle.write(len(encoded).to_bytes(8, "little"))
      handle.write(encoded)
      handle.write(memoryview(array.reshape(-1).view(np.uint8)))

  write_atomically(path, write)


_SAFETENSORS_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "float64": "F64"}


# --- decode ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  layout: str | None = None  # None: the file's own (an encode job's metadata), else the model's pipeline layout
  key: str | None = None  # tensor name in files holding several
  scaling_factor: float | None = None
  raw: bool = False  # classes without an adapter: latents as the VAE takes them
  fps: float = 8
  quality: float = 5
  # LTX: packed (B, S, C) files unpack to this video's (frames, height, width); a timestep-conditioned
  # decoder's decode_timestep / decode_noise_scale (LTXPipeline's arguments), its noise drawn per
  # sample from fold_in(fold_in(key(noise_seed), crc32(name)), i): independent of batching and runs.
  video_shape: tuple[int, int, int] | None = None
  decode_timestep: float | None = None
  decode_noise_scale: float | None = None
  noise_seed: int = 0


def decode_noise_keys(seed: int, item: Item, count: int) -> list[jax.Array]:
  """The decode-noise keys of an item's ``count`` samples (:class:`DecodeSettings`)."""
  key = sample_key(seed, item)
  return [jax.random.fold_in(key, i) for i in range(count)]


def decode_job(
  runner: Any,
  items: list[Item],
  out_dir: str | os.PathLike,
  settings: DecodeSettings = DecodeSettings(),
  *,
  model: dict[str, Any] | None = None,
  batch: int = 1,
  process_index: int | None = None,
  process_count: int | None = None,
  readers: int | None = None,
  ahead: int = 2,
  writers: int | None = None,
  progress: bool = False,
) -> JobSummary:
  """Decodes every latent file of ``items`` (this process's share) to ``OUT_DIR/<name>.mp4`` (an image
  VAE's 4-D latents: ``.png``), as :func:`~torchax_vae.pipeline.decode_latents` and the ``decode``
  command do (the pipeline's layout and scaling; an encode job's output in the layout its metadata
  names). A file holding a batch of B makes ``<name>-0.mp4`` … ``<name>-<B-1>.mp4``. Files of one shape
  are decoded together, up to ``batch`` files a call (the chunk)."""
  from . import pipeline

  out_dir = Path(out_dir)
  adapter = getattr(runner, "adapter", None)

  timestep = adapter is not None and adapter.takes_decode_timestep

  def read(item: Item) -> tuple[np.ndarray, str, list | None]:
    try:
      latents = pipeline.load_latents(item.source, key=settings.key)
      if adapter is not None:  # LTX's packed tokens (the model says how; other models pass 5-D through)
        latents = np.asarray(adapter.unpack_latents(latents, settings.video_shape))
    except pipeline.LatentsError as err:
      raise ItemError(str(err)) from None
    except ValueError as err:
      raise ItemError(f"{item.source}: {err}") from None
    layout = settings.layout or _file_layout(item.source) or (adapter.pipeline_layout if adapter else pipeline.VAE_LAYOUT)
    try:
      if adapter is not None:
        pipeline.check_latents(latents, layout, adapter.latent_channels, adapter.class_name)
      else:
        pipeline.check_generic_latents(latents, runner.class_name)
    except pipeline.LatentsError as err:
      raise ItemError(f"{item.source}: {err}") from None
    if not np.all(np.isfinite(latents.astype(np.float32))):
      raise ItemError(f"{item.source}: latents hold NaN or infinite values")
    return latents, layout, decode_noise_keys(settings.noise_seed, item, latents.shape[0]) if timestep else None

  def outputs(item: Item, value: tuple[np.ndarray, str] | None) -> list[Path]:
    suffix = ".png" if value is not None and value[0].ndim == 4 else ".mp4"
    count = 1 if value is None else value[0].shape[0]
    return pipeline.output_paths(out_dir / f"{item.name}{suffix}", count, suffix)

  def expected(item: Item) -> list[Path] | None:
    """The outputs an earlier run made (their count is the file's batch, read from its header)."""
    count = _latent_batch(item.source, settings.key)
    if count is None:
      return None
    for suffix in (".mp4", ".png"):
      paths = pipeline.output_paths(out_dir / f"{item.name}{suffix}", count, suffix)
      if paths[0].exists():
        return paths
    return None

  def run(values: list[tuple[np.ndarray, str, list | None]]) -> list[np.ndarray]:
    sizes = [latents.shape[0] for latents, _, _ in values]
    latents = np.concatenate([latents for latents, _, _ in values])
    layout = values[0][1]
    try:
      if adapter is not None:
        frames = pipeline.decode_latents(
          runner, latents, layout=layout, scaling_factor=settings.scaling_factor, check_finite=False, output_type="uint8",
          decode_timestep=settings.decode_timestep if timestep else None,
          decode_noise_scale=settings.decode_noise_scale if timestep else None,
          generator=[key for _, _, keys in values for key in keys] if timestep else None,
        )  # (B, F, H, W, 3) uint8  # fmt: skip
      else:
        frames = pipeline.generic_uint8_frames(
          runner, latents, raw=settings.raw, scaling_factor=settings.scaling_factor, check_finite=False
        )
    except (ValueError, TypeError) as err:
      raise ItemError(f"decode: {_first_line(err)}") from None
    bounds = np.cumsum([0, *sizes])
    return [frames[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

  def write(item: Item, value: Any, frames: np.ndarray, key: str, paths: list[Path]) -> int:
    for video, path in zip(frames, paths):
      if path.suffix == ".png":
        write_atomically(path, lambda tmp, video=video: _write_png(video[0], tmp, key))
      else:
        write_atomically(path, lambda tmp, video=video: _write_mp4(video, tmp, key, settings))
    return int(frames.shape[0] * frames.shape[1])

  plan = _Plan(
    "decode",
    settings=dataclasses.asdict(settings),
    outputs=outputs,
    expected=expected,
    read=read,
    shape_of=lambda value: (value[0].shape[1:], str(value[0].dtype), value[1]),
    run=run,
    write=write,
  )
  return _run_job(
    plan, runner, items, out_dir, model=model, batch=batch, process_index=process_index, process_count=process_count,
    readers=readers, ahead=ahead, writers=writers or _DEFAULT_THREADS,  # MP4 encoding is host work: as many as the cores
    progress=progress,
  )  # fmt: skip


def _file_layout(path: Path) -> str | None:
  """The layout an encode job's output names in its metadata (``None`` for any other file)."""
  if path.suffix.lower() != ".safetensors":
    return None
  try:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
      metadata = handle.metadata() or {}
  except Exception:
    return None
  return metadata.get("layout") if metadata.get("format") == FORMAT else None


def _latent_batch(path: Path, key: str | None) -> int | None:
  """The leading dim of a latent file's tensor from its header alone (``None`` if it cannot be read)."""
  from . import pipeline

  try:
    if path.suffix.lower() == ".safetensors":
      from safetensors import safe_open

      with safe_open(str(path), framework="numpy") as handle:
        name = pipeline._pick_key(list(handle.keys()), key, path)
        return int(handle.get_slice(name).get_shape()[0])
    if path.suffix.lower() == ".npy":
      return int(np.load(path, mmap_mode="r").shape[0])
    return int(pipeline.load_latents(path, key=key).shape[0])
  except Exception:
    return None


def _write_mp4(frames: np.ndarray, tmp: Path, key: str, settings: DecodeSettings) -> None:
  from .pipeline import write_mp4_file

  write_mp4_file(frames, tmp, fps=settings.fps, quality=settings.quality, metadata={"comment": key})


def _write_png(frame: np.ndarray, tmp: Path, key: str) -> None:
  from PIL import Image, PngImagePlugin

  info = PngImagePlugin.PngInfo()
  info.add_text(JOB_KEY, key)
  Image.fromarray(frame).save(tmp, format="PNG", pnginfo=info)
