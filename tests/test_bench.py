"""compare.bench: report schema, a real warm-cache hit, tiled vs untiled, simulated devices, and CLI
errors (no timings asserted).

The bench runs on tiny checkpoints: the single-device run as the command (``python -m
compare.bench``), as a user runs it; the others through ``bench.main`` in this process, what the
command runs. Each run starts a few fresh worker processes per path (cold compile, warm cache,
executable warm start, torch), so the four runs here take most of this file's time; each carries
as many tests as it can: the single-device CogVideoX run is also the ``--tiled`` smoke test (tiling
adds about a minute to it, less than a second run), the Wan run is also the simulated-mesh run.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from compare import bench, worker
from torchax_vae.core import models

ROOT = Path(__file__).resolve().parents[1]
TINY_LATENT = "1,4,2,4,4"
# The tiny model compresses 2x: a 24x20 px tile is a 12x10 latent tile, so the 8x16 latent is one row
# of two tiles (8x10 and 8x8; tiles advance 8 latent px) and both tile sizes stitch exactly (32 px).
RUN_LATENT = "1,4,2,8,16"
TILE = "24,20"
TILED_TOL = 1e-4  # max abs vs torch's tiled decode, fp32 (as untiled)
NUMBER = (int, float)


def run_command(*args: str, out: Path | None = None) -> subprocess.CompletedProcess:
  """``python -m compare.bench ARGS --out OUT``, as a user runs it."""
  command = [sys.executable, "-m", "compare.bench", *args]
  if out is not None:
    command += ["--out", str(out)]
  return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def run_bench(*args: str, out: Path | None = None) -> subprocess.CompletedProcess:
  """:func:`run_command` as ``bench.main`` in this process, less the command's start (its workers are
  processes of their own either way): the exit status, the table (stdout) and the progress (stderr)."""
  argv = [*args, *(["--out", str(out)] if out is not None else [])]
  stdout, stderr = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    try:
      code = bench.main(argv)
    except SystemExit as exit_info:  # a usage error: argparse exits with status 2
      code = exit_info.code
  return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def native_flax_loads(model_dir: Path) -> bool:
  """Whether the native port can be benchmarked yet (it is being written alongside)."""
  try:
    import native_flax

    native_flax.load(model_dir, cache_dir=False)
    return True
  except Exception:
    return False


@pytest.fixture(scope="module")
def single_device_run(tiny_dir, tmp_path_factory):
  paths = "torchax,native_flax,torch" if native_flax_loads(tiny_dir) else "torchax,torch"
  out = tmp_path_factory.mktemp("bench")
  args = ["--latent", RUN_LATENT, "--repeats", "1", "--paths", paths, "--tiled", "--tile-sample-size", TILE]
  proc = run_command("--model", str(tiny_dir), *args, out=out)  # the one full run of the command itself
  assert proc.returncode == 0, proc.stderr[-3000:]
  return paths.split(","), out, proc


def test_report_schema(single_device_run):
  paths, out, proc = single_device_run
  report = json.loads((out / "results.json").read_text())
  meta = report["meta"]
  assert set(meta["versions"]) == {"torch", "torchax", "jax", "jaxlib", "flax", "diffusers"}
  assert all(isinstance(v, str) for v in meta["versions"].values())
  assert meta["simulated"] is False and meta["device_count"] == 1 and meta["mesh"] is None
  assert meta["dtype"] == "float32" and isinstance(meta["python"], str) and isinstance(meta["date"], str)
  assert isinstance(meta["device_kind"], str) and meta["matmul_flops_per_s"] > 0 and meta["copy_bytes_per_s"] > 0
  assert "hostname" not in json.dumps(meta).lower()

  rows = {r["path"]: r for r in report["results"] if not r["tiled"]}
  assert sorted(rows) == sorted(paths)
  keys = {
    "path", "mesh", "latent_shape", "dtype", "compile_s", "compile_breakdown_s", "cache_load_s",
    "cache_load_breakdown_s", "cache_hit", "decode_s", "peak_rss_mb", "device_memory_mb", "flops",
    "flops_fraction_of_matmul", "max_abs_err",
  }  # fmt: skip
  for row in rows.values():
    assert keys <= set(row), keys - set(row)
    assert row["error"] is None
    assert row["latent_shape"] == [1, 4, 2, 8, 16] and row["dtype"] == "float32"
    assert row["tiling"] is None and row["tiles"] is None and row["output_shape"] == [1, 3, 4, 16, 32]
    assert set(row["decode_s"]) == {"median", "min", "max", "n"} and row["decode_s"]["n"] == 1
    assert row["decode_s"]["min"] <= row["decode_s"]["median"] <= row["decode_s"]["max"]
    assert row["peak_rss_mb"] > 0
    assert row["device_memory_mb"] is None or isinstance(row["device_memory_mb"], NUMBER)

  torch_row = rows.pop("torch")
  assert torch_row["compile_s"] is None and torch_row["cache_load_s"] is None and torch_row["max_abs_err"] is None
  for row in rows.values():  # the JAX paths
    assert isinstance(row["compile_s"], float) and row["compile_s"] > 0
    # T=2 is one frame step: decode runs only the first-step program.
    assert row["programs"] == {"first": 1, "steady": 0}
    assert set(row["compile_breakdown_s"]["first"]) == {"trace_lower", "compile"}
    assert row["compile_breakdown_s"]["steady"] is None
    parts = row["cache_load_breakdown_s"]
    assert set(parts) == {"imports", "weights", "trace_lower", "cache_fetch", "first_run"}
    assert all(isinstance(v, float) and v >= 0 for v in parts.values())
    assert row["cache_load_s"] == pytest.approx(sum(parts.values()))
    assert row["flops"] > 0 and row["flops_fraction_of_matmul"] > 0
    assert row["bytes_accessed"] > 0 and row["bytes_fraction_of_copy"] > 0
    assert row["max_abs_err"] <= 1e-4, row["path"]
    assert row["notes"] == []
    assert row["program_memory_mb"]["temp"] > 0 and row["program_memory_mb"]["argument"] > 0
    # Beside the weights phase, the same run's yardstick: the weight files' bytes read and placed once.
    yardstick = row["weights_yardstick_s"]
    assert set(yardstick) == {"read", "device_put", "total", "bytes"}
    assert yardstick["bytes"] == sum(p.stat().st_size for p in Path(report["meta"]["model"]).glob("*.safetensors"))
    assert yardstick["total"] == pytest.approx(yardstick["read"] + yardstick["device_put"])

  assert "| path |" in proc.stdout and "torchax" in proc.stdout  # the Markdown table
  assert "| of matmul | GB moved | of copy |" in proc.stdout.splitlines()[0]
  assert "| warm start (exe) s | weights s (yardstick) |" in proc.stdout.splitlines()[0]


def test_tiled_rows_beside_untiled(single_device_run):
  paths, out, proc = single_device_run
  report = json.loads((out / "results.json").read_text())
  overlaps = {"tile_overlap_factor_height": pytest.approx(1 / 6), "tile_overlap_factor_width": pytest.approx(1 / 5)}
  tiling = {"tile_sample_min_height": 24, "tile_sample_min_width": 20, **overlaps}
  assert report["meta"]["tiling"] == tiling
  # Each path untiled, then tiled; torch (the reference) first.
  order = [(r["path"], r["tiled"]) for r in report["results"]]
  assert order == [(path, tiled) for path in ["torch"] + [p for p in paths if p != "torch"] for tiled in (False, True)]
  rows = {(r["path"], r["tiled"]): r for r in report["results"]}
  for path in paths:
    row = rows[path, True]
    assert row["error"] is None and row["tiling"] == tiling
    assert row["tiles"] == {"grid": [1, 2], "count": 2, "latent_tile": [12, 10], "shapes": {"8x10": 1, "8x8": 1},
                            "output_hw": [16, 32]}  # fmt: skip
    assert row["output_shape"] == [1, 3, 4, 16, 32] and row["peak_rss_mb"] > 0

  for path in (p for p in paths if p != "torch"):
    untiled, tiled = rows[path, False], rows[path, True]
    # One program per tile shape; decode found exactly these (no retrace, no recompile).
    assert tiled["programs"] == {"first 8x10": 1, "steady 8x10": 0, "first 8x8": 1, "steady 8x8": 0}
    assert set(tiled["program_memory_per_program_mb"]) == {"first 8x10", "first 8x8"}
    assert tiled["notes"] == [] and tiled["cache_hit"] is True and tiled["exe_hit"] is True
    # Compared to torch's tiled decode, not its untiled one.
    assert tiled["max_abs_err"] <= TILED_TOL, path
    # The largest tile's program needs less scratch than the whole latent's; the weights are the same.
    assert tiled["program_memory_mb"]["temp"] < untiled["program_memory_mb"]["temp"], path
    assert tiled["program_memory_mb"]["argument"] == pytest.approx(untiled["program_memory_mb"]["argument"], rel=0.01)
    assert tiled["flops"] > 0

  table = proc.stdout.splitlines()
  assert "| tiles |" in table[0] and "| temp MB |" in table[0]
  assert sum("1x2 of 24x20 px" in line for line in table) == len(paths)


def test_warm_start_hits_the_cache(single_device_run):
  paths, out, _ = single_device_run
  rows = [r for r in json.loads((out / "results.json").read_text())["results"] if r["path"] != "torch"]
  for row in rows:
    assert row["cache_hit"] is True, row["path"]
    assert row["cache_new_files"] == 0, row["path"]
    # The third process started from the stored executables: nothing traced, nothing compiled.
    assert row["exe_hit"] is True, row["path"]
    assert row["exe_load_breakdown_s"]["trace_lower"] == 0.0, row["path"]


@pytest.fixture(scope="module")
def wan_mesh_run(tiny_wan_dirs, tmp_path_factory):
  """A Wan 2.2 model (patchified, 16x) on a simulated dp=2,tp=2 mesh, all three paths: one run for
  the Wan test and the simulated-devices test (a run of its own for each cost a minute)."""
  out = tmp_path_factory.mktemp("bench-wan")
  args = ["--latent", "1,4,2,4,4", "--repeats", "1", "--paths", "torchax,native_flax,torch", "--mesh", "dp=2,tp=2"]
  proc = run_bench("--model", str(tiny_wan_dirs["2.2"]), *args, out=out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads((out / "results.json").read_text())


def test_simulated_devices(wan_mesh_run):
  """The workers get exactly the mesh's 4 devices (CPU host devices, simulated); each JAX path
  decodes on the mesh and its warm start hits the cache there too."""
  meta = wan_mesh_run["meta"]
  assert meta["simulated"] is True and meta["device_count"] == 4
  assert meta["mesh"] == "dp=2,tp=2"
  rows = [r for r in wan_mesh_run["results"] if r["path"] != "torch"]
  assert [r["path"] for r in rows] == ["torchax", "native_flax"]
  for row in rows:
    assert row["mesh"] == "dp=2,tp=2" and row["error"] is None and row["cache_hit"] is True, row["path"]


@pytest.mark.parametrize(
  ("args", "message"),
  [
    (["--mesh", "dp=two"], "--mesh"),
    (["--mesh", "xx=2"], "unknown axis"),
    (["--paths", "torchax,jaxx"], "unknown path"),
    (["--latent", "1,4,2,4"], "--latent"),
    (["--latent", "1,4,0,4,4"], "positive integers"),
    (["--latent", "1,16,2,4,4"], "has 4 latent channels"),
    (["--dtype", "float16"], "--dtype"),
    (["--repeats", "0"], "--repeats"),
    (["--tile-sample-size", "8,8"], "needs --tiled"),
    (["--tiled", "--tile-sample-size", "0,8"], "positive integers"),
    (["--tiled", "--tile-sample-size", "8"], "--tile-sample-size"),
    (["--tiled", "--tile-sample-size", "7,8"], "multiples of 2"),  # the tiny model's spatial compression
    (["--tiled", "--tile-sample-size", "2,2"], "tiles too small"),
    (["--tiled", "--tile-sample-size", "8,16"], "nothing would be tiled"),  # latent 4x4 fits in a 4x8 latent tile
    (["--tiled"], "nothing would be tiled"),  # diffusers' default: 32x48 px, a 16x24 latent tile
    (["--compile-only", "--paths", "torch"], "--compile-only measures the JAX paths"),
    (["--conv", "3d,fft"], "--conv '3d,fft': expected a comma-separated subset of taps,3d"),
  ],
)
def test_cli_errors_exit_2_before_any_work(tiny_dir, tmp_path, capsys, args, message):
  """In this process (``bench.main``, what ``python -m compare.bench`` runs; the command itself:
  the test below)."""
  # later flags override
  args = ["--model", str(tiny_dir), "--latent", TINY_LATENT, *args, "--out", str(tmp_path / "out")]
  with pytest.raises(SystemExit) as exit_info:
    bench.main(args)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "out").exists()  # nothing measured, nothing written


def test_the_command_exits_2_on_a_usage_error(tiny_dir, tmp_path):
  proc = run_command("--model", str(tiny_dir), "--latent", TINY_LATENT, "--mesh", "xx=2", out=tmp_path / "out")
  assert proc.returncode == 2 and "unknown axis" in proc.stderr, proc.stderr
  assert not (tmp_path / "out").exists()


def test_mesh_larger_than_an_accelerator_is_refused(tiny_dir, monkeypatch):
  # No accelerator here: stand in for one that has 4 devices.
  host = {"ok": True, "platform": "tpu", "device_kind": "TPU v6e", "device_count": 4}
  monkeypatch.setattr(bench, "run_worker", lambda request, env, log=None: host)
  args = bench.build_parser().parse_args(["--model", str(tiny_dir), "--latent", TINY_LATENT, "--mesh", "dp=2,tp=4"])
  with pytest.raises(bench.UsageError, match="needs 8 devices, but only 4 tpu"):
    bench.validate(args)


def test_worker_env_sets_exactly_the_mesh_device_count(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_cpu_foo=1")
  assert bench.worker_env(4)["XLA_FLAGS"].split() == ["--xla_cpu_foo=1", "--xla_force_host_platform_device_count=4"]
  assert bench.worker_env(1)["XLA_FLAGS"].split() == ["--xla_cpu_foo=1"]


def test_unavailable_path_is_reported_not_raised(monkeypatch, capfd):
  monkeypatch.setitem(worker.JAX_PATHS, "native_flax", ("no_such_package_for_the_bench", (), ()))
  request = {"kind": "jax", "phase": "cold", "path": "native_flax", "spawned_at": 0.0}
  assert worker.main(["--json-args", json.dumps(request)]) == 1
  result = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
  assert result["ok"] is False and result["unavailable"] is True
  assert result["error"].startswith("native_flax path unavailable: import failed")


COGVIDEOX = models.CogVideoX(models.CogVideoXVAEConfig())  # the CogVideoX-2b config's adapter


def test_program_runs_follow_diffusers_frame_batching():
  assert worker.program_runs(COGVIDEOX, 2) == {"first": 1, "steady": 0}
  assert worker.program_runs(COGVIDEOX, 3) == {"first": 1, "steady": 0}
  assert worker.program_runs(COGVIDEOX, 13) == {"first": 1, "steady": 5}


def test_program_runs_in_frame_tiles():
  """HunyuanVideo T=11: frame tiles of 5 latent frames every 3, the last one 2 frames long."""
  hunyuan = models.HunyuanVideo(models.HunyuanVideoVAEConfig())
  temporal = hunyuan.temporal_tiles(hunyuan.default_tiling(), "decode", 11, framewise=True)
  assert worker.program_runs(hunyuan, 11, temporal=temporal) == {"first t5": 3, "steady t5": 0, "first t2": 1, "steady t2": 0}
  layout = {"shapes": {"32x32": 4, "32x8": 2}}
  assert worker.program_runs(hunyuan, 11, layout, temporal=temporal)["first t5 32x8"] == 3 * 2


def test_markdown_table_shows_a_failed_path():
  row = bench.empty_record("native_flax", None, (1, 4, 2, 4, 4), "float32")
  row["error"] = "native_flax path unavailable: import failed: ImportError: x"
  table = bench.markdown_table([row])
  assert "failed: native_flax path unavailable" in table
  assert len(table.splitlines()) == 3  # header, rule, the row


def test_tile_layout_follows_diffusers_tiled_decode():
  tiling = {"tile_sample_min_height": 240, "tile_sample_min_width": 360,  # diffusers' default for CogVideoX
            "tile_overlap_factor_height": 1 / 6, "tile_overlap_factor_width": 1 / 5}  # fmt: skip
  # 49 x 480 x 720 video: latent 60 x 90, tiles of 30 x 45 every 25 x 36 latent px.
  layout = worker.tile_layout(COGVIDEOX, (60, 90), tiling)
  assert layout["grid"] == [3, 3] and layout["latent_tile"] == [30, 45] and layout["output_hw"] == [480, 720]
  assert layout["shapes"] == {"30x45": 4, "30x18": 2, "10x45": 2, "10x18": 1}
  assert worker.tile_layout(COGVIDEOX, (30, 45), tiling) is None  # one tile: diffusers decodes it whole
  # 64 px tiles do not stitch exactly: diffusers keeps 54 rows (52 columns) of each 64 px tile but advances 48.
  square = {**tiling, "tile_sample_min_height": 64, "tile_sample_min_width": 64}
  assert worker.tile_layout(COGVIDEOX, (16, 16), square)["output_hw"] == [140, 136]
  assert worker.program_runs(COGVIDEOX, 13, layout)["steady 30x45"] == 4 * 5


def test_wan_run_measures_all_three_paths(wan_mesh_run):
  """A Wan 2.2 model (patchified, 16x): torch, torchax and native_flax side by side, both JAX paths
  exact against torch, two programs each (first and steady step); on the simulated mesh
  (``wan_mesh_run``)."""
  report = wan_mesh_run
  assert report["meta"]["model_class"] == "AutoencoderKLWan"
  rows = {r["path"]: r for r in report["results"]}
  assert rows["torch"]["output_shape"] == [1, 3, 5, 64, 64]
  for path in ("torchax", "native_flax"):
    row = rows[path]
    assert row["error"] is None and row["max_abs_err"] <= TILED_TOL, (path, row["error"])
    assert row["output_shape"] == rows["torch"]["output_shape"]
    assert row["programs"] == {"first": 1, "steady": 1} and row["cache_hit"] is True and row["exe_hit"] is True


def test_an_unavailable_path_does_not_fail_the_run():
  available = bench.empty_record("torchax", None, (1, 4, 2, 4, 4), "float32")
  unavailable = {**bench.empty_record("native_flax", None, (1, 4, 2, 4, 4), "float32"), "unavailable": True,
                 "error": "native_flax path unavailable: no port of this model"}  # fmt: skip
  failed = {**bench.empty_record("torchax", None, (1, 4, 2, 4, 8), "float32"), "error": "RuntimeError: boom"}
  assert bench.failed_measurements([available, unavailable]) == []
  assert bench.failed_measurements([available, unavailable, failed]) == [failed]
  assert "| native_flax | 1x4x2x4x4 | – | not available: native_flax path unavailable" in bench.markdown_table([unavailable])


def test_tile_layout_follows_diffusers_wan_tiled_decode():
  wan = models.Wan(models.WanVAEConfig())  # the Wan 2.1 config
  tiling = {"tile_sample_min_height": 256, "tile_sample_min_width": 256,  # diffusers' defaults
            "tile_sample_stride_height": 192, "tile_sample_stride_width": 192}  # fmt: skip
  # 81 x 480 x 832 video: latent 60 x 104, tiles of 32 x 32 every 24 latent px; cropped to the untiled size.
  layout = worker.tile_layout(wan, (60, 104), tiling)
  assert layout["grid"] == [3, 5] and layout["latent_tile"] == [32, 32] and layout["output_hw"] == [480, 832]
  assert layout["shapes"] == {"32x32": 8, "32x8": 2, "12x32": 4, "12x8": 1}
  assert worker.tile_layout(wan, (32, 32), tiling) is None
  assert worker.program_runs(wan, 21, layout)["steady 32x32"] == 8 * 20
  # Steps of 5 latent frames: 4 steady steps per tile; 22 frames: the last of 5 steps padded.
  assert worker.program_runs(wan, 21, layout, frames_per_step=5)["steady 32x32"] == 8 * 4
  assert worker.program_runs(wan, 22, frames_per_step=5) == {"first": 1, "steady": 5}


def test_compile_only_plans_memory_without_decoding(tiny_wan_dirs, tmp_path, monkeypatch):
  """``--compile-only``: each JAX path lowered and compiled in its own process, XLA's per-device memory
  analysis reported, nothing decoded (no torch row, no decode or warm-start figures); with ``--conv``
  once per 3D convolution form (rows side by side), each row built in the form it names; with
  ``--frames-per-step 2``, Wan's steady step takes 2 latent frames (T = 3: one steady run, not two)."""
  monkeypatch.delenv(bench.CONV_ENV, raising=False)  # each row's form from --conv alone
  args = ["--compile-only", "--model", str(tiny_wan_dirs["2.2"]), "--latent", "1,4,3,4,4", "--conv", "3d,taps", "--frames-per-step", "2"]
  proc = run_bench(*args, out=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((tmp_path / "results.json").read_text())
  assert report["meta"]["compile_only"] is True and "partial" not in report["meta"]  # the final file
  rows = {(r["path"], r["conv_form"]): r for r in report["results"]}
  # torch has nothing to compile; per path, the forms in the order given
  assert list(rows) == [("torchax", "3d"), ("torchax", "taps"), ("native_flax", "3d"), ("native_flax", "taps")]
  for (path, form), row in rows.items():
    assert row["error"] is None, (path, form, row["error"])
    assert row["conv3d"] == form and row["programs"] == {"first": 1, "steady": 1}  # runs per decode
    assert row["frames_per_step"] == 2
    assert row["output_shape"] == [1, 3, 9, 64, 64]  # 1 + 4 * 2 frames, 16x (patchified Wan 2.2)
    assert row["decode_s"] is None and row["cache_load_s"] is None and row["max_abs_err"] is None
    assert set(row["program_memory_per_program_mb"]) == {"first", "steady"}
    memory = row["program_memory_mb"]
    assert memory["temp"] > 0 and memory["argument"] > 0 and memory["output"] > 0
    assert row["compile_s"] > 0 and row["flops"] > 0 and row["bytes_accessed"] > 0
  # The same products in either form; taps on CPU also computes unpadded convolutions padded and cut
  # (here 7-25% more FLOPs at a 4x4 latent), never fewer.
  for path in ("torchax", "native_flax"):
    assert rows[(path, "3d")]["flops"] <= rows[(path, "taps")]["flops"] <= 1.3 * rows[(path, "3d")]["flops"]
  lines = proc.stdout.splitlines()
  assert "| temp MB | argument MB | output MB |" in lines[0] and "decode" not in lines[0]
  assert [line.split("|")[5].strip() for line in lines[2:]] == ["3d", "taps", "3d", "taps"]  # conv3d column
  assert lines[2].split("|")[1].strip() == "torchax (3d, K=2)"
  assert not (tmp_path / "logs" / "matmul.log").exists()  # nothing run
  assert {p.name for p in (tmp_path / "logs").iterdir()} >= {"torchax-T3-taps-k2-compile-only.log"}


@pytest.mark.parametrize("path", ["torchax", "native_flax"])
def test_profile_reports_ops_and_programs(tiny_dir, tmp_path, capsys, path):
  """compare.profile: the profiled decode's ops by kind (convolutions among them), and per program
  the HLO counts and XLA's analyses; the profile is kept where asked."""
  from compare import profile

  assert profile.main(["--path", path, "--model", str(tiny_dir), "--latent", "1,4,3,4,4", "--out", str(tmp_path)]) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["path"] == path and report["latent"] == [1, 4, 3, 4, 4] and report["decode_s"] > 0
  assert report["ops"] and all(kind["count"] > 0 and kind["ms"] >= 0 for kind in report["ops"].values())
  assert any(kind.startswith("ynn") or "convolution" in kind for kind in report["ops"])  # the convolutions ran
  assert set(report["hlo"]) == {"first"}  # T=3: one frame step
  first = report["hlo"]["first"]
  assert first["fusions"] > 0 and first["gflop"] > 0 and first["temp_mb"] >= 0
  assert 0 < len(report["top"]) <= 15 and all(op["shape"] for op in report["top"])
  assert list(tmp_path.glob("plugins/profile/*/perfetto_trace.json.gz"))


def test_profile_refuses_a_bad_latent(capsys):
  from compare import profile

  with pytest.raises(SystemExit) as exit_info:
    profile.main(["--path", "torchax", "--latent", "1,16,2"])
  assert exit_info.value.code == 2
  assert "--latent '1,16,2': expected 5 comma-separated positive integers" in capsys.readouterr().err


def test_a_class_without_adapter_measures_torch_against_torchax(tmp_path):
  """AutoencoderKL (an image VAE): the generic path's one program against torch; native_flax has no port
  (reported, not failed); a 4-D latent; --tiled and --frames refused for such a class before any work."""
  import diffusers
  import torch

  torch.manual_seed(0)
  diffusers.AutoencoderKL(
    block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    latent_channels=4, norm_num_groups=32, layers_per_block=1,
  ).save_pretrained(tmp_path / "kl")  # fmt: skip
  args = ["--model", str(tmp_path / "kl"), "--latent", "1,4,8,6", "--repeats", "1"]
  proc = run_bench(*args, out=tmp_path / "out")  # the default paths: torchax, native_flax, torch
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((tmp_path / "out" / "results.json").read_text())
  assert report["meta"]["model_class"] == "AutoencoderKL"
  rows = {r["path"]: r for r in report["results"]}
  assert rows["torch"]["output_shape"] == rows["torchax"]["output_shape"] == [1, 3, 16, 12]
  torchax = rows["torchax"]
  assert torchax["error"] is None and torchax["max_abs_err"] <= 1e-4 and torchax["programs"] == {"whole": 1}
  assert torchax["cache_hit"] is True and torchax["exe_hit"] is True
  assert rows["native_flax"]["unavailable"] and "no native port" in rows["native_flax"]["error"]
  for extra, message in ((["--tiled"], "runs through the generic path"), (["--frames", "2,3"], "with --frames")):
    proc = run_bench(*args, *extra, out=tmp_path / "refused")  # refused in bench.validate, before any worker
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "refused").exists()
