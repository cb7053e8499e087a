"""A drop-in ``vae`` for diffusers pipelines: the pipeline's transformer runs in PyTorch as before, its VAE
through this project (either path, any mesh), with no other change to the user's code.

    vae = torchax_vae.load("THUDM/CogVideoX-2b", subfolder="vae", mesh="tp=8")
    pipe = CogVideoXPipeline.from_pretrained("THUDM/CogVideoX-2b", ...)   # diffusers' VAE included
    pipe.vae = vae.as_diffusers(device="cuda")                            # then replaced
    video = pipe(prompt, ...).frames

    # or, without loading diffusers' VAE: vae=None, then attach (it also sets the scale factors the
    # pipeline took from fallbacks when built without a VAE)
    pipe = CogVideoXPipeline.from_pretrained("THUDM/CogVideoX-2b", vae=None, ...)
    attach(pipe, vae.as_diffusers(device="cuda"))

What the pipelines read from their ``vae`` (diffusers 0.42, read from their source), and what this
object answers with:

* ``CogVideoXPipeline`` / ``CogVideoXImageToVideoPipeline``: ``config.block_out_channels``,
  ``config.temporal_compression_ratio``, ``config.scaling_factor`` (``__init__``),
  ``config.invert_scale_latents`` (image-to-video), ``decode(z).sample`` and, image-to-video,
  ``encode(image).latent_dist.sample(generator)``, one image at a time.
* ``WanPipeline`` / ``WanImageToVideoPipeline``: ``config.scale_factor_temporal``,
  ``config.scale_factor_spatial``, ``config.latents_mean``, ``config.latents_std``, ``config.z_dim``,
  ``dtype`` and the device (``get_module_execution_device``: ``modules()``, ``device``),
  ``decode(z, return_dict=False)[0]`` and, image-to-video, ``encode(video).latent_dist.mode()``.

``config`` is the VAE's whole diffusers config. ``encode`` returns diffusers' own
``DiagonalGaussianDistribution`` over the posterior's parameters as torch tensors, so a torch
``generator`` draws exactly the noise diffusers' VAE would draw. Tensors come back on the caller's
torch device and in its dtype. ``enable_tiling``/``disable_tiling`` are the model's (diffusers'
arguments); ``enable_slicing`` decodes and encodes one batch item at a time, as diffusers does.

Not an ``nn.Module``: ``pipe.to(...)`` and CPU offload leave it alone (its weights live on JAX's devices,
placed at load), and ``DiffusionPipeline.from_pretrained(..., vae=...)`` refuses it (diffusers checks
for a ``ModelMixin``): pass ``vae=None`` and assign it afterwards, or assign it over the loaded one
(before that, a pipeline built with ``vae=None`` uses fallback scale factors; see :func:`attach`).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import FrozenDict
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class DiffusersVAE:
  """A runner (``torchax_vae.load`` / ``native_flax.load``) with the interface diffusers' video
  pipelines use of their ``vae``. ``device``: the torch device it reports (where Wan pipelines put the
  latents before decoding and where results come back when the input was elsewhere)."""

  def __init__(self, runner: Any, *, device: Any = "cpu"):
    self.runner = runner
    # A generic runner's module (torchax_vae.runtime.generic: built here, if not yet) carries diffusers' own FrozenDict.
    self.generic = runner.generic
    self.config = runner.module.config if self.generic else FrozenDict(runner.adapter.config.to_dict())
    self._device = torch.device(device)
    self.use_slicing = False

  # --- what pipelines and their helpers look at -----------------------------------------------------

  @property
  def dtype(self) -> torch.dtype:
    return DTYPES[self.runner.dtype]

  @property
  def device(self) -> torch.device:
    return self._device

  def modules(self):
    """diffusers' ``get_module_execution_device`` walks a component's modules looking for offload hooks."""
    return iter([self])

  def to(self, *args: Any, **kwargs: Any) -> DiffusersVAE:
    """Records the device results come back to; the dtype is the one the model was loaded in."""
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    for arg in args:
      if isinstance(arg, torch.dtype):
        dtype = arg
      elif arg is not None:
        device = arg
    kwargs.pop("non_blocking", None)  # nothing is copied: results go to the device as they are made
    kwargs.pop("copy", None)
    if kwargs:
      raise TypeError(f"to(): unexpected arguments {sorted(kwargs)}")
    if dtype is not None and dtype != self.dtype:
      raise ValueError(
        f"to(dtype={dtype}): this VAE runs in {self.dtype} (its programs are compiled for it); "
        f"load it with dtype={str(dtype).removeprefix('torch.')!r} instead"
      )
    if device is not None:
      self._device = torch.device(device)
    return self

  # Attributes of diffusers' module (not its config) that pipelines read, e.g. HunyuanVideoPipeline's
  # `vae.temporal_compression_ratio`: the adapter's values, or the generic runner's module's.
  def __getattr__(self, name: str) -> Any:
    if name.startswith("_") or name in ("runner", "generic"):  # not set yet (copy, pickle)
      raise AttributeError(name)
    if self.generic:
      if name in ("spatial_compression_ratio", "temporal_compression_ratio"):
        return getattr(self.runner.module, name)
    else:
      attributes = self.runner.adapter.module_attributes()
      if name in attributes:
        return attributes[name]
      if name in self.runner.adapter.module_buffers:  # LTX's latents_mean / latents_std: weights, as torch tensors
        return torch.from_numpy(np.array(self.runner.params[name], dtype=np.float32)).to(self.dtype)
    raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

  @property
  def use_framewise_decoding(self) -> bool:
    """diffusers' attribute (HunyuanVideo, LTX): decode in frame tiles; the runner's."""
    return self.runner.use_framewise_decoding

  @use_framewise_decoding.setter
  def use_framewise_decoding(self, value: bool) -> None:
    self.runner.use_framewise_decoding = bool(value)

  @property
  def use_framewise_encoding(self) -> bool:
    return self.runner.use_framewise_encoding

  @use_framewise_encoding.setter
  def use_framewise_encoding(self, value: bool) -> None:
    self.runner.use_framewise_encoding = bool(value)

  def __repr__(self) -> str:
    class_name = self.runner.class_name if self.generic else self.runner.adapter.class_name
    return f"DiffusersVAE({class_name} via {self.runner.name}, {self.runner.dtype}, device={self.device})"

  # --- tiling and slicing (diffusers' names) --------------------------------------------------------

  def enable_tiling(self, *args: Any, **kwargs: Any) -> None:
    self.runner.enable_tiling(*args, **kwargs)

  def disable_tiling(self) -> None:
    self.runner.disable_tiling()

  @property
  def use_tiling(self) -> bool:
    return self.runner.tiling is not None

  @use_tiling.setter
  def use_tiling(self, value: bool) -> None:  # some code sets diffusers' attribute directly
    if value and self.runner.tiling is None:
      self.runner.enable_tiling()
    elif not value:
      self.runner.disable_tiling()

  def enable_slicing(self) -> None:
    self.use_slicing = True

  def disable_slicing(self) -> None:
    self.use_slicing = False

  # --- decode / encode --------------------------------------------------------------------------------

  def decode(self, z: torch.Tensor, *args: Any, **kwargs: Any) -> DecoderOutput | tuple[torch.Tensor]:
    """``(B, C, T, H, W)`` latents (already scaled by the pipeline) -> ``DecoderOutput(sample=(B, 3, F,
    H*s, W*s))``, or ``(sample,)`` with ``return_dict=False``; on ``z``'s device, in ``z``'s dtype.

    The arguments after ``z`` are the class's own, positional or by name, as its diffusers ``decode``
    takes them (LTX: ``decode(z, temb, return_dict)``, as ``LTXPipeline`` calls it). A generic runner
    takes the class's own keywords (the temporal decoder's ``num_frames``); an adapter's decode takes
    ``temb`` where the model has one. ``generator`` (image pipelines pass one) is dropped: a decode
    that draws noise draws it inside its program.
    """
    kwargs = self._decode_arguments(args, kwargs)
    return_dict = kwargs.pop("return_dict", True)
    # No NaN check (diffusers' VAE has none; it would cost a reduction and a host sync per call).
    kwargs.pop("generator", None)
    if self.generic:
      extra = {k: v for k, v in kwargs.items() if v is not None}
      video = self._per_item(functools.partial(self.runner.decode, check_finite=False, **extra), _tensor(z, "z"))
    else:  # temb, one per sample, is sliced with the latents (diffusers' use_slicing does so)
      temb = kwargs.pop("temb", None)
      others = sorted(k for k, v in kwargs.items() if v is not None)
      if others:  # e.g. LTX-2's causal: another program than the config's; not run by the adapter
        raise TypeError(f"decode(): {', '.join(others)} other than the default is not supported by this adapter")
      z = _tensor(z, "z")
      if temb is None:
        video = self._per_item(functools.partial(self.runner.decode, check_finite=False), z)
      elif self.use_slicing and z.shape[0] > 1:
        temb = torch.as_tensor(temb).reshape(-1).expand(z.shape[0])
        video = torch.cat([self.runner.decode(zi, ti, check_finite=False) for zi, ti in zip(z.split(1), temb.split(1))])
      else:
        video = self.runner.decode(z, temb, check_finite=False)
    video = _like(video, z)
    return DecoderOutput(sample=video) if return_dict else (video,)

  def _decode_arguments(self, args: tuple, kwargs: dict) -> dict:
    """``decode``'s arguments after ``z`` by name, bound as the diffusers class's ``decode`` binds them."""
    cls = type(self.runner.module) if self.generic else _class(f"diffusers.{self.runner.adapter.class_name}")
    names = [n for n in inspect.signature(cls.decode).parameters if n not in ("self", "z", "args", "kwargs")]
    if len(args) > len(names):
      raise TypeError(f"decode() takes {len(names) + 1} positional arguments (z, {', '.join(names)}); got {len(args) + 1}")
    for name, value in zip(names, args):
      if name in kwargs:
        raise TypeError(f"decode() got multiple values for argument {name!r}")
      kwargs[name] = value
    return kwargs

  def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple[Any]:
    """``(B, 3, F, H, W)`` video in ``[-1, 1]`` -> ``AutoencoderKLOutput(latent_dist=...)``: diffusers'
    ``DiagonalGaussianDistribution`` (``sample(generator)``, ``mode()``) on ``x``'s device and dtype.
    A generic runner returns what the class's own encode returns (its output class, its posterior
    class built from the parameters, or its latent)."""
    if self.generic:
      return self._generic_encode(_tensor(x, "x"), return_dict)
    moments = _like(self._per_item(functools.partial(self.runner.encode_moments, check_finite=False), _tensor(x, "x")), x)
    posterior = DiagonalGaussianDistribution(moments)
    return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

  def _generic_encode(self, x: torch.Tensor, return_dict: bool) -> Any:
    made_of = []

    def tensors(item):
      out, what = self.runner.encode_output(item, check_finite=False)
      made_of.append(what)
      return out.get("parameters", out["latent"])

    value = _like(self._per_item(tensors, x), x)
    output_class, field, distribution_class = made_of[0]
    if distribution_class:
      value = _class(distribution_class)(value)
    if not return_dict:
      return (value,)
    return _class(output_class)(**{field: value}) if field and not field.isdigit() else (value,)

  def _per_item(self, fn, tensor: torch.Tensor) -> torch.Tensor:
    """``fn`` on the whole batch, or (slicing, as diffusers' ``use_slicing``) one item at a time."""
    if self.use_slicing and tensor.shape[0] > 1:
      return torch.cat([fn(item) for item in tensor.split(1)])
    return fn(tensor)


def _class(qualified: str) -> type:
  """``"diffusers.models.modeling_outputs.AutoencoderKLOutput"`` -> the class."""
  import importlib

  module, _, name = qualified.rpartition(".")
  return getattr(importlib.import_module(module), name)


def _tensor(value: Any, name: str) -> torch.Tensor:
  if not isinstance(value, torch.Tensor):
    raise TypeError(f"{name}: expected a torch.Tensor (what diffusers pipelines pass), got {type(value).__name__}")
  return value


def _like(result: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
  """``result`` (a CPU torch tensor: the runner gives back the kind it was given) on ``reference``'s
  device, in its dtype."""
  return result.to(device=reference.device, dtype=reference.dtype)


def attach(pipe: Any, vae: DiffusersVAE) -> Any:
  """``pipe.vae = vae``, and the scale factors a pipeline derives from its VAE in ``__init__`` set from
  this one's config, for a pipeline built with ``vae=None`` (which uses fallbacks: CogVideoX's scaling
  0.7, Wan's spatial factor 8). Returns ``pipe``."""
  pipe.vae = vae
  config = vae.config
  if "block_out_channels" in config and hasattr(pipe, "vae_scale_factor_spatial"):  # CogVideoX
    pipe.vae_scale_factor_spatial = 2 ** (len(config.block_out_channels) - 1)
    pipe.vae_scale_factor_temporal = config.temporal_compression_ratio
    pipe.vae_scaling_factor_image = config.scaling_factor
  elif "scale_factor_spatial" in config and hasattr(pipe, "vae_scale_factor_spatial"):  # Wan
    pipe.vae_scale_factor_spatial = config.scale_factor_spatial
    pipe.vae_scale_factor_temporal = config.scale_factor_temporal
  processor = getattr(pipe, "video_processor", None)
  if processor is not None and processor.config.vae_scale_factor != pipe.vae_scale_factor_spatial:
    pipe.video_processor = type(processor).from_config({**processor.config, "vae_scale_factor": pipe.vae_scale_factor_spatial})
  return pipe
