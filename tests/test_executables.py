"""Warm start from serialized executables: round trip across fresh processes, and every fallback."""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import PATHS

import torchax_vae

SCRIPT = """
import json, sys, warnings
import numpy as np
import {module}
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
  vae = {module}.load(sys.argv[1], cache_dir=sys.argv[2], dtype=sys.argv[3])
  z = np.random.default_rng(0).standard_normal((1, 4, int(sys.argv[4]), 4, 6), dtype=np.float32)
  out = vae.decode(z)
np.save(sys.argv[5], np.asarray(out, dtype=np.float32))
print(json.dumps({{"sources": vae.programs.sources, "traces": dict(vae.trace_counts),
                  "warnings": [str(w.message) for w in caught if "executable" in str(w.message)]}}))
"""


def _run(path, tiny_dir, cache, tmp_path, *, dtype="float32", frames=3, name="out"):
  module = "torchax_vae" if path == "torchax" else "native_flax"
  out = tmp_path / f"{name}.npy"
  result = subprocess.run(
    [sys.executable, "-c", SCRIPT.format(module=module), str(tiny_dir), str(cache), dtype, str(frames), str(out)],
    capture_output=True, text=True, check=True,
  )
  return json.loads(result.stdout.strip().splitlines()[-1]), np.load(out)


COMPILED = {"compiled": 1, "jax_cache": 0, "deserialized": 0}
FROM_JAX_CACHE = {"compiled": 0, "jax_cache": 1, "deserialized": 0}


@pytest.mark.parametrize("path", PATHS)
def test_round_trip_and_fallbacks(path, tiny_dir, tmp_path):
  cache = tmp_path / "cache"
  cold, expected = _run(path, tiny_dir, cache, tmp_path, name="cold")
  assert cold["sources"] == COMPILED and cold["traces"] == {"decode_first": 1}
  stored = list((cache / "executables").glob("*.exe"))
  assert len(stored) == 1

  # A fresh process loads the executable: no tracing, no compiling, the same result.
  warm, out = _run(path, tiny_dir, cache, tmp_path, name="warm")
  assert warm["sources"] == {"compiled": 0, "jax_cache": 0, "deserialized": 1} and warm["traces"] == {}
  np.testing.assert_array_equal(out, expected)

  # Other inputs or dtype: other keys, compiled (and stored) anew.
  other, _ = _run(path, tiny_dir, cache, tmp_path, frames=2, name="other")
  assert other["sources"] == COMPILED
  bf16, _ = _run(path, tiny_dir, cache, tmp_path, dtype="bfloat16", name="bf16")
  assert bf16["sources"] == COMPILED
  assert len(list((cache / "executables").glob("*.exe"))) == 3

  # An entry that does not fit its key (here: another program's file under this name) is refused
  # and removed; the program comes from JAX's persistent cache.
  entries = sorted((cache / "executables").glob("*.exe"), key=lambda p: p.stat().st_mtime)
  entries[0].write_bytes(entries[-1].read_bytes())
  mismatched, out = _run(path, tiny_dir, cache, tmp_path, name="mismatched")
  assert mismatched["sources"] == FROM_JAX_CACHE
  assert any("built for other inputs" in w for w in mismatched["warnings"])
  np.testing.assert_array_equal(out, expected)

  # A program fetched from JAX's cache is not stored: re-serialized, an XLA:CPU executable loses its
  # kernels ("Function slice_bitcast_fusion.N not found" at the next process's first run).
  assert not entries[0].exists()
  again, out = _run(path, tiny_dir, cache, tmp_path, name="again")
  assert again["sources"] == FROM_JAX_CACHE and again["warnings"] == []
  np.testing.assert_array_equal(out, expected)

  # A corrupt entry: a warning, removed, then the program from JAX's cache.
  entries[0].write_bytes(b"not an executable")
  corrupt, out = _run(path, tiny_dir, cache, tmp_path, name="corrupt")
  assert corrupt["sources"] == FROM_JAX_CACHE
  assert any("could not be used" in w for w in corrupt["warnings"])
  assert not entries[0].exists()
  np.testing.assert_array_equal(out, expected)


def test_entries_of_another_format_are_discarded_silently(tmp_path):
  # The format is not part of the key: an entry an older version wrote under the same key is found,
  # refused without a warning and removed, so that this version's compile can take its place.
  from torchax_vae.core.executables import FORMAT_VERSION, ExecutableStore

  store = ExecutableStore(tmp_path)
  old = tmp_path / "k.exe"
  old.write_bytes(pickle.dumps({"format": FORMAT_VERSION - 1, "signature": "()", "executable": b"", "out_tree": None}))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert store.load("k", None, (), []) is None
  assert not old.exists()


