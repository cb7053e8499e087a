"""JAX's persistent compilation cache, on by default for both paths.

Directory: ``cache_dir=`` argument, else ``$TORCHAX_VAE_CACHE_DIR``, else
``$XDG_CACHE_HOME/torchax_vae/xla`` (``~/.cache/torchax_vae/xla``). ``cache_dir=False`` (or the
variable set to ``off``) leaves JAX's cache configuration alone. A directory that cannot be written
gives a warning, and decoding goes on uncached.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import jax

ENV_VAR = "TORCHAX_VAE_CACHE_DIR"
_OFF = {"off", "0", "false", "none"}


def default_cache_dir() -> Path:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "torchax_vae" / "xla"


def resolve_cache_dir(cache_dir: str | os.PathLike | bool | None) -> Path | None:
  if cache_dir is False:
    return None
  if cache_dir is None or cache_dir is True:
    env = os.environ.get(ENV_VAR)
    if env is not None:
      return None if env.strip().lower() in _OFF else Path(env).expanduser()
    return default_cache_dir()
  return Path(cache_dir).expanduser()


def enable_compilation_cache(cache_dir: str | os.PathLike | bool | None = None) -> Path | None:
  """Points JAX's persistent cache at the directory; returns it, or ``None`` when off or unusable."""
  directory = resolve_cache_dir(cache_dir)
  if directory is None:
    return None
  try:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # owner-only: it holds executables (core.executables)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
      pass
  except OSError as err:
    warnings.warn(
      f"compilation cache dir {directory} is not writable ({err}); compiling without a persistent cache",
      stacklevel=3,
    )
    return None
  current = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", str(directory))
  # Cache every program: the decode steps are few and each is worth keeping. (Tuning options a newer
  # jax may rename: without them JAX's own thresholds apply.)
  for option, value in (("jax_persistent_cache_min_compile_time_secs", 0.0), ("jax_persistent_cache_min_entry_size_bytes", -1)):
    try:
      jax.config.update(option, value)
    except (AttributeError, KeyError, ValueError) as err:
      warnings.warn(f"jax {jax.__version__} has no option {option} ({err}); JAX's default applies", stacklevel=3)
  if current and current != str(directory):
    _reset_jax_cache()
  return directory


@contextlib.contextmanager
def bypassed() -> Iterator[None]:
  """Compiles inside neither read nor write JAX's persistent cache. For a compile-only target
  (core.target): its client cannot load a cached executable, so an entry written would only be
  refused on the next run, with a warning, and compiled again."""
  enabled = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  _reset_jax_cache()  # JAX decides once per process whether the cache is used: ask it again
  try:
    yield
  finally:
    jax.config.update("jax_enable_compilation_cache", enabled)
    _reset_jax_cache()


def executable_dir(cache_dir: Path | None) -> Path | None:
  """Where serialized step executables live: beside JAX's cache entries (``None`` when caching is off)."""
  return None if cache_dir is None else cache_dir / "executables"


def _reset_jax_cache() -> None:
  # JAX opens its cache once per process; a new directory needs it reopened.
  try:
    from jax._src import compilation_cache

    compilation_cache.reset_cache()
  except (ImportError, AttributeError):  # private API; without it the first directory stays in use
    warnings.warn("could not switch JAX's compilation cache directory in this process", stacklevel=4)
