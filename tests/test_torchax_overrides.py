"""The op lowerings torchax_vae installs in torchax equal PyTorch's ops (and keep sharded layouts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import randn

from torchax_vae.tracing import backend


def _through_torchax(fn, *tensors):
  env = backend.torchax.default_env()
  backend.install_op_overrides(env)
  with env:
    out = fn(*[t.to("jax") for t in tensors])
    return np.asarray(out.jax())


@pytest.mark.parametrize(
  ("shape", "kwargs"),
  [
    ((1, 2, 3, 4, 5), {"scale_factor": 2.0}),
    ((1, 2, 2, 3, 4), {"size": (8, 6, 8)}),
    ((1, 2, 2, 3, 4), {"size": (3, 7, 5)}),  # non-integer factors: PyTorch's floor(dst * in / out)
    ((2, 3, 4, 5), {"scale_factor": 2.0}),
    ((2, 3, 5, 7), {"size": (9, 11)}),
    ((2, 3, 5), {"size": (12,)}),
  ],
)
def test_nearest_upsample_matches_torch(shape, kwargs):
  x = torch.from_numpy(randn(*shape))
  expected = F.interpolate(x, **kwargs).numpy()
  np.testing.assert_array_equal(_through_torchax(lambda t: F.interpolate(t, **kwargs), x), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_group_norm_matches_torch(dtype):
  torch.manual_seed(0)
  norm = torch.nn.GroupNorm(4, 16, eps=1e-6).to(dtype)
  torch.nn.init.normal_(norm.weight)
  torch.nn.init.normal_(norm.bias)
  x = (torch.from_numpy(randn(2, 16, 3, 5, 6)) * 3 + 1).to(dtype)
  with torch.no_grad():
    expected = norm(x).float().numpy()
    got = _through_torchax(
      lambda t, w, b: F.group_norm(t, 4, w, b, 1e-6).float(), x, norm.weight.detach(), norm.bias.detach()
    )
  np.testing.assert_allclose(got, expected, atol=1e-5 if dtype == torch.float32 else 0.05, rtol=0)


@pytest.mark.parametrize(
  ("x_shape", "w_shape", "kwargs"),
  [
    ((2, 4, 5, 6, 7), (5, 4, 3, 3, 3), {"padding": (0, 1, 1)}),  # the causal convs: per-time-tap 2D convs
    ((1, 4, 9, 8, 8), (3, 4, 3, 3, 2), {"stride": (2, 1, 2), "padding": (1, 1, 0), "dilation": (2, 1, 1)}),
    ((1, 4, 3, 5, 5), (6, 4, 1, 1, 1), {}),  # 1x1x1 (conv_y/conv_b, shortcuts): a channels-first matmul
    ((3, 4, 9, 9), (5, 4, 3, 3), {"stride": 2}),  # the downsampler
    ((3, 4, 9, 9), (5, 4, 1, 1), {}),
    ((3, 4, 9, 9), (4, 2, 3, 3), {"groups": 2, "padding": 1}),  # torchax's own lowering
    ((3, 4, 9), (5, 4, 3), {}),
  ],
)
@pytest.mark.parametrize("form", ["taps", "3d"])  # the 3D convolution's form (core.conv.conv3d_form)
def test_convolution_matches_torch(x_shape, w_shape, kwargs, form):
  from torchax_vae.core import conv as conv_lib

  x, w, b = (torch.from_numpy(randn(*shape, seed=i)) for i, shape in enumerate((x_shape, w_shape, w_shape[:1])))
  conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[len(x_shape)]
  with torch.no_grad():
    expected = conv(x, w, b, **kwargs).numpy()
  with conv_lib.using_form(form):
    got = _through_torchax(lambda t, k, c: conv(t, k, c, **kwargs), x, w, b)
  np.testing.assert_allclose(got, expected, atol=1e-5 * max(1.0, np.abs(expected).max()), rtol=0)


@pytest.mark.parametrize(
  ("shape", "kwargs"),
  [
    ((2, 3, 4, 5), {"scale_factor": (2.0, 2.0)}),  # WanUpsample: nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact")
    ((1, 2, 2, 3, 4), {"scale_factor": 2.0}),
    ((2, 3, 5, 7), {"size": (9, 11)}),  # non-integer factors: PyTorch's floor((dst + 0.5) * in / out)
    ((2, 3, 5, 7), {"size": (3, 4)}),  # downscaling
    ((2, 3, 5), {"size": (12,)}),
  ],
)
def test_nearest_exact_upsample_matches_torch(shape, kwargs):
  x = torch.from_numpy(randn(*shape))
  expected = F.interpolate(x, mode="nearest-exact", **kwargs).numpy()
  got = _through_torchax(lambda t: F.interpolate(t, mode="nearest-exact", **kwargs), x)
  np.testing.assert_array_equal(got, expected)


def test_nearest_exact_override_is_used_and_gathers_nothing():
  """The override is what runs: an integer factor lowers to a broadcast (repeat), no gather.
  torchax's own decomposition indexes with computed positions (a gather, which GSPMD all-gathers
  on a width-sharded input)."""
  import jax
  from torchax import interop

  env = backend.torchax.default_env()
  backend.install_op_overrides(env)

  def upsample(x):
    with env:
      return interop.jax_view(F.interpolate(interop.torch_view(x), scale_factor=(2.0, 2.0), mode="nearest-exact"))

  hlo = jax.jit(upsample).lower(np.zeros((2, 3, 4, 5), np.float32)).as_text()
  assert "gather" not in hlo and "broadcast" in hlo


@pytest.mark.parametrize(("kernel", "dilation"), [((3, 3), (1, 1)), ((3, 1), (1, 1)), ((3, 3), (2, 1))])
def test_unpadded_convolution_is_computed_padded_on_cpu(kernel, dilation):
  """``core.conv.conv2d`` without padding (Wan's causal convs, after their ``F.pad``): on XLA:CPU it
  runs padded by half the window and cut, 4-14x faster there; every output equals the unpadded one."""
  import jax

  from torchax_vae.core import conv

  x = jax.numpy.asarray(randn(2, 9, 11, 5))
  k = jax.numpy.asarray(randn(*kernel, 5, 4, seed=1))
  expected = jax.lax.conv_general_dilated(x, k, (1, 1), [(0, 0), (0, 0)], rhs_dilation=dilation,
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
  got = conv.conv2d(x, k, (1, 1), (0, 0), dilation)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
  assert conv.pad_valid_convolutions() == (jax.default_backend() == "cpu")
  lowered = jax.jit(lambda a, b: conv.conv2d(a, b, (1, 1), (0, 0), dilation)).lower(x, k).as_text()
  half = [dilation[i] * (kernel[i] - 1) // 2 for i in range(2)]
  assert f"pad = [[{half[0]}, {half[0]}], [{half[1]}, {half[1]}]]" in lowered  # the padded form is what runs


def _traced_module(module, *tensors, track_resizes=True):
  """``module(*tensors)`` jitted through torchax with the overrides (and, inside, the resize tracking
  the step programs use): its output and its lowered program."""
  import contextlib

  import jax
  from torchax import interop

  env = backend.torchax.default_env()
  backend.install_op_overrides(env)
  params = {k: v.detach().numpy() for k, v in module.state_dict().items()}

  def program(params, *arrays):
    with env, torch.no_grad(), backend.tracking_resizes() if track_resizes else contextlib.nullcontext():
      out = torch.func.functional_call(module, interop.torch_view(params), interop.torch_view(arrays))
      return interop.jax_view(out)

  args = (params, *[t.numpy() for t in tensors])
  return jax.jit(program)(*args), jax.jit(program).lower(*args).as_text()


@pytest.mark.parametrize(
  ("f_shape", "z_shape"),
  [
    ((5, 8, 6), (3, 4, 3)),  # odd T: diffusers resizes the first frame alone and concatenates
    ((4, 8, 6), (2, 4, 3)),
    ((5, 7, 6), (4, 3, 3)),  # odd T, non-integer factors
    ((6, 10, 7), (4, 3, 3)),
  ],
)
def test_spatial_norm_convolves_before_resizing(f_shape, z_shape):
  """CogVideoXSpatialNorm3D (unmodified) through torchax: its 1x1x1 conv_y/conv_b run on zq at its
  own resolution and their results are resized (the recorded resize of _convolution_channels_last),
  not on zq resized to f's size; the output is diffusers'. Without the tracking, the matmuls have
  f's size: that is what the tracking removes."""
  import re

  from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXSpatialNorm3D

  torch.manual_seed(0)
  module = CogVideoXSpatialNorm3D(f_channels=8, zq_channels=4, groups=4).eval()
  f, zq = torch.from_numpy(randn(2, 8, *f_shape, seed=3)), torch.from_numpy(randn(2, 4, *z_shape, seed=4))
  with torch.no_grad():
    expected, _ = module(f, zq)
  (out, _), text = _traced_module(module, f, zq)
  np.testing.assert_allclose(np.asarray(out), expected.numpy(), atol=1e-5, rtol=0)

  def matmul_inputs(program):  # the activation operand of each dot_general, as its dims
    return [tuple(map(int, m.split("x")[:-1])) for m in re.findall(r"dot_general.*?\(tensor<([0-9x]+f32)>", program)]

  assert matmul_inputs(text) == [(2, *z_shape, 4)] * 2  # (B, T, H, W, I) at zq's size
  _, untracked = _traced_module(module, f, zq, track_resizes=False)
  assert matmul_inputs(untracked) == [(2, *f_shape, 4)] * 2


# --- What the generic path needed from outside (compare.conformance found each) ---------------------


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize(
  ("shape", "kwargs"),
  [
    ((1, 8, 4, 4), {"size": (6, 6)}),  # DINOv2's position embeddings, upscaled (AutoencoderRAE)
    ((2, 3, 16, 12), {"size": (5, 7)}),  # downscaled: the filter widens by the scale (antialiasing)
    ((1, 2, 9, 9), {"scale_factor": 1.5}),
    ((1, 2, 7, 5), {"size": (9, 4), "align_corners": True}),
  ],
)
def test_antialiased_resize_matches_torch(mode, shape, kwargs):
  """torchax 0.0.13's lowering of aten._upsample_{bicubic,bilinear}2d_aa fails while tracing."""
  x = torch.from_numpy(randn(*shape))
  call = lambda t: F.interpolate(t, mode=mode, antialias=True, **{"align_corners": False, **kwargs})  # noqa: E731
  np.testing.assert_allclose(_through_torchax(call, x), call(x).numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("length", [1, 2, 7, 64])
@pytest.mark.parametrize("periodic", [True, False])
def test_hann_window_matches_torch(length, periodic):
  """No lowering in torchax 0.0.13 (Cosmos 3's audio encoder's STFT)."""
  got = _through_torchax(lambda t: torch.hann_window(length, periodic=periodic, device=t.device) + t, torch.zeros(length))
  np.testing.assert_allclose(got, torch.hann_window(length, periodic=periodic).numpy(), atol=1e-6, rtol=0)


def test_linear_takes_torchs_keyword_names():
  """torchax 0.0.13 names F.linear's first argument ``self`` (MiniMax H3 audio calls ``input=``)."""
  x, w, b = (torch.from_numpy(randn(*s, seed=i)) for i, s in enumerate([(2, 3, 4), (5, 4), (5,)]))
  got = _through_torchax(lambda x_, w_, b_: F.linear(input=x_, weight=w_, bias=b_), x, w, b)
  np.testing.assert_allclose(got, F.linear(x, w, b).numpy(), atol=1e-5, rtol=0)


def test_type_as_returns_a_new_tensor_of_the_right_dtype():
  """torchax 0.0.13 cast ``self`` in place and kept its torch dtype (bf16 Qwen-Image/Wan upsamplers)."""
  env = backend.torchax.default_env()
  with env:
    x = torch.ones(3, dtype=torch.float32).to("jax")
    y = x.type_as(torch.ones(1, dtype=torch.bfloat16).to("jax"))
    assert y.dtype == torch.bfloat16 and y.jax().dtype == np.dtype("bfloat16") and y is not x
    assert x.dtype == torch.float32 and x.jax().dtype == np.float32  # the source is left alone


def test_setitem_drops_a_sources_leading_ones_as_torch_does():
  """``buffer[i] = z[:, :, a:b]`` with a batch of one (Allegro's tiled decode)."""
  z = torch.from_numpy(randn(1, 2, 3))

  def fill(t):
    buffer = t.new_zeros((2, 2, 3))
    buffer[1] = t
    return buffer

  expected = fill(z).numpy()
  np.testing.assert_array_equal(_through_torchax(fill, z), expected)