def test_wan_round_trip_keyed_by_model(tiny_dir, tiny_wan_dirs, tmp_path):
  """Wan's two programs (first, steady) are stored and found again in a fresh process; a CogVideoX
  model of the same latent shape in the same cache gets keys of its own."""
  cache = tmp_path / "cache"
  cold, expected = _run("torchax", tiny_wan_dirs["2.1"], cache, tmp_path, name="cold")
  assert cold["sources"] == {"compiled": 2, "jax_cache": 0, "deserialized": 0}
  assert cold["traces"] == {"decode_first": 1, "decode_steady": 1}
  warm, out = _run("torchax", tiny_wan_dirs["2.1"], cache, tmp_path, name="warm")
  assert warm["sources"] == {"compiled": 0, "jax_cache": 0, "deserialized": 2} and warm["traces"] == {}
  np.testing.assert_array_equal(out, expected)
  cogvideox, _ = _run("torchax", tiny_dir, cache, tmp_path, name="cogvideox")
  assert cogvideox["sources"] == COMPILED  # not the Wan entries
  assert len(list((cache / "executables").glob("*.exe"))) == 3


class _CreatesAFile:
  """Unpickling this makes the directory ``path``: stands for any code a planted entry could run."""

  def __init__(self, path):
    self.path = str(path)

  def __reduce__(self):
    return (os.mkdir, (self.path,))


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners and modes")
def test_entries_someone_else_could_write_are_not_unpickled(tmp_path):
  from torchax_vae.core.executables import ExecutableStore

  ran = tmp_path / "code-ran"
  planted = pickle.dumps({"format": 0, "payload": _CreatesAFile(ran)})

  def attempt(store_dir: Path) -> list[str]:
    store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (store_dir / "k.exe").write_bytes(planted)
    os.chmod(store_dir / "k.exe", 0o600)
    store = ExecutableStore(store_dir)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      assert store.load("k", None, (), []) is None
      assert store.load("k", None, (), []) is None  # warned once per store
    return [str(w.message) for w in caught]

  # The store's directory (JAX's cache dir) writable by others or by the group.
  loose = tmp_path / "loose"
  loose.mkdir(mode=0o700)
  os.chmod(loose, 0o777)
  (message,) = attempt(loose / "executables")
  assert "is writable by group and others (mode 777)" in message and "compiling instead" in message
  os.chmod(loose, 0o775)
  (message,) = attempt(loose / "executables")
  assert "writable by group (mode 775)" in message
  # An entry owned by another user (root can arrange it; elsewhere chown is refused and this case skipped).
  owned = tmp_path / "owned"
  try:
    attempt(owned)  # trusted while it is ours: unpickled, refused as another format, removed
    assert ran.exists()
    ran.rmdir()
    (owned / "k.exe").write_bytes(planted)
    os.chown(owned / "k.exe", os.getuid() + 12345, -1)
  except PermissionError:
    pass
  else:
    store = ExecutableStore(owned)
    with pytest.warns(UserWarning, match=rf"owned by uid {os.getuid() + 12345}, not by this user"):
      assert store.load("k", None, (), []) is None
    assert (owned / "k.exe").exists()  # not ours to remove
  assert not ran.exists()  # no planted entry was unpickled
  # A group-writable store directory of this user's (umask 002, an older version) loses that write.
  os.chmod(loose, 0o755)
  os.chmod(loose / "executables", 0o770)
  assert attempt(loose / "executables") == [] and ran.exists()  # this user's own entry: used
  assert stat.S_IMODE((loose / "executables").stat().st_mode) == 0o750  # write taken from group and others
  ran.rmdir()
  # A sticky, world-writable parent (/tmp) is fine: nobody else can rename the store away.
  sticky = tmp_path / "sticky"
  sticky.mkdir(mode=0o700)
  os.chmod(sticky, 0o1777)
  assert attempt(sticky / "executables") == [] and ran.exists()


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners and modes")
def test_store_is_created_owner_only_and_not_written_where_others_can(tmp_path, tiny_dir):
  runner = torchax_vae.load(tiny_dir, cache_dir=tmp_path / "cache")
  runner.decode(np.zeros((1, 4, 2, 4, 4), np.float32))
  store = tmp_path / "cache" / "executables"
  assert stat.S_IMODE(store.stat().st_mode) == 0o700 and stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
  assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in store.glob("*.exe")) and any(store.glob("*.exe"))
  shared = tmp_path / "shared"
  shared.mkdir(mode=0o700)
  os.chmod(shared, 0o775)
  runner = torchax_vae.load(tiny_dir, cache_dir=shared)
  with pytest.warns(UserWarning, match="not used: .*writable by group"):
    runner.decode(np.zeros((1, 4, 2, 4, 6), np.float32))
  assert not any((shared / "executables").glob("*.exe"))
