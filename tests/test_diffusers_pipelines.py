"""The drop-in VAE (``runner.as_diffusers()``) inside real diffusers pipelines.

Each pipeline is built from tiny random components (a tiny transformer, a tiny VAE config, a
scheduler; prompt embeddings passed in, so no text encoder) as diffusers' own pipeline tests build
them, and run twice with the same generator: with diffusers' VAE and with ours on the same weights.
The transformer runs in PyTorch both times; only the VAE differs. fp32 frames (the video processor's
[0, 1] output) agree within ``FRAMES_TOL``; as uint8, exactly or by one step. The frames with
diffusers' VAE are made once per run (``reference``) for every test of that pipeline; ours load
through the run's executable store, so a pipeline of the same VAE and size reuses the programs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import loaders

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")  # diffusers' video pipelines import it (their text encoders)

import diffusers  # noqa: E402

from torchax_vae.tracing.diffusers_vae import DiffusersVAE, attach  # noqa: E402

FRAMES_TOL = 1e-4  # max abs on the video processor's [0, 1] frames, fp32
COGVIDEOX_VAE = dict(  # diffusers' tests/pipelines/cogvideo: 8x space, 4x time
  in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
  block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
)  # fmt: skip
WAN_VAE = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
WAN_TRANSFORMER = dict(
  patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, out_channels=16, text_dim=32, freq_dim=256,
  ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
)  # fmt: skip

HUNYUAN_VIDEO_VAE = dict(latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4)
HUNYUAN_VIDEO_TRANSFORMER = dict(
  in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1, num_single_layers=1,
  num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8,
  rope_axes_dim=(2, 4, 4),
)  # fmt: skip

# diffusers' tests/pipelines/hunyuan_video1_5/test_hunyuan_1_5.py (get_dummy_components): 4x space, 2x time.
HUNYUAN_VIDEO15_VAE = dict(latent_channels=4, block_out_channels=(16, 16), layers_per_block=1, spatial_compression_ratio=4,
                           temporal_compression_ratio=2, downsample_match_channel=False, upsample_match_channel=False)  # fmt: skip
HUNYUAN_VIDEO15_TRANSFORMER = dict(
  in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1, num_refiner_layers=1,
  mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=32, image_embed_dim=12,
  rope_axes_dim=(2, 2, 4), target_size=16, task_type="t2v",
)  # fmt: skip

LTX_TRANSFORMER = dict(
  in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
  cross_attention_dim=32, num_layers=1, caption_channels=32,
)  # fmt: skip


def _saved(vae, directory):
  vae.save_pretrained(directory)
  return directory


@pytest.fixture(scope="module")
def cogvideox_vae(tmp_path_factory):
  torch.manual_seed(0)
  vae = diffusers.AutoencoderKLCogVideoX(**COGVIDEOX_VAE).eval()
  return vae, _saved(vae, tmp_path_factory.mktemp("cogvideox-vae"))


@pytest.fixture(scope="module")
def wan_vae(tmp_path_factory):
  torch.manual_seed(0)
  vae = diffusers.AutoencoderKLWan(**WAN_VAE).eval()
  return vae, _saved(vae, tmp_path_factory.mktemp("wan-vae"))


@pytest.fixture(scope="module")
def hunyuan_video_vae(tmp_path_factory):
  torch.manual_seed(0)
  vae = diffusers.AutoencoderKLHunyuanVideo(**HUNYUAN_VIDEO_VAE).eval()
  return vae, _saved(vae, tmp_path_factory.mktemp("hunyuan-video-vae"))


@pytest.fixture(scope="module")
def hunyuan_video15_vae(tmp_path_factory):
  torch.manual_seed(0)
  vae = diffusers.AutoencoderKLHunyuanVideo15(**HUNYUAN_VIDEO15_VAE).eval()
  return vae, _saved(vae, tmp_path_factory.mktemp("hunyuan-video15-vae"))


def _ltx_vae(tmp_path_factory, name, config):
  from compare.checkpoints import write_random_checkpoint

  directory = write_random_checkpoint(tmp_path_factory.mktemp(name), config, seed=0)  # latent statistics drawn
  return diffusers.AutoencoderKLLTXVideo.from_pretrained(directory).eval(), directory


@pytest.fixture(scope="module")
def ltx_090_vae(tmp_path_factory):
  from compare.checkpoints import TINY_LTX_VIDEO_090

  return _ltx_vae(tmp_path_factory, "ltx-0.9.0-vae", TINY_LTX_VIDEO_090)


@pytest.fixture(scope="module")
def ltx_091_vae(tmp_path_factory):
  from compare.checkpoints import TINY_LTX_VIDEO_091

  return _ltx_vae(tmp_path_factory, "ltx-0.9.1-vae", TINY_LTX_VIDEO_091)


def _embeds(seed: int) -> dict:
  g = torch.Generator().manual_seed(seed)
  return {"prompt_embeds": torch.randn(1, 16, 32, generator=g), "negative_prompt_embeds": torch.randn(1, 16, 32, generator=g)}


def cogvideox_t2v(vae):
  torch.manual_seed(0)
  transformer = diffusers.CogVideoXTransformer3DModel(
    num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2, text_embed_dim=32,
    num_layers=1, sample_width=2, sample_height=2, sample_frames=9, patch_size=2, temporal_compression_ratio=4,
    max_text_seq_length=16,
  )  # fmt: skip
  pipe = diffusers.CogVideoXPipeline(
    tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=diffusers.DDIMScheduler()
  )
  return pipe, dict(height=16, width=16, num_frames=8)


def cogvideox_i2v(vae):
  torch.manual_seed(0)
  transformer = diffusers.CogVideoXTransformer3DModel(
    num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4, time_embed_dim=2, text_embed_dim=32,
    num_layers=1, sample_width=2, sample_height=2, sample_frames=9, patch_size=2, temporal_compression_ratio=4,
    max_text_seq_length=16, use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True,
  )  # fmt: skip
  pipe = diffusers.CogVideoXImageToVideoPipeline(
    tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=diffusers.DDIMScheduler()
  )
  return pipe, dict(height=16, width=16, num_frames=8, image=_image(16, 16))


def wan_t2v(vae):
  torch.manual_seed(0)
  transformer = diffusers.WanTransformer3DModel(in_channels=16, **WAN_TRANSFORMER)
  scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0)
  pipe = diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler, transformer=transformer)
  return pipe, dict(height=16, width=16, num_frames=9)


def wan_i2v(vae):
  torch.manual_seed(0)
  transformer = diffusers.WanTransformer3DModel(in_channels=36, **WAN_TRANSFORMER)  # 16 latent + 4 mask + 16 condition
  scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0)
  pipe = diffusers.WanImageToVideoPipeline(
    tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler, transformer=transformer, image_processor=None,
    image_encoder=None,
  )  # fmt: skip
  return pipe, dict(height=16, width=16, num_frames=9, image=_image(16, 16))


class _HunyuanVideoEmbeds:
  """HunyuanVideoPipeline takes Llama prompt embeddings, their mask and CLIP's pooled ones (no text encoders)."""

  def __init__(self, pipe):
    self.pipe = pipe

  def __call__(self, prompt_embeds, negative_prompt_embeds, **kwargs):
    del negative_prompt_embeds  # true_cfg_scale 1: no negative pass
    g = torch.Generator().manual_seed(2)
    return self.pipe(prompt_embeds=prompt_embeds[:, :8, :16], pooled_prompt_embeds=torch.randn(1, 8, generator=g),
                     prompt_attention_mask=torch.ones(1, 8, dtype=torch.long), **kwargs)  # fmt: skip


