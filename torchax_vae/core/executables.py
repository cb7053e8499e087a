"""Compiled step programs: built once per input signature, kept in memory and (optionally) on disk.

A hit in JAX's persistent compilation cache still pays Python tracing and lowering (seconds for
torchax, which runs the whole PyTorch module on tracers). A serialized executable skips both: a warm
start deserializes it directly. The store is keyed by everything the program depends on — the
backend's fingerprint (its package versions and source), model config, dtype, program label, the
abstract signature of the inputs (shapes, dtypes, shardings, devices), jax/jaxlib version and the
backend's platform — and any failure to use a stored executable falls back to compiling.

Only fresh compiles are stored. On XLA:CPU (jaxlib 0.10.2) an executable that JAX itself loaded from
its persistent cache serializes without its kernels: stored and loaded again, it fails at its first
run with ``NOT_FOUND: Function slice_bitcast_fusion.N not found``. So a program that came from a
persistent-cache hit is used but not stored (on every backend: only XLA:CPU could be checked here).
The price: while JAX's cache holds a program the store lacks (after a key change, e.g. an upgrade of
this package, or a removed entry), each start traces, lowers and fetches it (0.67–0.92 s at the
default benchmark shape, against 0.29–0.42 s deserializing): JAX has no public way to compile a
program afresh while its persistent cache is in use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import stat
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jaxlib

from . import compile_cache
from . import target as target_lib

# 2: entries are only written from fresh compiles (format 1 could hold re-serialized cache hits).
FORMAT_VERSION = 2


def source_digest(*sources) -> str:
  """Hash of the source files of ``sources`` (modules, or file paths for code that must not be
  imported to be hashed): a stored program is stale once its code changes."""
  digest = hashlib.sha256()
  for source in sources:
    digest.update(Path(getattr(source, "__file__", source)).read_bytes())
  return digest.hexdigest()[:16]


def signature(args: tuple) -> tuple:
  """Abstract signature of a call: tree structure, and shape/dtype/sharding/devices of each leaf."""
  leaves, tree = jax.tree.flatten(args)
  described = []
  for leaf in leaves:
    sharding = getattr(leaf, "sharding", None)
    devices = tuple(sorted(d.id for d in sharding.device_set)) if sharding is not None else ()
    described.append((tuple(leaf.shape), str(leaf.dtype), repr(sharding), devices))
  return (str(tree), tuple(described))


_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_hits = threading.local()  # per thread: compiles run on the calling thread, which records the event


def _count_hit(event: str, **_) -> None:
  if event == _HIT_EVENT:
    _hits.count = getattr(_hits, "count", 0) + 1


# Registered once: adding and removing a listener per compile would race with other threads'
# record_event loops over the same global list (a skipped listener would store a cache hit).
jax.monitoring.register_event_listener(_count_hit)


def persistent_cache_hits() -> int:
  """JAX persistent-cache hits recorded on this thread so far (compare before and after a compile)."""
  return getattr(_hits, "count", 0)


def _serializer():
  """``jax.experimental.serialize_executable``, or ``None`` (with one warning) where this jax has none:
  an experimental API a newer jax may move. Without it the store is not used and programs compile."""
  global _SERIALIZER_WARNED
  try:
    from jax.experimental import serialize_executable
  except ImportError as err:
    if not _SERIALIZER_WARNED:
      _SERIALIZER_WARNED = True
      warnings.warn(
        f"jax {jax.__version__} has no jax.experimental.serialize_executable ({err}); stored executables are "
        "neither read nor written (programs compile, and JAX's persistent cache still applies)",
        stacklevel=5,
      )
    return None
  return serialize_executable


_SERIALIZER_WARNED = False


def untrusted(path: Path) -> str | None:
  """Why ``path`` (a store directory or entry) must not be unpickled, or ``None``.

  Loading an entry unpickles it, which can run any code: only what this user (or root) owns, and
  what nobody else can write or swap, is loaded: ``path`` and its directory owned by this user or
  root and not writable by group or others (a sticky directory such as ``/tmp`` may be). Platforms
  without POSIX owners (Windows) are not checked. A path that cannot be read is untrusted.
  """
  if not hasattr(os, "getuid"):
    return None
  owners = {os.getuid(), 0}
  for item, role in ((path, "it"), (path.parent, "its directory")):
    try:
      info = item.stat()
    except OSError as err:
      return f"{item} cannot be checked ({err.strerror or err})"
    if info.st_uid not in owners:
      return f"{item} is owned by uid {info.st_uid}, not by this user (uid {os.getuid()}) or root"
    others_write = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if others_write and not (role == "its directory" and info.st_mode & stat.S_ISVTX):
      who = " and ".join(n for n, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if others_write & bit)
      return f"{item} is writable by {who} (mode {stat.S_IMODE(info.st_mode):o})"
  return None


def _tighten(directory: Path) -> None:
  """A store directory of this user's that group or others may write (made by an older version, or
  under umask 002) loses that write; its entries are still checked one by one."""
  with contextlib.suppress(OSError, AttributeError):
    info = directory.stat()
    if info.st_uid == os.getuid() and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
      directory.chmod(stat.S_IMODE(info.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))


class ExecutableStore:
  """A directory of serialized executables (``None`` directory: memory only).

  Created owner-only (``0700``, entries ``0600``). A store someone else could have written (see
  :func:`untrusted`) is neither read nor written: one warning, and programs compile.
  """

  def __init__(self, directory: str | os.PathLike | None):
    self.directory = Path(directory) if directory is not None else None
    self._refused = False  # warned about an untrusted store already

  @property
  def refused(self) -> bool:
    """Whether this store was found untrusted (and so neither read nor written) at some point."""
    return self._refused

  def _trusted(self, *paths: Path) -> bool:
    """Whether ``paths`` (the store's directory, then an entry) may be used; warns once per store."""
    _tighten(paths[0])
    for path in paths:
      reason = untrusted(path)
      if reason is not None:
        if not self._refused:
          self._refused = True
          message = f"stored executables in {self.directory} not used: {reason}; compiling instead"
          warnings.warn(message, stacklevel=5)
        return False
    return True

  def _path(self, key: str) -> Path:
    assert self.directory is not None
    return self.directory / f"{key}.exe"

  def load(self, key: str, in_tree, sig: tuple, devices: list) -> Callable | None:
    if self.directory is None:
      return None
    path = self._path(key)
    if not path.is_file():
      return None
    serialize_executable = _serializer()
    if serialize_executable is None or not self._trusted(self.directory, path):
      return None
    try:
      with path.open("rb") as handle:
        payload = pickle.load(handle)
      if payload.get("format") != FORMAT_VERSION:
        self._discard(path)  # written by another version of this store: compile and replace it
        return None
      if payload.get("signature") != repr(sig):
        warnings.warn(f"stored executable {path.name} was built for other inputs; compiling", stacklevel=4)
        self._discard(path)
        return None
      # Without execution_devices the program would be loaded for every visible device, and a
      # one-device (or smaller-mesh) program then refuses its inputs.
      return serialize_executable.deserialize_and_load(
        payload["executable"], in_tree, payload["out_tree"], execution_devices=devices
      )
    except Exception as err:  # noqa: BLE001 — any unusable entry means: compile instead
      message = f"stored executable {path.name} could not be used ({type(err).__name__}: {err}); compiling"
      warnings.warn(message, stacklevel=4)
      self._discard(path)
      return None

  @staticmethod
  def _discard(path: Path) -> None:
    # An unusable entry is removed, so that it warns once, and a later fresh compile can take its place.
    with contextlib.suppress(OSError):
      path.unlink()

  def load_manifest(self, key: str) -> dict | None:
    """The JSON manifest stored under ``key`` (what a backend needs to know of its programs' inputs
    without building its model), or ``None``: absent, untrusted, or unreadable (then removed)."""
    if self.directory is None:
      return None
    path = self.directory / f"{key}.json"
    if not path.is_file() or not self._trusted(self.directory, path):
      return None
    try:
      manifest = json.loads(path.read_text())
      if manifest.get("format") != FORMAT_VERSION:
        raise ValueError(f"format {manifest.get('format')!r}")
      return manifest
    except (OSError, ValueError, AttributeError) as err:
      warnings.warn(f"stored manifest {path.name} could not be used ({err}); rebuilding it", stacklevel=3)
      self._discard(path)
      return None

  def save_manifest(self, key: str, manifest: dict) -> None:
    """Stores ``manifest`` (JSON) under ``key``, whole or not at all, as :meth:`save` stores a program."""
    if self.directory is None:
      return
    try:
      self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
      if not self._trusted(self.directory):
        return
      fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
      with os.fdopen(fd, "w") as handle:
        json.dump({**manifest, "format": FORMAT_VERSION}, handle)
      os.replace(tmp, self.directory / f"{key}.json")
    except Exception as err:  # noqa: BLE001 — like an executable: not storing it only costs a later build
      warnings.warn(f"could not store a manifest in {self.directory}: {type(err).__name__}: {err}", stacklevel=3)

  def save(self, key: str, compiled, sig: tuple) -> None:
    if self.directory is None:
      return
    serialize_executable = _serializer()
    if serialize_executable is None:
      return
    try:
      self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
      if not self._trusted(self.directory):
        return  # an entry written there could be replaced before it is read
      executable, _, out_tree = serialize_executable.serialize(compiled)
      payload = {"format": FORMAT_VERSION, "signature": repr(sig), "executable": executable, "out_tree": out_tree}
      # Written whole under a temporary name, then renamed: a reader never sees half a file.
      fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
      with os.fdopen(fd, "wb") as handle:
        pickle.dump(payload, handle)
      os.replace(tmp, self._path(key))
    except Exception as err:  # noqa: BLE001 — a store that cannot be written only costs a later compile
      message = f"could not store a compiled executable in {self.directory}: {type(err).__name__}: {err}"
      warnings.warn(message, stacklevel=4)


class Programs:
  """The compiled programs of one runner: memory first, then the store, then lower + compile.

  ``timings`` accumulates seconds per phase (``trace_lower``, ``compile``, ``deserialize``) and
  ``sources`` counts where each program came from: ``compiled`` (a fresh XLA compile, stored),
  ``jax_cache`` (traced, lowered and fetched from JAX's persistent cache, not stored: see the module
  docstring) or ``deserialized`` (from the store).
  """

  def __init__(self, fingerprint: dict[str, Any], store: ExecutableStore, devices: list, target: Any = None):
    # What the programs are compiled for: the host's devices, or a compile-only TPU topology
    # (core.target), whose programs are keyed as its own (a TPU host of that topology has the same).
    self.platform = target.platform if target is not None else target_lib.device_platform(devices[0])
    self.target = target
    self.fingerprint = json.dumps(
      dict(
        fingerprint,
        jax=jax.__version__,
        jaxlib=jaxlib.__version__,
        platform=self.platform,
        device_kind=devices[0].device_kind,
        device_count=len(target.devices) if target is not None else jax.device_count(),
        process_count=target.hosts if target is not None else jax.process_count(),
        devices=[d.id for d in devices],
      ),
      sort_keys=True,
      default=str,
    )
    self.store = store
    self.devices = devices  # the programs' device assignment (mesh order)
    self._compiled: dict[tuple, Callable] = {}
    self.timings = {"trace_lower": 0.0, "compile": 0.0, "deserialize": 0.0}
    self.sources = {"compiled": 0, "jax_cache": 0, "deserialized": 0}

  def key(self, label: str, sig: tuple) -> str:
    return hashlib.sha256(f"{self.fingerprint}|{label}|{sig}".encode()).hexdigest()[:32]

  def get(self, label: str, jitted, args: tuple) -> Callable:
    sig = signature(args)
    compiled = self._compiled.get((label, sig))
    if compiled is None:
      compiled = self._obtain(label, jitted, args, sig)
      self._compiled[(label, sig)] = compiled
    return compiled

  def _obtain(self, label: str, jitted, args: tuple, sig: tuple) -> Callable:
    key = self.key(label, sig)
    start = time.perf_counter()
    # A compile-only target's client cannot load an executable (JAX refuses "DeserializeLoadedExecutable"):
    # its programs are stored for a host of that topology, never read back here.
    compiled = None if self.target is not None else self.store.load(key, jax.tree.structure((args, {})), sig, self.devices)
    if compiled is not None:
      self.timings["deserialize"] += time.perf_counter() - start
      self.sources["deserialized"] += 1
      return compiled
    start = time.perf_counter()
    with target_lib.compiling_for(self.platform):  # per-platform choices made while tracing follow the devices
      lowered = jitted.lower(*args)
    self.timings["trace_lower"] += time.perf_counter() - start
    start = time.perf_counter()
    hits_before = persistent_cache_hits()
    with compile_cache.bypassed() if self.target is not None else contextlib.nullcontext():
      compiled = lowered.compile()
    self.timings["compile"] += time.perf_counter() - start
    if persistent_cache_hits() > hits_before:
      self.sources["jax_cache"] += 1
    else:
      self.sources["compiled"] += 1
      self.store.save(key, compiled, sig)
    return compiled
