"""Ahead-of-time programs: ``Runner.precompile`` and ``python -m torchax_vae precompile``.

After a precompile, a decode (and, with ``encode=True``, an encode) of those shapes traces and compiles
nothing — also tiled (one program pair per tile shape) and on a mesh with an uneven width, where the
steady program's cache comes padded out of the first one. After the command, a second process (the
command itself) finds every program in the store. Results are those of a decode that compiled its own
programs (bit for bit).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import PATHS, loaders, randn

ROOT = Path(__file__).resolve().parents[1]


def _frozen(runner) -> tuple:
  return dict(runner.trace_counts), dict(runner.programs.sources)


@pytest.mark.parametrize("path", PATHS)
def test_decode_and_encode_after_precompile_build_nothing(path, tiny_dir, tmp_path):
  runner = loaders()[path](tiny_dir, cache_dir=tmp_path)
  runner.enable_tiling(tile_sample_min_height=24, tile_sample_min_width=20)  # latent 8x16: tiles 8x10 and 8x8
  z = randn(1, 4, 5, 8, 16, seed=1)  # CogVideoX: a first step (3 frames) and a steady one (2)
  programs = runner.precompile([z.shape], encode=True)
  names = [(p.kind, p.name) for p in programs]
  # CogVideoX encodes 17 frames in one step (diffusers' _encode), so encode has first programs only.
  assert names == [("decode", n) for n in ("first 8x10", "steady 8x10", "first 8x8", "steady 8x8")] + [
    ("encode", n) for n in ("first 16x20", "first 16x16")
  ], names
  assert {p.source for p in programs} == {"compiled"}
  assert all(p.compile_s > 0 and p.trace_lower_s > 0 and p.executable is not None for p in programs)
  assert runner.precompile([z.shape], encode=True)[0].source == "memory"
  for program in programs:  # the steady programs write the new cache over the donated old one
    aliased = program.executable.memory_analysis().alias_size_in_bytes
    assert (aliased > 0) == program.name.startswith("steady"), (program.name, aliased)
  before = _frozen(runner)
  video = runner.decode(z)
  runner.encode(np.asarray(video))
  assert _frozen(runner) == before  # nothing traced, nothing compiled


@pytest.mark.parametrize("path", PATHS)
def test_precompile_on_a_mesh_with_uneven_width(path, tiny_wan_dirs):
  # The run's store: nothing here asserts a build. The model and shape of each path's sharded Wan test
  # (tests/test_wan.py: 2.2, tests/test_native_wan.py: 2.1), so that their programs serve both.
  variant = {"torchax": "2.2", "native_flax": "2.1"}[path]
  runner = loaders()[path](tiny_wan_dirs[variant], mesh="dp=2,tp=4")
  z = randn(3, 4, 2, 4, 6, seed=2)  # batch 3 on dp=2, width 6 on tp=4; T=2: a first step and a steady one
  assert [p.name for p in runner.precompile([z.shape])] == ["first", "steady"]
  before = _frozen(runner)
  runner.decode(z)
  assert _frozen(runner) == before


def test_precompile_refuses_shapes_it_cannot_decode(tiny_dir):
  runner = loaders()["native_flax"](tiny_dir, cache_dir=False)
  with pytest.raises(ValueError, match=r"latent_shapes: expected 4 latent channels on axis 1 .* got shape \(1, 16, 2, 4, 4\)"):
    runner.precompile([(1, 16, 2, 4, 4)])
  with pytest.raises(ValueError, match="expected 5 dims"):
    runner.precompile([(1, 4, 4, 4)])
  with pytest.raises(ValueError, match="expected one or more latent shapes"):
    runner.precompile([])
  assert runner.programs.sources == {"compiled": 0, "jax_cache": 0, "deserialized": 0}


def _cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "torchax_vae", "precompile", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=600)  # fmt: skip


SUMMARY = re.compile(r"precompiled (\d+) programs \(compiled (\d+), jax_cache (\d+), deserialized (\d+)\)")


def test_cli_precompile_then_a_fresh_process_loads_everything(tiny_wan_dirs, tmp_path, capsys):
  from torchax_vae import cli

  args = ["--model", str(tiny_wan_dirs["2.2"]), "--latent", "1,4,3,4,4", "--latent", "1,4,1,4,6", "--encode",
          "--cache-dir", str(tmp_path)]  # fmt: skip
  assert cli.main(["precompile", *args]) == 0  # the command in this process; then the command itself
  cold = capsys.readouterr().out
  # 3 frames: first + steady; 1 frame: first only; each with its encode (9 and 1 frames).
  assert SUMMARY.search(cold).groups() == ("6", "6", "0", "0"), cold
  assert "1x4x3x4x4 decode steady: compiled in" in cold
  warm = _cli(*args)
  assert warm.returncode == 0, warm.stderr[-2000:]
  assert SUMMARY.search(warm.stdout).groups() == ("6", "0", "0", "6"), warm.stdout
  assert len(list((tmp_path / "executables").glob("*.exe"))) == 6


@pytest.mark.parametrize(
  ("args", "message"),
  [
    (["--latent", "1,16,2,4,4"], "has 4 latent channels, the shape has 16"),
    (["--latent", "1,4,2,4"], "expected 5 positive integers B,C,T,H,W"),
    (["--latent", "1,4,2,4,4", "--cache-dir", "off"], "nothing to keep"),
  ],
)
def test_cli_precompile_errors_exit_2(tiny_dir, args, message, capsys, monkeypatch):
  from torchax_vae import cli

  monkeypatch.setattr(cli, "_loader", lambda path: pytest.fail("the model was loaded before the shapes were checked"))
  assert cli.main(["precompile", "--model", str(tiny_dir), *args]) == cli.EXIT_USAGE
  assert message in capsys.readouterr().err