def hunyuan_video_t2v(vae):
  torch.manual_seed(0)
  transformer = diffusers.HunyuanVideoTransformer3DModel(**HUNYUAN_VIDEO_TRANSFORMER)
  pipe = diffusers.HunyuanVideoPipeline(
    text_encoder=None, tokenizer=None, transformer=transformer, vae=vae, text_encoder_2=None, tokenizer_2=None,
    scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0),
  )  # fmt: skip
  return _HunyuanVideoEmbeds(pipe), dict(height=16, width=16, num_frames=25)  # 7 latent frames: two frame tiles


class _HunyuanVideo15Embeds:
  """HunyuanVideo15Pipeline takes Qwen2.5-VL and ByT5 prompt embeddings with their masks (no text
  encoders); its guider at scale 1 makes no negative pass."""

  def __init__(self, pipe):
    self.pipe = pipe

  def __call__(self, prompt_embeds, negative_prompt_embeds, guidance_scale, **kwargs):
    del negative_prompt_embeds, guidance_scale
    g = torch.Generator().manual_seed(2)
    return self.pipe(prompt_embeds=prompt_embeds[:, :8, :16], prompt_embeds_mask=torch.ones(1, 8, dtype=torch.long),
                     prompt_embeds_2=torch.randn(1, 4, 32, generator=g), prompt_embeds_mask_2=torch.ones(1, 4, dtype=torch.long),
                     **kwargs)  # fmt: skip


