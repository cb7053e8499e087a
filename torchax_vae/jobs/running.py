"""The job loop both jobs share (:func:`_run_job`): skip what an earlier run finished, read ahead on
threads, run batches of one shape on the device, write behind, record every outcome; and its summary."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from .commit import _clear_partials, job_key, stored_job_key
from .inputs import Item, ItemError, chunks, process_share
from .manifest import Manifest, _file_stats

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
