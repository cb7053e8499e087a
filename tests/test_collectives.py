"""Width-sharded decode steps need halo exchanges only: no all-gather in either path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from compare.collectives import count_collectives, main

pytestmark = pytest.mark.multidevice


def test_count_collectives_reads_hlo():
  hlo = """
  %all-gather.2 = f32[1,4]{1,0} all-gather(%x), dimensions={1}
  %ag-start = (f32[2], f32[8]) all-gather-start(%y), dimensions={0}
  %ag-done = f32[8] all-gather-done(%ag-start)
  %cp = f32[2] collective-permute(%z), source_target_pairs={{0,1}}
  %ar = f32[] all-reduce(%w), to_apply=%add
  """
  assert count_collectives(hlo) == {
    "all-gather": 2, "all-reduce": 1, "collective-permute": 1, "all-to-all": 0, "reduce-scatter": 0
  }


def test_no_all_gathers_on_dp2_tp4(tiny_dir, capsys):
  assert main(["--mesh", "dp=2,tp=4", "--latent", "2,4,2,8,16", "--model", str(tiny_dir)]) == 0
  report = json.loads(capsys.readouterr().out)
  assert set(report) == {"torchax", "native_flax"}
  for path, counts in report.items():
    assert counts["all-gather"] == 0, (path, counts)
    assert counts["collective-permute"] > 0, (path, counts)  # the convolutions' halo exchange


@pytest.mark.parametrize("latent", ["2,4,2,8,10", "3,4,2,6,10"], ids=["uneven-width", "uneven-batch-and-width"])
def test_uneven_splits_need_no_all_gather(tiny_dir, capsys, latent):
  # Latent width 10 on tp=4: GSPMD pads the width inside jit. The driver pads the conv cache it
  # returns to a width tp divides (a jax.Array leaving a program must split evenly), so no step
  # gathers it; before that, 18 all-gathers per path. The steady program takes the cache with the
  # first program's output shardings.
  # Batch 3 on dp=2: the driver pads the batch with a zero sample; left to GSPMD, the per-frame 2D
  # convolutions (batch merged with time) gathered: 88 all-gathers per path, 90 with width 10 too.
  assert main(["--mesh", "dp=2,tp=4", "--latent", latent, "--model", str(tiny_dir)]) == 0
  report = json.loads(capsys.readouterr().out)
  for path, counts in report.items():
    assert counts["all-gather"] == 0, (path, counts)
    assert counts["collective-permute"] > 0, (path, counts)


def test_command_simulates_the_mesh_devices_itself(tiny_dir):
  # As documented: no XLA_FLAGS from the caller; the command asks a CPU host for the mesh's devices.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  done = subprocess.run(
    [sys.executable, "-m", "compare.collectives", "--mesh", "dp=2,tp=2", "--latent", "2,4,2,8,16",
     "--paths", "native_flax", "--model", str(tiny_dir)],
    capture_output=True, text=True, env=env, timeout=600,
  )
  assert done.returncode == 0, done.stderr
  counts = json.loads(done.stdout)["native_flax"]
  assert counts["all-gather"] == 0 and counts["collective-permute"] > 0, counts


def test_bad_arguments_exit_2(capsys):
  assert main(["--mesh", "dp=2,xx=4"]) == 2
  assert main(["--latent", "1,2,3"]) == 2
  assert main(["--paths", "torch"]) == 2
  assert "unknown" in capsys.readouterr().err


def test_a_path_without_the_model_is_reported_unavailable(tiny_dir, capsys, monkeypatch):
  from compare import collectives
  from torchax_vae.core.errors import UnsupportedModelError

  def refuse(path, model, mesh):
    raise UnsupportedModelError(f"the {path} path has no AutoencoderKLCogVideoX yet")

  monkeypatch.setattr(collectives, "load_path", refuse)
  assert main(["--mesh", "dp=2,tp=4", "--model", str(tiny_dir), "--paths", "native_flax"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert report == {"native_flax": {"unavailable": "the native_flax path has no AutoencoderKLCogVideoX yet"}}