def hunyuan_video15_t2v(vae):
  from diffusers.guiders import ClassifierFreeGuidance

  torch.manual_seed(0)
  transformer = diffusers.HunyuanVideo15Transformer3DModel(**HUNYUAN_VIDEO15_TRANSFORMER)
  pipe = diffusers.HunyuanVideo15Pipeline(
    text_encoder=None, tokenizer=None, transformer=transformer, vae=vae, scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0),
    text_encoder_2=None, tokenizer_2=None, guider=ClassifierFreeGuidance(guidance_scale=1.0),
  )  # fmt: skip
  return _HunyuanVideo15Embeds(pipe), dict(height=16, width=16, num_frames=9)


class _LTXEmbeds:
  """LTXPipeline takes T5 prompt embeddings and their mask (no text encoder); guidance 1: no negative pass.
  The decode timestep and noise scale (used by a timestep-conditioned VAE) are the pipeline's arguments,
  its decode noise drawn with the pipeline's generator."""

  def __init__(self, pipe):
    self.pipe = pipe

  def __call__(self, prompt_embeds, negative_prompt_embeds, guidance_scale, **kwargs):
    del negative_prompt_embeds, guidance_scale
    return self.pipe(prompt_embeds=prompt_embeds[:, :8], prompt_attention_mask=torch.ones(1, 8, dtype=torch.long),
                     guidance_scale=1.0, decode_timestep=0.05, decode_noise_scale=0.025, **kwargs)  # fmt: skip


def ltx_t2v(vae):
  torch.manual_seed(0)
  transformer = diffusers.LTXVideoTransformer3DModel(**LTX_TRANSFORMER)
  pipe = diffusers.LTXPipeline(
    scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None, transformer=transformer
  )
  return _LTXEmbeds(pipe), dict(height=32, width=32, num_frames=9)


# diffusers' tests/pipelines/ltx2/testing_utils.py (get_ltx2_dummy_components), the Gemma text encoder left
# out (prompt embeddings passed in: 32 channels x 3 stacked layers, as its tiny config would make them).
LTX2_VAE = dict(
  latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,), layers_per_block=(1,),
  decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,), decoder_spatio_temporal_scaling=(True,),
  decoder_inject_noise=(False, False), downsample_type=("spatial",), upsample_residual=(False,), upsample_factor=(1,),
  timestep_conditioning=False, patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False,
)  # fmt: skip
LTX2_CAPTION_CHANNELS, LTX2_TEXT_LAYERS = 32, 3


@pytest.fixture(scope="module")
def ltx2_vae(tmp_path_factory):
  torch.manual_seed(0)
  vae = diffusers.AutoencoderKLLTX2Video(**LTX2_VAE).eval()
  return vae, _saved(vae, tmp_path_factory.mktemp("ltx2-vae"))


class _LTX2Embeds:
  """LTX2Pipeline takes the text encoder's stacked hidden states and their mask (no Gemma); every guidance
  off (scale 1, no STG), as diffusers' fast tests run it."""

  def __init__(self, pipe):
    self.pipe = pipe

  def __call__(self, prompt_embeds, negative_prompt_embeds, guidance_scale, **kwargs):
    del prompt_embeds, negative_prompt_embeds, guidance_scale
    embeds = torch.randn(1, 8, LTX2_CAPTION_CHANNELS * LTX2_TEXT_LAYERS, generator=torch.Generator().manual_seed(2))
    return self.pipe(prompt_embeds=embeds, prompt_attention_mask=torch.ones(1, 8, dtype=torch.long), guidance_scale=1.0,
                     stg_scale=0.0, modality_scale=1.0, guidance_rescale=0.0, audio_guidance_scale=1.0, audio_stg_scale=0.0,
                     audio_modality_scale=1.0, audio_guidance_rescale=0.0, spatio_temporal_guidance_blocks=None,
                     use_cross_timestep=False, frame_rate=25.0, **kwargs)  # fmt: skip


