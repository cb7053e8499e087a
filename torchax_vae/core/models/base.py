"""What a model adapter declares: everything about a diffusers video VAE the driver needs and does not know.

The driver (``core.driver``) validates, places, walks frame steps and tiles, and hands results back;
it names no model. An adapter says, for one diffusers class:

* its frozen config dataclass (``config.json`` keys, diffusers' defaults) and the channel counts,
  spatial and temporal compression that follow from it;
* its frame plans: which frames each step of a decode/encode takes, and which program it runs
  (``"first"``: no cache in; ``"steady"``: the cache the previous step returned);
* what is done to a video before encoding and after decoding (Wan 2.2: patchify/unpatchify; Wan:
  clamp to [-1, 1]), and extra checks on an input video;
* its tiling rule (settings of ``enable_tiling`` -> :class:`~torchax_vae.core.tiling.TileGrid`);
* its temporal tiles, for a model diffusers decodes in overlapping frame tiles (HunyuanVideo, LTX:
  ``_temporal_tiled_decode``; settings -> :class:`~torchax_vae.core.tiling.TemporalTiles`), and
  whether that is on by default (diffusers' ``use_framewise_decoding``/``use_framewise_encoding``);
* its posterior (diffusers' ``DiagonalGaussianDistribution`` unless it says otherwise);
* how its pipelines turn their ``output_type="latent"`` output into the VAE's input.

Everything here is torch-free and jit-free: the step functions themselves come from a backend
(``torchax_vae.tracing.models.<name>`` for the unmodified diffusers module, ``native_flax`` for the ports).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import CheckpointError, StepSizeError
from ..tiling import TemporalTiles, TileGrid

FIRST, STEADY = "first", "steady"
DECODE, ENCODE = "decode", "encode"


class FrameStep(NamedTuple):
  """One step of a frame plan: frames ``[start, end)`` of the input, through program ``label``.

  ``pad``: zero frames appended to the step's frames so that it runs the program of the steps before
  it (a last, shorter step); the driver drops the output they make. Exact only for a model whose
  steps are causal in time (nothing a frame makes depends on a later frame: Wan).
  """

  start: int
  end: int
  label: str  # FIRST (cache None in) or STEADY (the previous step's cache in)
  pad: int = 0

  @property
  def size(self) -> int:
    """Frames the step's program takes (its frames and its padding)."""
    return self.end - self.start + self.pad


def plan_from_ranges(ranges: list[tuple[int, int]]) -> list[FrameStep]:
  """``[(start, end), …]`` -> frame steps, the first through the first-step program, the rest steady."""
  return [FrameStep(start, end, FIRST if i == 0 else STEADY) for i, (start, end) in enumerate(ranges)]


def stepped_plan(first: int, end: int, size: int) -> list[FrameStep]:
  """Frames ``[0, first)`` as the first step, then ``[first, end)`` in steady steps of ``size`` frames
  (``size`` at most what there is: a short input gets one shorter steady step, not a padded one); a
  shorter last step is padded to ``size``, so every steady step runs one program."""
  steps = [FrameStep(0, first, FIRST)]
  size = min(size, end - first)
  for start in range(first, end, max(size, 1)):
    stop = min(start + size, end)
    steps.append(FrameStep(start, stop, STEADY, start + size - stop))
  return steps


def config_from_dict(cls: type, class_name: str, raw: Mapping[str, Any], source: str) -> Any:
  """A frozen config dataclass from a ``config.json`` dict.

  ``_``-prefixed keys are diffusers metadata; ``_class_name``, when present, must be ``class_name``.
  Lists become tuples (frozen, hashable); keys the class does not take are ignored with a warning.
  """
  found = raw.get("_class_name", class_name)
  if found != class_name:
    raise CheckpointError(f"{source}: expected a {class_name} config, got _class_name={found!r}")
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(k for k in raw if not k.startswith("_") and k not in fields)
  if unknown:
    warnings.warn(f"{source}: ignoring config keys {class_name} does not take: {unknown}", stacklevel=4)
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in fields}
  try:
    return cls(**values)
  except TypeError as err:
    raise CheckpointError(f"{source}: not a valid {class_name} config: {err}") from err


def config_to_dict(config: Any) -> dict[str, Any]:
  """The diffusers ``config.json`` form (lists for tuples): the class's constructor arguments."""
  return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


