"""Compiling for a TPU without one (``torchax_vae.core.target``, ``compare.bench --target``).

The TPU compiler (libtpu, which scripts/setup installs beside the environment) compiles the decode
programs of all three paths for a ``v5e:2x2`` topology on this CPU host: per-chip memory and the
compiler's estimate are reported, the per-platform choices are the TPU's (the ``3d`` convolution
form, not XLA:CPU's ``taps``), and the collectives are those of the same programs on a CPU mesh of
the same shape. TPU compiles are slow here (seconds for a tiny program, minutes at released sizes):
one tiny Wan decode step per path, compiled once, in the bench's own workers.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGET = "v5e:2x2"
MESH = "dp=2,tp=2"
LATENT = (2, 4, 1, 4, 8)  # one latent frame: Wan's first step only; batch 2 on dp, width 8 on tp


def test_a_plain_process_never_meets_the_tpu_compiler():
  # Installed beside the environment, libtpu is not importable: JAX starts its CPU backend as it
  # always did, with nothing printed, and torchax_vae's import says nothing about TPUs either.
  code = (
    "import importlib.util, jax, torchax_vae, native_flax; jax.devices(); "
    "print(importlib.util.find_spec('libtpu') is None, jax.default_backend())"
  )
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "TPU_LIBRARY_PATH")}
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True)
  assert done.stdout.split() == ["True", "cpu"]
  assert done.stderr == ""


def test_open_target_quietly_and_its_errors(capfd, monkeypatch):
  from torchax_vae.core import target as target_lib

  target = target_lib.open_target(TARGET)
  out, err = capfd.readouterr()
  assert (out, err) == ("", "")  # libtpu's TPU-host warnings do not reach the caller
  assert (target.device_kind, len(target.devices), target.hosts, target.platform) == ("TPU v5 lite", 4, 1, "tpu")
  assert target.chip.hbm_bytes == 16 * 10**9 and target.chip.peak_bf16_flops == 197e12
  assert target_lib.open_target("v6e:2x4").hosts == 1  # v6e-8: one host of 8 chips
  assert target_lib.open_target("v6e:4x4").hosts == 4  # larger slices: 4 chips per host
  with pytest.raises(target_lib.TargetError, match=r"'v7:2x2'.*expected a TPU topology GENERATION:AxB"):
    target_lib.open_target("v7:2x2")
  monkeypatch.setenv(target_lib.LIBRARY_ENV, "/nonexistent/libtpu.so")
  with pytest.raises(target_lib.TargetError, match="TPU compiler .libtpu. is not installed.*scripts/setup"):
    target_lib.open_target("v5e:2x4")


def test_a_target_runner_holds_shapes_and_refuses_to_run(tiny_wan_dirs):
  import jax
  import numpy as np

  import native_flax
  from torchax_vae.core.mesh import MeshError
  from torchax_vae.core.target import TargetError

  runner = native_flax.load(tiny_wan_dirs["2.1"], target=TARGET, mesh=MESH, cache_dir=False)
  leaves = jax.tree.leaves(runner.params)
  assert leaves and all(type(leaf).__name__ == "ShapeDtypeStruct" for leaf in leaves)
  assert {d.device_kind for d in runner.devices} == {"TPU v5 lite"}
  assert runner.steps.fingerprint["conv3d"] == "3d"  # the target's form, not this CPU host's taps
  assert runner.frames_per_step == runner.adapter.frames_per_step_defaults["tpu"] != runner.adapter.frames_per_step_defaults["cpu"]
  with pytest.raises(TargetError, match=r"compiles for the TPU topology v5e:2x2 .*precompile"):
    runner.decode(np.zeros(LATENT, np.float32))
  with pytest.raises(MeshError, match="needs 8 devices, but 4 tpu"):
    native_flax.load(tiny_wan_dirs["2.1"], target=TARGET, mesh="dp=2,tp=4", cache_dir=False)


@pytest.mark.multidevice
def test_bench_compiles_every_path_for_a_tpu_topology(tiny_wan_dirs, tmp_path, monkeypatch):
  import native_flax
  from compare import bench
  from compare.collectives import count_collectives
  from torchax_vae import load

  out = tmp_path / "out"
  argv = ["--target", TARGET, "--mesh", MESH, "--model", str(tiny_wan_dirs["2.1"]), "--dtype", "bfloat16",
          "--latent", ",".join(map(str, LATENT)), "--paths", "torchax,native_flax,generic", "--out", str(out)]  # fmt: skip
  assert bench.main(argv) == 0
  saved = json.loads((out / "results.json").read_text())
  meta, rows = saved["meta"], saved["results"]
  assert (meta["target"], meta["device_kind"], meta["device_count"], meta["platform"]) == (TARGET, "TPU v5 lite", 4, "tpu")
  assert meta["compile_only"] and meta["chip"]["hbm_bytes"] == 16 * 10**9 and meta["libtpu"].startswith("0.0.")
  assert [r["path"] for r in rows] == ["torchax", "native_flax", "generic"]
  # Each path's program on 4 of this host's CPU devices, in the TPU's convolution form: the same collectives.
  monkeypatch.setenv("TORCHAX_VAE_CONV", "3d")
  loads = {"torchax": load, "native_flax": native_flax.load, "generic": functools.partial(load, generic=True)}
  for row in rows:
    cpu = loads[row["path"]](tiny_wan_dirs["2.1"], mesh=MESH, dtype="bfloat16", cache_dir=False)
    expected = count_collectives(cpu.precompile([LATENT])[0].executable.as_text())
    assert row["error"] is None, row["error"]
    assert row["target"] == TARGET and row["conv3d"] == "3d"
    program = "whole" if row["path"] == "generic" else "first"
    assert list(row["programs"]) == [program] if row["path"] == "generic" else row["programs"] == {"first": 1, "steady": 0}
    memory = row["program_memory_per_program_mb"][program]
    assert memory["argument"] > 0 and memory["output"] > 0, memory
    assert 0 < row["chip_memory_fraction"] < 0.01 and row["fits"]
    estimate = row["estimate"]
    assert estimate["estimated_decode_s"] > 0 and "not a measurement" in estimate["note"]
    assert estimate["estimated_decode_s"] >= estimate["roofline_decode_s"] > 0
    assert estimate["per_program"][program]["compiler_s"] is not None
    assert row["collectives"][program] == expected, (row["path"], row["collectives"], expected)
    assert row["compile_s"] > 0 and row["compile_cpu_s"] > 0 and row["flops"] > 0 and row["bytes_accessed"] > 0
    # the compiler's unpriced ops, as counted in the program (compare.estimate)
    assert estimate["per_program"][program]["unpriced_ops"] == row["custom_calls"][program].get("ConcatBitcast", 0)


def test_precompile_command_stores_tpu_programs(tiny_wan_dirs, tmp_path, capsys):
  # What a TPU host could start from: the programs compiled here, stored keyed for the target. (A
  # compile-only client cannot load an executable, so loading one is left to a TPU host: docs/tpu.md.)
  from torchax_vae import cli

  argv = ["precompile", "--model", str(tiny_wan_dirs["2.1"]), "--path", "native_flax", "--dtype", "bfloat16",
          "--latent", "1,4,1,4,4", "--target", TARGET, "--cache-dir", str(tmp_path)]  # fmt: skip
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert "1x4x1x4x4 decode first: compiled" in out and f"for {TARGET} (TPU v5 lite)" in out, out
  stored = list((tmp_path / "executables").glob("*.exe"))
  assert len(stored) == 1 and stored[0].stat().st_size > 0
  assert not list(tmp_path.glob("*-cache"))  # no JAX cache entry: a compile-only client could not read it back
  assert cli.main([*argv[:-4], "--target", "v9:1x1", "--cache-dir", str(tmp_path)]) == 2
  assert "expected a TPU topology" in capsys.readouterr().err


def test_the_estimate_is_the_roofline_on_programs_of_known_cost():
  # A compute-bound matmul and a memory-bound pass on a v6e chip: the compiler prices both within 1%
  # of the roofline of their own counts at the datasheet's 918 TFLOP/s and 1638 GB/s, so its figure
  # reads as seconds. (On v5e its memory model is 10% below the datasheet's 819 GB/s: docs/tpu.md.)
  from compare.estimate import check

  rows = check("v6e:2x4", "quick")
  for row in rows:
    assert row["unpriced_ops"] == 0 and row["compiler_s"] > 0, row
    assert row["compiler_s"] == pytest.approx(row["roofline_s"], rel=0.01), row
    assert row["estimate_s"] == pytest.approx(row["roofline_s"], rel=0.01), row
  assert [row["bound"] for row in rows] == ["compute", "memory"]