def ltx2_t2v(vae):
  from diffusers.pipelines.ltx2 import LTX2TextConnectors
  from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

  torch.manual_seed(0)
  transformer = diffusers.LTX2VideoTransformer3DModel(
    in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
    cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=4,
    audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads", caption_channels=LTX2_CAPTION_CHANNELS,
    rope_double_precision=False, rope_type="split",
  )  # fmt: skip
  torch.manual_seed(0)
  connectors = LTX2TextConnectors(
    caption_channels=LTX2_CAPTION_CHANNELS, text_proj_in_factor=LTX2_TEXT_LAYERS, video_connector_num_attention_heads=4,
    video_connector_attention_head_dim=8, video_connector_num_layers=1, video_connector_num_learnable_registers=None,
    audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
    audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_theta=10000.0,
    rope_double_precision=False, causal_temporal_positioning=False, rope_type="split",
  )  # fmt: skip
  torch.manual_seed(0)
  audio_vae = diffusers.AutoencoderKLLTX2Audio(
    base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2, resolution=32,
    latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0, mid_block_add_attention=False,
    sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8,
  )  # fmt: skip
  torch.manual_seed(0)
  vocoder = LTX2Vocoder(
    in_channels=16, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4], upsample_factors=[2, 2],
    resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]], leaky_relu_negative_slope=0.1, output_sampling_rate=16000,
  )  # fmt: skip
  pipe = diffusers.LTX2Pipeline(
    scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=vae, audio_vae=audio_vae, text_encoder=None, tokenizer=None,
    connectors=connectors, transformer=transformer, vocoder=vocoder,
  )  # fmt: skip
  return _LTX2Embeds(pipe), dict(height=32, width=32, num_frames=5)


def _image(height: int, width: int):
  from PIL import Image

  pixels = np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)
  return Image.fromarray(pixels)


def _frames(pipe, kwargs) -> np.ndarray:
  """The pipeline's video as the video processor's float frames in [0, 1], (F, 3, H, W)."""
  out = pipe(**_embeds(1), **kwargs, num_inference_steps=2, guidance_scale=6.0,
             generator=torch.Generator().manual_seed(0), output_type="pt")  # fmt: skip
  return out.frames[0].float().numpy()


PIPELINES = {
  "CogVideoXPipeline": (cogvideox_t2v, "cogvideox_vae"),
  "CogVideoXImageToVideoPipeline": (cogvideox_i2v, "cogvideox_vae"),
  "WanPipeline": (wan_t2v, "wan_vae"),
  "WanImageToVideoPipeline": (wan_i2v, "wan_vae"),
  "HunyuanVideoPipeline": (hunyuan_video_t2v, "hunyuan_video_vae"),
  "HunyuanVideo15Pipeline": (hunyuan_video15_t2v, "hunyuan_video15_vae"),
  "LTXPipeline-0.9.0": (ltx_t2v, "ltx_090_vae"),
  "LTXPipeline-0.9.1": (ltx_t2v, "ltx_091_vae"),  # timestep-conditioned: temb passed positionally, latents_mean/std read
  "LTX2Pipeline": (ltx2_t2v, "ltx2_vae"),  # its latent output is de-normalised already; audio decoded beside
}


def _diffusers_frames(reference, name, torch_vae) -> np.ndarray:
  """:func:`_frames` of pipeline ``name`` with diffusers' VAE (its module fixture's, seed 0), once per run."""
  return reference(f"diffusers-pipelines-{name}-frames", lambda: _frames(*PIPELINES[name][0](torch_vae)))


@pytest.mark.parametrize("name", list(PIPELINES))
def test_pipeline_with_the_drop_in_vae_makes_diffusers_frames(name, request, reference):
  build, vae_fixture = PIPELINES[name]
  torch_vae, directory = request.getfixturevalue(vae_fixture)
  expected = _diffusers_frames(reference, name, torch_vae)
  ours = loaders()["torchax"](directory).as_diffusers()
  got = _frames(*build(ours))
  assert got.shape == expected.shape
  err = float(np.abs(got - expected).max())
  assert err <= FRAMES_TOL, (name, err)
  as_uint8 = [np.round(f * 255).astype(np.int16) for f in (got, expected)]
  assert np.abs(as_uint8[0] - as_uint8[1]).max() <= 1


def test_assigned_over_a_loaded_pipeline_native_flax(wan_vae, reference):
  """``pipe.vae = ...`` on a pipeline built with diffusers' VAE; the native port this time."""
  torch_vae, directory = wan_vae
  pipe, kwargs = wan_t2v(torch_vae)
  expected = _diffusers_frames(reference, "WanPipeline", torch_vae)  # this pipe's frames before the assignment
  pipe.vae = loaders()["native_flax"](directory).as_diffusers()
  np.testing.assert_allclose(_frames(pipe, kwargs), expected, atol=FRAMES_TOL, rtol=0)


