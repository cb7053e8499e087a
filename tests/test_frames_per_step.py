"""Wan in steps of K latent frames (``load(..., frames_per_step=K)``), both paths, against diffusers.

diffusers decodes Wan one latent frame a step and encodes 4 video frames a step. Wan normalises per
position, attends per frame and convolves causally, so K latent frames a step (4K video frames an
encode step) give the same result: asserted here at K = 2 and 5 with a shorter last step, which the
driver pads with zero frames to the steady program's size and crops (K = 1 is diffusers' own plan:
every other Wan test). Tiny configs (``compare.checkpoints.TINY_WAN_*``); the latents' spatial sizes are
``test_wan.py``'s, so the first-step programs come from the run's executable store.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import PATHS, loaders, randn, torch_decode, torch_encode_mean

import torchax_vae
from torchax_vae import cli

FP32_TOL = 1e-4  # max abs, full model, fp32 (the project's bar)
VARIANTS = ("2.1", "2.2")


def sample_hw(variant: str, latent_hw: tuple[int, int]) -> tuple[int, int]:
  scale = 8 if variant == "2.1" else 16
  return latent_hw[0] * scale, latent_hw[1] * scale


@pytest.fixture(scope="module", params=[(p, v) for p in PATHS for v in VARIANTS], ids=lambda pv: f"{pv[0]}-{pv[1]}")
def path_variant(request):
  return request.param


# T = 8 latent frames: K = 2 walks 1 + 2 + 2 + 2 + 1 (the last padded by one frame), K = 5 walks
# 1 + 5 + 2 (padded by 3). F = 13 video frames: K = 2 walks 1 + 8 + 4 (the last padded by 4 frames).
@pytest.mark.parametrize("frames_per_step", [2, 5])
def test_decode_in_k_frame_steps_matches_diffusers(path_variant, tiny_wan_dirs, tiny_wan_torch, frames_per_step):
  path, variant = path_variant
  vae = loaders()[path](tiny_wan_dirs[variant], frames_per_step=frames_per_step)
  assert vae.frames_per_step == frames_per_step
  z = randn(1, 4, 8, 4, 4, seed=8)
  plan = [(s.end - s.start, s.pad) for s in vae.plan("decode", 8)]
  assert plan == ([(1, 0), (2, 0), (2, 0), (2, 0), (1, 1)] if frames_per_step == 2 else [(1, 0), (5, 0), (2, 3)])
  out = np.asarray(vae.decode(z))
  ref = torch_decode(tiny_wan_torch[variant], z)
  assert out.shape == ref.shape == (1, 3, 29, *sample_hw(variant, (4, 4)))
  np.testing.assert_allclose(out, ref, atol=FP32_TOL, rtol=0)


def test_encode_in_k_frame_steps_matches_diffusers(path_variant, tiny_wan_dirs, tiny_wan_torch):
  path, variant = path_variant
  vae = loaders()[path](tiny_wan_dirs[variant], frames_per_step=2)
  x = np.tanh(randn(1, 3, 13, *sample_hw(variant, (6, 4)), seed=13))
  assert [(s.end - s.start, s.pad) for s in vae.plan("encode", 13)] == [(1, 0), (8, 0), (4, 4)]
  mean = np.asarray(vae.encode(x))
  ref = torch_encode_mean(tiny_wan_torch[variant], x)
  assert mean.shape == ref.shape == (1, 4, 4, 6, 4)
  np.testing.assert_allclose(mean, ref, atol=FP32_TOL, rtol=0)


def test_programs_stay_fixed_in_t(tiny_wan_dirs):
  """K = 3: one first and one steady program for every T > K (a shorter last step is padded); a video
  with fewer than K steady frames gets one steady step of what it has (its own program)."""
  vae = torchax_vae.load(tiny_wan_dirs["2.1"], cache_dir=False, frames_per_step=3)  # all traced here
  for t in (4, 7, 8, 12):
    assert vae.decode(randn(1, 4, t, 2, 2, seed=t)).shape[2] == 1 + 4 * (t - 1)
  assert vae.trace_counts == {"decode_first": 1, "decode_steady": 1}
  vae.decode(randn(1, 4, 2, 2, 2, seed=2))
  assert vae.trace_counts == {"decode_first": 1, "decode_steady": 2}


def test_k_is_a_runner_setting(tiny_wan_dirs, tiny_wan_torch):
  """``runner.frames_per_step`` changes the plan of the next call (as diffusers' attributes do); the
  default is the platform's (``Wan.frames_per_step_defaults``)."""
  vae = torchax_vae.load(tiny_wan_dirs["2.1"])
  assert vae.frames_per_step == vae.adapter.frames_per_step_defaults["cpu"]
  z = randn(1, 4, 8, 4, 4, seed=8)  # the K = 2 decode's programs above
  vae.frames_per_step = 2
  np.testing.assert_allclose(np.asarray(vae.decode(z)), torch_decode(tiny_wan_torch["2.1"], z), atol=FP32_TOL, rtol=0)
  for bad in (0, -1, 2.5, True, "2"):
    with pytest.raises(ValueError, match="frames_per_step: expected a positive int"):
      vae.frames_per_step = bad
  assert vae.frames_per_step == 2


def test_fixed_plans_refuse_k(tiny_dir, tiny_wan_dirs, capsys):
  """CogVideoX's group norm spans a step's frames, so its steps are diffusers'; the generic path runs
  diffusers' own loop. Both refuse ``frames_per_step`` before any weights are read."""
  for path, load in loaders().items():
    with pytest.raises(ValueError, match="AutoencoderKLCogVideoX's frame steps are diffusers' own and fixed"):
      load(tiny_dir, frames_per_step=2)
    with pytest.raises(ValueError, match="frames_per_step: expected a positive int"):
      load(tiny_wan_dirs["2.1"], frames_per_step=0)
    del path
  with pytest.raises(ValueError, match="runs through the generic path"):
    torchax_vae.load(tiny_wan_dirs["2.1"], generic=True, frames_per_step=2)
  assert torchax_vae.load(tiny_dir).frames_per_step is None
  # The command line says the same, as a usage error.
  assert cli.main(["precompile", "--model", str(tiny_dir), "--frames-per-step", "2", "--latent", "1,4,3,4,4"]) == cli.EXIT_USAGE
  assert "AutoencoderKLCogVideoX's frame steps are diffusers' own" in capsys.readouterr().err


@pytest.mark.multidevice
@pytest.mark.parametrize("path", PATHS)
def test_sharded_k_steps_precompile_and_match(tiny_wan_dirs, tiny_wan_torch, path):
  """dp=2,tp=4 with latent width 6 (uneven on tp=4) and a padded last step, decode and encode:
  precompiled from shapes, the calls build nothing more and match diffusers."""
  vae = loaders()[path](tiny_wan_dirs["2.1"], mesh="dp=2,tp=4", frames_per_step=2, cache_dir=False)
  shape = (2, 4, 6, 4, 6)  # decode: 1 + 2 + 2 + 1 (padded by 1); encode of its 21 frames: 1 + 8 + 8 + 4 (padded by 4)
  assert [(r.kind, r.name) for r in vae.precompile(shape, encode=True)] == [
    ("decode", "first"), ("decode", "steady"), ("encode", "first"), ("encode", "steady")
  ]
  traces = dict(vae.trace_counts)
  z = randn(*shape, seed=7)
  video = np.asarray(vae.decode(z))
  mean = np.asarray(vae.encode(video))
  assert dict(vae.trace_counts) == traces
  np.testing.assert_allclose(video, torch_decode(tiny_wan_torch["2.1"], z), atol=FP32_TOL, rtol=0)
  np.testing.assert_allclose(mean, torch_encode_mean(tiny_wan_torch["2.1"], video), atol=FP32_TOL, rtol=0)
