"""Warm start from serialized executables: round trip from the test process to a fresh one, and every fallback."""

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
from helpers import PATHS, loaders

import torchax_vae

# A fresh process runs the given decodes in order, each with a runner of its own (its own
# ``programs.sources`` and trace counts), and reports each one's sources, traces and store warnings.
SCRIPT = """
import json, sys, warnings
import numpy as np
import {module}
warnings.simplefilter("always")
reports = []
for step in json.loads(sys.argv[1]):
  with warnings.catch_warnings(record=True) as caught:
    vae = {module}.load(step["model"], cache_dir=step["cache"], dtype=step["dtype"])
    out = vae.decode(np.random.default_rng(0).standard_normal((1, 4, step["frames"], 4, 6), dtype=np.float32))
  np.save(step["out"], np.asarray(out, dtype=np.float32))
  reports.append({{"sources": vae.programs.sources, "traces": dict(vae.trace_counts),
                  "warnings": [str(w.message) for w in caught if "executable" in str(w.message)]}})
print(json.dumps(reports))
"""


def _decode_here(path, model, cache, *, dtype="float32", frames=3):
  """One decode in this process with a runner of its own: (sources, traces, output, new store entries)."""
  before = set((cache / "executables").glob("*.exe"))
  vae = loaders()[path](model, cache_dir=cache, dtype=dtype)
  z = np.random.default_rng(0).standard_normal((1, 4, frames, 4, 6), dtype=np.float32)
  out = np.asarray(vae.decode(z), np.float32)
  return vae.programs.sources, dict(vae.trace_counts), out, set((cache / "executables").glob("*.exe")) - before


def _run_fresh(path, steps, cache, tmp_path):
  """``steps`` ((name, model, dtype, frames)) in one fresh process: {name: (report, output)}."""
  module = "torchax_vae" if path == "torchax" else "native_flax"
  spec = [
    dict(model=str(m), cache=str(cache), dtype=d, frames=f, out=str(tmp_path / f"{n}.npy")) for n, m, d, f in steps
  ]
  result = subprocess.run(
    [sys.executable, "-c", SCRIPT.format(module=module), json.dumps(spec)], capture_output=True, text=True, check=False
  )
  assert result.returncode == 0, result.stderr[-3000:]
  reports = json.loads(result.stdout.strip().splitlines()[-1])
  return {n: (report, np.load(tmp_path / f"{n}.npy")) for (n, *_), report in zip(steps, reports)}


COMPILED = {"compiled": 1, "jax_cache": 0, "deserialized": 0}
FROM_JAX_CACHE = {"compiled": 0, "jax_cache": 1, "deserialized": 0}


@pytest.mark.parametrize("path", PATHS)
def test_round_trip_and_fallbacks(path, tiny_dir, tiny_wan_dirs, tmp_path):
  """This process compiles and stores; one fresh process then loads, and meets every fallback.

  On torchax, tiny Wan's two programs (first, steady) go in the same store first, and a CogVideoX
  model of the same latent shape gets keys of its own."""
  cache = tmp_path / "cache"
  wan = path == "torchax"
  if wan:
    sources, traces, wan_expected, wan_entries = _decode_here(path, tiny_wan_dirs["2.1"], cache)
    assert sources == {"compiled": 2, "jax_cache": 0, "deserialized": 0}
    assert traces == {"decode_first": 1, "decode_steady": 1} and len(wan_entries) == 2
  sources, traces, expected, (entry,) = _decode_here(path, tiny_dir, cache)
  assert sources == COMPILED and traces == {"decode_first": 1}  # not the Wan entries
  # Other inputs or dtype: other keys, compiled (and stored) anew.
  sources, _, other_expected, (other,) = _decode_here(path, tiny_dir, cache, frames=2)
  assert sources == COMPILED
  sources, _, bf16_expected, (bf16,) = _decode_here(path, tiny_dir, cache, dtype="bfloat16")
  assert sources == COMPILED
  assert len(list((cache / "executables").glob("*.exe"))) == 3 + 2 * wan

  # Planted before the fresh process starts: an entry that does not fit its key (another program's
  # file under the frames=2 program's name) and a corrupt one (the bfloat16 program's).
  other.write_bytes(bf16.read_bytes())
  bf16.write_bytes(b"not an executable")
  steps = [("warm", tiny_dir, "float32", 3)] + [("wan", tiny_wan_dirs["2.1"], "float32", 3)] * wan + [
    ("mismatched", tiny_dir, "float32", 2), ("again", tiny_dir, "float32", 2), ("corrupt", tiny_dir, "bfloat16", 3),
  ]  # fmt: skip
  fresh = _run_fresh(path, steps, cache, tmp_path)

  # A fresh process loads the executable: no tracing, no compiling, the same result.
  warm, out = fresh["warm"]
  assert warm["sources"] == {"compiled": 0, "jax_cache": 0, "deserialized": 1} and warm["traces"] == {}
  np.testing.assert_array_equal(out, expected)
  if wan:
    warm, out = fresh["wan"]
    assert warm["sources"] == {"compiled": 0, "jax_cache": 0, "deserialized": 2} and warm["traces"] == {}
    np.testing.assert_array_equal(out, wan_expected)

  # The entry that does not fit its key is refused and removed; the program comes from JAX's cache.
  mismatched, out = fresh["mismatched"]
  assert mismatched["sources"] == FROM_JAX_CACHE
  assert any("built for other inputs" in w for w in mismatched["warnings"])
  np.testing.assert_array_equal(out, other_expected)

  # A program fetched from JAX's cache is not stored: re-serialized, an XLA:CPU executable loses its
  # kernels ("Function slice_bitcast_fusion.N not found" at the next process's first run). The next
  # runner finds no entry (had one been stored, it would have been deserialized) and fetches it again.
  again, out = fresh["again"]
  assert again["sources"] == FROM_JAX_CACHE and again["warnings"] == []
  np.testing.assert_array_equal(out, other_expected)
  assert not other.exists()

  # A corrupt entry: a warning, removed, then the program from JAX's cache.
  corrupt, out = fresh["corrupt"]
  assert corrupt["sources"] == FROM_JAX_CACHE
  assert any("could not be used" in w for w in corrupt["warnings"])
  assert not bf16.exists()
  np.testing.assert_array_equal(out, bf16_expected)
  assert entry.exists()


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