def test_attach_to_a_pipeline_built_without_a_vae(cogvideox_vae, reference):
  """A pipeline built with ``vae=None`` took diffusers' fallback factors; ``attach`` sets them from ours."""
  torch_vae, directory = cogvideox_vae
  expected = _diffusers_frames(reference, "CogVideoXPipeline", torch_vae)
  bare, kwargs = cogvideox_t2v(None)
  assert bare.vae_scaling_factor_image == 0.7  # the fallback, not this VAE's 1.15258426
  attach(bare, loaders()["torchax"](directory).as_diffusers())
  assert bare.vae_scaling_factor_image == pytest.approx(torch_vae.config.scaling_factor)
  np.testing.assert_allclose(_frames(bare, kwargs), expected, atol=FRAMES_TOL, rtol=0)


def test_interface_details(cogvideox_vae):
  torch_vae, directory = cogvideox_vae
  vae = loaders()["torchax"](directory, dtype="bfloat16").as_diffusers()
  assert isinstance(vae, DiffusersVAE) and vae.dtype == torch.bfloat16 and vae.device == torch.device("cpu")
  saved = json.loads((directory / "config.json").read_text())
  assert dict(vae.config) == {k: v for k, v in saved.items() if not k.startswith("_")}  # the whole config
  assert list(vae.modules()) == [vae] and not hasattr(vae, "_hf_hook") and bool(vae)
  z = torch.randn(2, 4, 2, 2, 2, dtype=torch.bfloat16)
  video = vae.decode(z, return_dict=False)[0]
  assert video.dtype == torch.bfloat16 and video.shape == (2, 3, 8, 16, 16)
  vae.enable_slicing()  # one item at a time, as diffusers' use_slicing
  torch.testing.assert_close(vae.decode(z).sample, video, atol=0, rtol=0)
  posterior = vae.encode(video.float()).latent_dist
  assert posterior.mode().dtype == torch.float32 and posterior.mode().shape == (2, 4, 2, 2, 2)
  vae.enable_tiling(tile_sample_min_height=8, tile_sample_min_width=8)
  assert vae.use_tiling and vae.runner.tiling.tile_sample_min_height == 8
  with pytest.raises(ValueError, match="this VAE runs in torch.bfloat16 .* load it with dtype='float32'"):
    vae.to(torch.float32)
  assert vae.to("meta").device == torch.device("meta")
  with pytest.raises(TypeError, match="z: expected a torch.Tensor"):
    vae.decode(np.zeros((1, 4, 2, 2, 2), np.float32))


# --- a class without an adapter: the generic path inside its pipeline ----------------------------------

FLUX_VAE = dict(  # diffusers' tests/pipelines/flux: no downsampling, 1 latent channel, Flux's scaling and shift
  sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1, latent_channels=1,
  norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
)  # fmt: skip
FLUX_TRANSFORMER = dict(
  patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
  joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
)  # fmt: skip


def _flux_image(vae) -> np.ndarray:
  torch.manual_seed(0)
  pipe = diffusers.FluxPipeline(
    scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), text_encoder=None, tokenizer=None, text_encoder_2=None,
    tokenizer_2=None, transformer=diffusers.FluxTransformer2DModel(**FLUX_TRANSFORMER), vae=vae,
  )  # fmt: skip
  g = torch.Generator().manual_seed(3)
  out = pipe(prompt_embeds=torch.randn(1, 8, 32, generator=g), pooled_prompt_embeds=torch.randn(1, 32, generator=g),
             height=16, width=16, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")  # fmt: skip
  return out.images[0]


def test_flux_pipeline_with_a_generic_vae(tmp_path):
  """AutoencoderKL has no adapter: ``as_diffusers()`` of its generic runner inside ``FluxPipeline``
  (``_unpack_latents``, ``/ scaling_factor + shift_factor``, ``decode(..., return_dict=False)[0]``)."""
  torch.manual_seed(0)
  torch_vae = diffusers.AutoencoderKL(**FLUX_VAE).eval()
  torch_vae.save_pretrained(tmp_path / "vae")
  expected = _flux_image(torch_vae)
  ours = loaders()["torchax"](tmp_path / "vae")
  assert ours.generic
  got = _flux_image(ours.as_diffusers())
  assert got.shape == expected.shape == (16, 16, 3)
  assert float(np.abs(got - expected).max()) <= FRAMES_TOL