class DiffusersConfig:
  """Base of the frozen config dataclasses: a diffusers class's ``config.json``, read and written.

  A subclass is a frozen dataclass whose fields are the class's constructor arguments (diffusers'
  defaults), sets ``class_name`` and checks what diffusers could not build in ``validate``.
  """

  class_name: ClassVar[str]

  @classmethod
  def from_dict(cls, raw: Mapping[str, Any], source: str = "config") -> Any:
    """Builds the config from a ``config.json`` dict; ``_``-prefixed keys are diffusers metadata."""
    config = config_from_dict(cls, cls.class_name, raw, source)
    config.validate(source)
    return config

  def to_dict(self) -> dict[str, Any]:
    """The diffusers ``config.json`` form (lists for tuples): ``DiffusersClass(**config.to_dict())``."""
    return config_to_dict(self)

  def validate(self, source: str = "config") -> None:
    """Raises :class:`CheckpointError` for a config diffusers could not build (default: no check)."""


@dataclasses.dataclass(frozen=True)
class TilingSettings:
  """Base of a model's ``enable_tiling`` arguments; subclasses list them as fields, in diffusers' order."""

  def updated(self, *args: Any, **kwargs: Any) -> TilingSettings:
    """``enable_tiling(*args, **kwargs)`` on top of these settings: ``None`` (or absent) keeps a value."""
    names = [f.name for f in dataclasses.fields(self)]
    if len(args) > len(names):
      raise TypeError(f"enable_tiling takes at most {len(names)} positional arguments ({', '.join(names)})")
    given = dict(zip(names, args))
    for name, value in kwargs.items():
      if name not in names:
        raise TypeError(f"enable_tiling: unexpected argument {name!r}; expected some of {names}")
      if name in given:
        raise TypeError(f"enable_tiling: {name!r} given twice")
      given[name] = value
    # diffusers: `value or current` — a falsy value (None, 0) keeps the current one.
    return dataclasses.replace(self, **{k: v for k, v in given.items() if v})


class VideoVAE:
  """A diffusers video VAE class as the driver sees it. One subclass per class, one instance per config."""

  name: ClassVar[str]  # short name: "cogvideox", "wan"
  class_name: ClassVar[str]  # the diffusers class: "AutoencoderKLCogVideoX"
  # Frozen dataclass of its config.json, with from_dict(raw, source), validate(source), to_dict().
  config_class: ClassVar[type]
  tiling_class: ClassVar[type[TilingSettings]]
  # The layout of what its pipelines return with output_type="latent" ("BTCHW" or "BCTHW").
  pipeline_layout: ClassVar[str]
  # Whether its pipelines scale latents by the config's scaling_factor (which a caller may override).
  scales_by_factor: ClassVar[bool] = False
  # diffusers' use_framewise_decoding / use_framewise_encoding defaults: temporal tiles on without
  # enable_tiling (HunyuanVideo). Only meaningful where temporal_tiles can return tiles.
  framewise_decoding: ClassVar[bool] = False
  framewise_encoding: ClassVar[bool] = False
  # Buffers of diffusers' module (weights, not config) its pipelines read as `vae.<name>` (LTX's latent
  # statistics): handed to latents_for_decode / latents_from_encode as `buffers`.
  module_buffers: ClassVar[tuple[str, ...]] = ()
  # For a model whose result does not depend on how many latent frames a steady step holds (Wan:
  # per-position norms, per-frame attention, causal convolutions): the default latent frames per
  # steady decode step on each platform ("cpu", "gpu", "tpu"; "*" for any other), a performance
  # choice made by measurement. ``None``: the plan is diffusers' own and fixed (CogVideoX's group
  # norm spans a step's frames; HunyuanVideo and LTX decode a frame tile in one step).
  frames_per_step_defaults: ClassVar[Mapping[str, int] | None] = None

  def __init__(self, config: Any):
    if not isinstance(config, self.config_class):
      raise TypeError(f"{type(self).__name__}: expected a {self.config_class.__name__}, got {type(config).__name__}")
    self.config = config

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.class_name})"

  @classmethod
  def config_from_dict(cls, raw: Mapping[str, Any], source: str = "config") -> Any:
    """The frozen config (checked: its ``validate``) of a ``config.json`` dict of this class."""
    return cls.config_class.from_dict(raw, source)

  # --- channels and compression ------------------------------------------------------------------

  @property
  def latent_channels(self) -> int:
    """The config's ``latent_channels`` (diffusers' name in most classes; Wan says ``z_dim``)."""
    return self.config.latent_channels

  @property
  def sample_channels(self) -> int:
    """Channels of the video a user encodes and gets from decode (3): the config's ``in_channels``."""
    return self.config.in_channels

  @property
  def spatial_compression(self) -> int:
    """Sample pixels per latent pixel along H and W (as the model's tiling counts them)."""
    raise NotImplementedError

  def module_attributes(self) -> dict[str, Any]:
    """Attributes of diffusers' module (not its config) that the model's pipelines read (HunyuanVideo:
    ``spatial_compression_ratio``, ``temporal_compression_ratio``); default none."""
    return {}

  # --- frame plans ---------------------------------------------------------------------------------

  def decode_plan(self, num_latent_frames: int, frames_per_step: int = 1) -> list[FrameStep]:
    """The steps of a decode; ``frames_per_step`` (latent frames a steady step takes) only for a
    model with :attr:`frames_per_step_defaults`."""
    raise NotImplementedError

  def encode_plan(self, num_frames: int, frames_per_step: int = 1) -> list[FrameStep]:
    """The steps of an encode; ``frames_per_step``: latent frames a steady step makes (see
    :meth:`decode_plan`)."""
    raise NotImplementedError

  def plan(self, kind: str, num_frames: int, frames_per_step: int | None = None) -> list[FrameStep]:
    """A ``kind`` walk's steps over ``num_frames``; ``frames_per_step`` (``None``: the model's fixed
    plan) only for a model with :attr:`frames_per_step_defaults`."""
    if kind not in (DECODE, ENCODE):
      raise ValueError(f"kind: expected {DECODE!r} or {ENCODE!r}, got {kind!r}")
    planner = self.decode_plan if kind == DECODE else self.encode_plan
    # frames_per_step was checked where it was set (the runner's check_frames_per_step), not per call
    return planner(num_frames) if frames_per_step is None else planner(num_frames, frames_per_step)

  def check_frames_per_step(self, frames_per_step: Any) -> int:
    """``frames_per_step`` checked: a positive int, for a model whose steps may hold any number."""
    if self.frames_per_step_defaults is None:
      raise StepSizeError(
        f"frames_per_step: {self.class_name}'s frame steps are diffusers' own and fixed (its result depends on "
        "how frames are grouped into steps); leave it unset"
      )
    if isinstance(frames_per_step, bool) or not isinstance(frames_per_step, int | np.integer) or frames_per_step < 1:
      raise StepSizeError(f"frames_per_step: expected a positive int (latent frames per steady step), got {frames_per_step!r}")
    return int(frames_per_step)

  def default_frames_per_step(self, platform: str) -> int | None:
    """The latent frames per steady step on ``platform`` (``None``: the model's plan is fixed)."""
    defaults = self.frames_per_step_defaults
    return None if defaults is None else defaults.get(platform, defaults["*"])

  def decoded_num_frames(self, num_latent_frames: int) -> int:
    """Frames a decode of ``num_latent_frames`` returns."""
    raise NotImplementedError

  def encodable_num_frames(self, num_frames: int) -> int:
    """The most frames, at most ``num_frames``, that encode with none dropped and decode back to as
    many (``1 + 4k`` for CogVideoX and Wan: 49 -> 13 latent frames -> 49); 0 when none do."""
    raise NotImplementedError

  def decoded_shape(self, latent_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The video ``(B, 3, F, H * s, W * s)`` an untiled decode of latents ``(B, C, T, H, W)`` returns."""
    b, _, t, h, w = latent_shape
    s = self.spatial_compression
    return (b, self.sample_channels, self.decoded_num_frames(t), h * s, w * s)

  # --- decode inputs besides the latents -----------------------------------------------------------

  def decode_condition(self, temb: Any, batch: int) -> tuple:
    """What the decode steps take besides the latents, from ``decode(z, temb)``'s ``temb``: ``()`` for a
    model whose diffusers decode has no ``temb`` (default: giving one is an error)."""
    if temb is not None:
      raise TypeError(f"temb: {self.class_name}'s decode takes no timestep (diffusers' decode(z) has none)")
    return ()

  def decode_condition_example(self, batch: int) -> Any:
    """A ``temb`` of the kind a decode of ``batch`` samples needs (``None``: none), for precompiling."""
    del batch
    return None

  # --- before encode / after decode (driver layout: (B, C, T, H, W), jax arrays) -------------------

  def check_sample(self, x: jax.Array, name: str) -> None:
    """Checks beyond rank, channels and dtype on a video to encode (default: none)."""

  def before_encode(self, x: jax.Array) -> jax.Array:
    """The video as the encoder's first step takes it (default: as it is)."""
    return x

  def after_decode(self, video: jax.Array) -> jax.Array:
    """The decoder's stitched output as ``decode`` returns it (default: as it is)."""
    return video

  def posterior(self, moments: jax.Array, key: jax.Array | None) -> jax.Array:
    """diffusers' ``DiagonalGaussianDistribution`` on ``mean ‖ logvar`` (channels): mode, or a keyed sample."""
    if key is None:
      return _posterior_mode(moments)
    if not isinstance(key, jax.Array | np.ndarray):
      raise TypeError(f"key: expected a JAX PRNG key (jax.random.key(seed)), got {type(key).__name__}")
    return _posterior_sample(moments, key)

  # --- tiling ----------------------------------------------------------------------------------------

  def default_tiling(self) -> TilingSettings:
    raise NotImplementedError

  def tile_grid(self, tiling: TilingSettings, kind: str, height: int, width: int) -> TileGrid | None:
    """The tiles of a ``kind`` walk over an input of ``(height, width)`` (as the caller gave it), or
    ``None`` when the model decodes/encodes that input whole."""
    raise NotImplementedError

  def framewise_flag(self, kind: str) -> str:
    """The runner attribute (diffusers' of that name) that switches ``kind``'s frame tiles on."""
    return "use_framewise_decoding" if kind == DECODE else "use_framewise_encoding"

  def temporal_tiles(
    self, tiling: TilingSettings, kind: str, num_frames: int, *, framewise: bool
  ) -> TemporalTiles | None:
    """The frame tiles of a ``kind`` walk over ``num_frames`` input frames, or ``None`` when the model
    walks them with its frame plan (streaming with a cache, or one step). ``tiling``: the current
    ``enable_tiling`` values (kept while tiling is off, as diffusers keeps them); ``framewise``:
    diffusers' ``use_framewise_decoding``/``use_framewise_encoding``. Default: never tiled in time."""
    del tiling, kind, num_frames, framewise
    return None

  # --- pipelines -------------------------------------------------------------------------------------

  def latents_for_decode(
    self, latents: jax.Array, vae_dtype: Any = None, scaling_factor: float | None = None
  ) -> jax.Array:
    """What the model's pipelines do to their latents (``(B, C, T, H, W)``) before ``vae.decode``.

    ``vae_dtype``: the VAE's dtype (pipelines that cast the latents to it first do so here);
    ``scaling_factor`` overrides the config's, for models whose pipelines scale by one (CogVideoX).
    """
    raise NotImplementedError

  def describe_latent_scaling(self, scaling_factor: float | None = None) -> str:
    """How :meth:`latents_for_decode` scales, in a few words (for messages)."""
    raise NotImplementedError

  def unpack_latents(self, latents: jax.Array, video_shape: tuple[int, int, int] | None) -> jax.Array:
    """The pipeline's ``output_type="latent"`` output as the 5-D latents :meth:`latents_for_decode`
    takes; only packed-token pipelines (LTX's ``(B, S, D)``) change anything. Default: as it is."""
    del video_shape
    return latents

  def decode_timestep_inputs(
    self, latents: jax.Array, decode_timestep: Any, decode_noise_scale: Any, noise: Any, *, buffers: dict | None = None
  ) -> tuple[jax.Array, Any]:
    """``(latents, temb)`` as a timestep-conditioned decoder's pipeline hands them to ``vae.decode``
    (LTX: noise mixed in; ``buffers``: as for :meth:`latents_for_decode`); default: no timestep
    (``decode_timestep`` must be ``None``)."""
    del noise, buffers
    if decode_timestep is not None or decode_noise_scale is not None:
      raise ValueError(f"decode_timestep/decode_noise_scale: {self.class_name}'s decoder takes no timestep")
    return latents, None

  @property
  def takes_decode_timestep(self) -> bool:
    """Whether decode needs ``temb`` (LTX 0.9.1 on), so that pipelines draw decode noise."""
    return self.decode_condition_example(1) is not None

  def latents_from_encode(self, latents: jax.Array) -> jax.Array:
    """The inverse of :meth:`latents_for_decode` on ``vae.encode``'s latents ``(B, C, T, H, W)``: the
    diffusion model's latents in the pipeline's layout, as the model's training scripts cache them
    (and its image-to-video pipelines condition on them), so that :meth:`latents_for_decode` of the
    result is ``latents`` again."""
    raise NotImplementedError


@jax.jit
def _posterior_mode(moments: jax.Array) -> jax.Array:
  mean, _ = jnp.split(moments, 2, axis=1)
  return mean


@jax.jit
def _posterior_sample(moments: jax.Array, key: jax.Array) -> jax.Array:
  # diffusers DiagonalGaussianDistribution: logvar clamped to [-30, 20], std = exp(logvar / 2).
  mean, logvar = jnp.split(moments, 2, axis=1)
  std = jnp.exp(0.5 * jnp.clip(logvar, -30.0, 20.0))
  noise = jax.random.normal(key, mean.shape, dtype=jnp.float32).astype(mean.dtype)
  return mean + std * noise
