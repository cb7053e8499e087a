"""Small configs of every autoencoder class diffusers exports, for ``compare.conformance`` and the tests.

One :class:`Case` per class name (``diffusers.models.autoencoders``), each with the source of its config
(diffusers' own model tests, ``tests/models/autoencoders/test_models_*.py``, where they have one; else
the class's defaults shrunk, said so). A class diffusers exports that has no case here is a row of its
own in the table ("no small config"), so a class a later diffusers adds shows up.
"""

from __future__ import annotations

import dataclasses
from typing import Any

IMAGE, VIDEO, AUDIO, OTHER = "image", "video", "audio", "other"


@dataclasses.dataclass(frozen=True)
class Case:
  """A class at a small config, and the inputs its decode / encode take."""

  config: dict[str, Any]  # constructor arguments (config.json without the _ keys)
  source: str  # where the config comes from
  kind: str  # IMAGE, VIDEO, AUDIO or OTHER
  decode_input: tuple[int, ...] | None  # latent shape decode takes; None: the class has no tensor decode
  encode_input: tuple[int, ...] | None  # sample shape encode takes; None: no tensor encode
  decode_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra keywords (num_frames=…)
  encode_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  # Video classes: a second latent frame count (decode_input's T is the first), for the programs-vs-T column.
  other_frames: int | None = None
  # enable_tiling(**tiling) that splits decode_input (and encode_input), for the tiled parity check.
  tiling: dict[str, Any] | None = None
  # What diffusers itself requires of this case (e.g. "tiling on"): the conformance run does the same.
  needs_tiling: bool = False
  note: str = ""  # what the row should say beyond the numbers


CASES: dict[str, Case] = {}

# Classes whose row is not exact, and why (tests/test_conformance.py expects them to fail, strictly).
NOT_EXACT: dict[str, str] = {
  "ConsistencyDecoderVAE": (
    "decode is a 2-step consistency-model sampler that draws noise (randn_tensor, no generator), so diffusers "
    "itself has no fixed output to match; and its scheduler finds the step by torch.where(timesteps == t)[0], "
    "a data-dependent shape a traced program cannot have (BridgeError). Its encode (a KL encoder) is exact."
  ),
  "LTX2VideoDiffusionDecoderModel": (
    "a diffusion decoder: decode draws noise (randn_tensor, no generator), so diffusers itself has no fixed "
    "output to match; its attention masks come from flex_attention's create_block_mask, which vmaps a Python "
    "mask function (torchax cannot trace it) and runs through torch.compile, which fails in any process where "
    "torchax has registered its 'jax' device. No encode."
  ),
}


# Image and other classes (2026-12-04; each verified in torch: decode twice identical and finite,
# encode gives decode_input's shape, tiling splits the input and keeps the output's shape).
CASES.update({
  "AsymmetricAutoencoderKL": Case(
    config={
      "in_channels": 3, "out_channels": 3,
      "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"], "down_block_out_channels": [2, 4],
      "layers_per_down_block": 1,
      "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "up_block_out_channels": [2, 4],
      "layers_per_up_block": 1, "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 2,
      "sample_size": 32, "scaling_factor": 0.18215,
    },
    source="diffusers tests/models/autoencoders/test_models_asymmetric_autoencoder_kl.py (get_init_dict)",
    kind=IMAGE, decode_input=(2, 4, 12, 16), encode_input=(2, 3, 24, 32),
    note="decode without image/mask (MaskConditionDecoder's mask branch off); no tiling (enable_tiling raises NotImplementedError: no use_tiling)",
  ),
  "AutoencoderKL": Case(
    config={
      "block_out_channels": [2, 4], "in_channels": 3, "out_channels": 3,
      "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
      "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
      "latent_channels": 4, "norm_num_groups": 2, "sample_size": 16,
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_kl.py (get_init_dict), sample_size=16 so the default tiles split",
    kind=IMAGE, decode_input=(2, 4, 12, 16), encode_input=(2, 3, 24, 32),
    tiling={},
    note="enable_tiling() takes no arguments: the tile size comes from config sample_size (16 px / 8 latent), splitting decode into 2x3 tiles, same shape",
  ),
  "AutoencoderDC": Case(
    config={
      "in_channels": 3, "latent_channels": 4, "attention_head_dim": 2,
      "encoder_block_types": ["ResBlock", "EfficientViTBlock"],
      "decoder_block_types": ["ResBlock", "EfficientViTBlock"],
      "encoder_block_out_channels": [8, 8], "decoder_block_out_channels": [8, 8],
      "encoder_qkv_multiscales": [[], [5]], "decoder_qkv_multiscales": [[], [5]],
      "encoder_layers_per_block": [1, 1], "decoder_layers_per_block": [1, 1],
      "downsample_block_type": "conv", "upsample_block_type": "interpolate",
      "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu", "scaling_factor": 0.41407,
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_dc.py (get_init_dict)",
    kind=IMAGE, decode_input=(2, 4, 12, 16), encode_input=(2, 3, 24, 32),
    tiling={"tile_sample_min_height": 16, "tile_sample_min_width": 16,
            "tile_sample_stride_height": 12, "tile_sample_stride_width": 12},
    note="tiling splits decode (and encode) into 2x3 tiles, same shape",
  ),
  "AutoencoderTiny": Case(
    config={
      "in_channels": 3, "out_channels": 3,
      "encoder_block_out_channels": [32, 32], "decoder_block_out_channels": [32, 32],
      "num_encoder_blocks": [1, 1], "num_decoder_blocks": [1, 1],
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_tiny.py (get_init_dict)",
    kind=IMAGE, decode_input=(2, 4, 16, 24), encode_input=(2, 3, 32, 48),
    note="tiling: default tile sizes only (enable_tiling takes no arguments; 512 px / 64 latent tiles); once enabled every decode takes the tiled path, which assumes 2**out_channels = 8x scaling: with this 2x config it raises RuntimeError (size mismatch)",
  ),
  "VQModel": Case(
    config={
      "block_out_channels": [8, 16], "norm_num_groups": 8, "in_channels": 3, "out_channels": 3,
      "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
      "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "latent_channels": 3,
    },
    source="diffusers tests/models/autoencoders/test_models_vq.py (get_init_dict)",
    kind=IMAGE, decode_input=(2, 3, 12, 16), encode_input=(2, 3, 24, 32),
    note="decode quantizes (nearest codebook entry, argmin) before decoding and also returns commit_loss; encode returns the unquantized latents; no tiling (enable_tiling raises NotImplementedError)",
  ),
  "ConsistencyDecoderVAE": Case(
    config={
      "encoder_block_out_channels": [2, 4], "encoder_in_channels": 3, "encoder_out_channels": 4,
      "encoder_down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
      "decoder_add_attention": False, "decoder_block_out_channels": [2, 4],
      "decoder_down_block_types": ["ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"],
      "decoder_downsample_padding": 1, "decoder_in_channels": 7, "decoder_layers_per_block": 1,
      "decoder_norm_eps": 1e-05, "decoder_norm_num_groups": 2, "encoder_norm_num_groups": 2,
      "decoder_num_train_timesteps": 1024, "decoder_out_channels": 6,
      "decoder_resnet_time_scale_shift": "scale_shift", "decoder_time_embedding_type": "learned",
      "decoder_up_block_types": ["ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"],
      "scaling_factor": 1, "latent_channels": 4,
    },
    source="diffusers tests/models/autoencoders/test_models_consistency_decoder_vae.py (get_init_dict)",
    kind=IMAGE, decode_input=(2, 4, 12, 16), encode_input=(2, 3, 24, 32),
    note="decode draws random noise (randn_tensor: initial x_t and the scheduler step's noise; num_inference_steps=2 by default), so two calls differ unless a generator is passed; non-persistent buffers means, stds (latent normalisation); tiling: encode only (tiled_encode from config sample_size), decode has no tiled path",
  ),
  "AutoencoderKLFlux2": Case(
    config={
      "in_channels": 3, "out_channels": 3,
      "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
      "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
      "block_out_channels": [4, 8], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 2,
      "sample_size": 16, "use_quant_conv": True, "use_post_quant_conv": True,
    },
    source="diffusers tests/pipelines/flux2/test_pipeline_flux2.py (get_dummy_components vae), widened to 2 blocks (4, 8), 4 latent channels, 2 norm groups and quant convs so down/upsamplers and quant convs run; sample_size=16 so the default tiles split",
    kind=IMAGE, decode_input=(2, 4, 12, 16), encode_input=(2, 3, 24, 32),
    tiling={},
    note="enable_tiling() takes no arguments: the tile size comes from config sample_size (16 px / 8 latent), splitting decode into 2x3 tiles, same shape; the bn (BatchNorm2d running stats over the 2x2-patchified latents) is a persistent buffer decode/encode never use (the pipeline applies it)",
  ),
  "AutoencoderKLHunyuanImage": Case(
    config={
      "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [32, 32],
      "layers_per_block": 1, "scaling_factor": 0.476986, "spatial_compression_ratio": 2, "sample_size": 32,
    },
    source="diffusers tests/pipelines/hunyuan_image_21/test_hunyuanimage.py (get_dummy_components vae) shrunk to 2 levels of 32 (GroupNorm is fixed at 32 groups)",
    kind=IMAGE, decode_input=(2, 4, 12, 16), encode_input=(2, 3, 24, 32),
    tiling={"tile_sample_min_size": 16, "tile_overlap_factor": 0.25},
    note="tiling splits decode into 2x3 tiles, same shape; diffusers' tiled_encode is broken for this 2-D class (unpacks 5 dims from a 4-D image: ValueError), so tiling is decode-only; GroupNorm is fixed at 32 groups (widths must be multiples of 32)",
  ),
  "AutoencoderKLHunyuanImageRefiner": Case(
    config={
      "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [8, 16, 16],
      "layers_per_block": 1, "spatial_compression_ratio": 4, "temporal_compression_ratio": 2,
    },
    source="class defaults shrunk (3 levels: a spatial-only and a spatial+temporal DCAE down/upsample, mid attention)",
    kind=VIDEO, decode_input=(2, 4, 2, 6, 8), encode_input=(2, 3, 2, 24, 32), other_frames=4,
    tiling={"tile_sample_min_height": 16, "tile_sample_min_width": 16},
    note="5-D (B,C,T,H,W) with no temporal compression: the 'temporal' DCAE down/upsample only regroups channels, so T latent frames decode to T frames; mid-block attention over all T*H*W tokens; tiling: diffusers' tiled_decode crops and blends the decoded tiles with latent-unit sizes, so the tiled output shape differs ((2,3,2,6,9) vs (2,3,2,24,32)) and tiled_encode raises RuntimeError; the stride arguments of enable_tiling are never used",
  ),
  "AutoencoderKLKVAE": Case(
    config={
      "in_channels": 3, "channels": 32, "num_enc_blocks": 1, "num_dec_blocks": 1, "z_channels": 4,
      "double_z": True, "ch_mult": [1, 2], "sample_size": 16,
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_kl_kvae.py (get_init_dict), sample_size=16 so the default tiles split",
    kind=IMAGE, decode_input=(2, 4, 12, 16), encode_input=(2, 3, 24, 32),
    tiling={},
    note="enable_tiling() takes no arguments: the tile size comes from config sample_size (16 px / 8 latent), splitting decode into 2x3 tiles, same shape; widths 32/64 because GroupNorm is fixed at 32 groups (637K params)",
  ),
  "AutoencoderKLQwenImage": Case(
    config={
      "base_dim": 8, "z_dim": 4, "dim_mult": [1, 2, 4], "num_res_blocks": 1,
      "temperal_downsample": [False, True], "latents_mean": [0.0, 0.0, 0.0, 0.0], "latents_std": [1.0, 1.0, 1.0, 1.0],
    },
    source="diffusers tests/pipelines/qwenimage/test_qwenimage.py (get_dummy_components vae), base_dim 24 -> 8",
    kind=VIDEO, decode_input=(2, 4, 3, 6, 8), encode_input=(2, 3, 5, 24, 32), other_frames=5,
    tiling={"tile_sample_min_height": 16, "tile_sample_min_width": 16,
            "tile_sample_stride_height": 12, "tile_sample_stride_width": 12},
    note="Wan-2.1-style causal video VAE (one temporal up/downsample): n latent frames decode to 1+2(n-1) frames, encode reads 1+4k frames in 4-frame chunks (5 -> 3, 9 -> 5); decode clamps to [-1, 1]; tiling splits decode into 2x3 tiles, same shape",
  ),
  "AutoencoderKLQwenImage21": Case(
    config={
      "base_dim": 4, "decoder_base_dim": 4, "z_dim": 4, "dim_mult": [1, 1, 1, 1, 1], "num_res_blocks": 1,
      "attn_scales": [], "temperal_downsample": [False, True, True, True],
      "latents_mean": [0.0, 0.0, 0.0, 0.0], "latents_std": [1.0, 1.0, 1.0, 1.0],
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_kl_qwenimage21.py (get_init_dict)",
    kind=VIDEO, decode_input=(2, 4, 1, 4, 6), encode_input=(2, 4, 1, 64, 96),
    tiling={"tile_sample_min_height": 48, "tile_sample_min_width": 48,
            "tile_sample_stride_height": 32, "tile_sample_stride_width": 32},
    note="an image VAE in 5-D layout: T must be 1 (its causal convs are 2-D image specializations that squeeze the frame axis; T > 1 raises RuntimeError in decode, ValueError in encode), so no second frame count; 4 channels in and out (RGBA); 16x spatial; decode clamps to [-1, 1]; tiling splits decode into 2x3 tiles, same shape",
  ),
  "AutoencoderRAE": Case(
    config={
      "encoder_type": "dinov2", "encoder_hidden_size": 64, "encoder_patch_size": 14, "encoder_num_hidden_layers": 1,
      "encoder_input_size": 56, "patch_size": 4, "image_size": 16,
      "decoder_hidden_size": 32, "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 4,
      "decoder_intermediate_size": 64, "num_channels": 3,
      "encoder_norm_mean": [0.5, 0.5, 0.5], "encoder_norm_std": [0.5, 0.5, 0.5],
      "noise_tau": 0.0, "reshape_to_2d": True, "scaling_factor": 1.0,
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_rae.py (get_init_dict) decoder sizes, with a real 1-layer dinov2 encoder (head_dim 64 fixed, so hidden 64) instead of the test's monkey-patched tiny_test encoder",
    kind=IMAGE, decode_input=(2, 64, 4, 4), encode_input=(2, 3, 32, 48),
    note="latent grid is fixed and square (encoder_input_size / encoder_patch_size = 4): encode resizes any input to 56x56 (bicubic), decode always gives image_size 16x16; encoder is transformers' Dinov2WithRegistersModel (needs transformers); non-persistent buffer decoder.decoder_pos_embed (sincos); no tiling (enable_tiling raises NotImplementedError)",
  ),
  "AutoencoderSAME": Case(
    config={
      "audio_channels": 2, "patch_size": 4, "encoder_channels": 16, "encoder_c_mults": [1, 2],
      "encoder_strides": [2, 2], "encoder_transformer_depths": [1, 1], "latent_dim": 8,
      "use_differential_attention": True, "dim_heads": 8, "ff_mult": 2, "sampling_rate": 44100,
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_same.py (TINY_CFG), use_differential_attention=True (the class default) so differential attention runs",
    kind=AUDIO, decode_input=(2, 8, 8), encode_input=(2, 2, 128),
    note="waveform (B, audio_channels, T), 16x downsampling (patch 4 x strides 2, 2); non-persistent buffers: rope inv_freq in each of the 4 transformer blocks; diffusers' init zeroes the attention to_out and ff proj_out weights, so with random weights the transformer blocks are identity (attention is not exercised numerically); no tiling",
  ),
  "Kandinsky6SRVAE": Case(
    config={
      "in_channels": 3, "out_channels": 3, "latent_channels": 4,
      "encoder_block_out_channels": [4, 8, 8], "decoder_block_out_channels": [4, 8, 8],
      "layers_per_block": 1, "temporal_compression_ratio": 4, "temporal_compression_start_level": 0,
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_kandinsky6_sr.py (get_init_dict)",
    kind=VIDEO, decode_input=(2, 4, 3, 4, 6), encode_input=(2, 3, 9, 16, 24), other_frames=6,
    note="causal 3D VAE: n latent frames decode to 1+4(n-1) frames; decode runs in segments of 4 latent frames carrying the causal padding cache (other_frames=6 spans 2 segments); no enable_tiling (not an AutoencoderMixin)",
  ),
  "RFD4ProteinaAutoencoder": Case(
    config={
      "atom37_mask": [
        [False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False],
        [True, True, True, True, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False],
        [True, True, True, True, True, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False, False],
      ],
      "allowed_residue_types": [
        [False, True, True],
        [False, True, False],
        [False, True, False],
        [False, True, False],
        [False, True, False],
        [False, True, False],
        [False, True, False],
      ],
      "latent_dim": 4, "n_residue_types": 3, "num_token_types": 7, "nlayers": 1, "token_dim": 32, "nheads": 2,
      "dim_cond": 16, "pair_repr_dim": 8, "token_type_emb_dim": 8,
    },
    source="class defaults shrunk (1 trunk layer each side, width 32, a 3-entry residue vocabulary)",
    kind=OTHER, decode_input=None, encode_input=None,
    note="a molecular autoencoder: encode/decode take several structured inputs (z_latent (B,N,latent_dim) or coords_nm (B,N,37,3), ca_coors_nm (B,N,3), padding_mask (B,N), token_type, and a conditioning dict with is_in_context_conditioning / supports_local_latent / ...), not one tensor, so there is no tensor decode/encode case; encode samples noise (torch.randn_like) unless a generator is given; non-persistent buffers decoder._atom37_mask, decoder._allowed_residue_types; _keep_in_fp32_modules: from_pretrained raises ValueError when accelerate is not installed",
  ),
  "AutoencoderKLMiniMaxH3": Case(
    config={
      "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [8, 16], "layers_per_block": 1,
      "spatial_downsample_factors": [2, 2], "temporal_downsample_factors": [2, 2], "norm_num_groups": 8,
      "decoder_num_layers": 2, "decoder_num_attention_heads": 2, "decoder_attention_head_dim": 8,
      "decoder_num_register_tokens": 2, "decoder_ffn_mult": 2, "clip_length": 17, "token_drop": 3,
      "latents_mean": [0.0, 0.0, 0.0, 0.0], "latents_std": [1.0, 1.0, 1.0, 1.0],
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_kl_minimax_h3.py (get_init_dict)",
    kind=VIDEO, decode_input=(2, 4, 7, 3, 4), encode_input=(2, 3, 22, 12, 16), other_frames=12,
    tiling={"tile_sample_min_height": 8, "tile_sample_min_width": 8,
            "tile_sample_min_overlap_height": 4, "tile_sample_min_overlap_width": 4},
    note="17n+5 pixel frames <-> 5n+2 latent frames (clip_length 17, token_drop 3): 22 <-> 7, 39 <-> 12; use_tiling is True by default (256 px tiles), so plain decode already runs the tiled path with one tile; the given tiling splits 12x16 px into 2x3 tiles; diffusers' init zeroes the ViT decoder's layer scales (scale1/scale2) and register tokens, so with random weights the transformer blocks are identity and tiled == untiled exactly (attention is not exercised numerically); non-persistent buffer decoder.rope.inv_freq; _keep_in_fp32_modules: from_pretrained raises ValueError when accelerate is not installed",
  ),
  "AutoencoderVidTok": Case(
    config={
      "in_channels": 3, "out_channels": 3, "ch": 8, "ch_mult": [1, 2, 2], "z_channels": 3, "double_z": False,
      "num_res_blocks": 1, "regularizer": "fsq", "codebook_size": 512, "is_causal": True,
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_vidtok.py (get_init_dict) shrunk: ch 128 -> 8, 3 levels (the fewest the default 2 temporal down/upsamples need), codebook 8^3, is_causal=True (class default)",
    kind=VIDEO, decode_input=(2, 3, 3, 4, 6), encode_input=(2, 3, 12, 16, 24), other_frames=5,
    tiling={"tile_sample_min_height": 16, "tile_sample_min_width": 16,
            "tile_overlap_factor_height": 0.25, "tile_overlap_factor_width": 0.25},
    note="causal: n latent frames decode to 1+4(n-1) frames; encode takes the front-padded clip (forward() replicates the first frame tcr-1 = 3 times before encode), so 12 frames -> 3 latents; fsq regularizer: encode returns a (quantized z, indices) tuple, decode takes continuous z; non-persistent buffers regularization._levels, _basis, implicit_codebook (512x3), zero; once enabled, tiling always takes the tiled path (no size check); the given tiling splits decode into 2x2 tiles x 2 temporal chunks, same shape",
  ),
  "MMAudioVocoder": Case(
    config={
      "num_mels": 8, "upsample_initial_channel": 8, "upsample_rates": [2, 2], "upsample_kernel_sizes": [4, 4],
      "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3]],
    },
    source="diffusers tests/models/autoencoders/test_models_vocoder.py (get_init_dict)",
    kind=AUDIO, decode_input=None, encode_input=None,
    note="a vocoder: forward(mel (B, num_mels, frames)) -> waveform (B, 1, 4*frames), no decode/encode (checked (2, 8, 16) -> (2, 1, 64)); the BigVGAN kaiser-sinc filters are persistent buffers",
  ),
  "MiniMaxMusic3Vocoder": Case(
    config={
      "latent_channels": 8, "decoder_input_dim": 16, "decoder_hidden_dim": 16, "upsampling_ratios": [2, 2],
      "sampling_rate": 44100,
    },
    source="class defaults shrunk (2 upsampling blocks, widths 16 -> 8 -> 4)",
    kind=AUDIO, decode_input=None, encode_input=None,
    note="a vocoder: forward(latents (B, latent_channels, L)) -> stereo waveform (B, 2, 4L) (the two channels are decoded as two latent_channels/2 streams), no decode/encode (checked (2, 8, 10) -> (2, 2, 40)); weight_norm convs",
  ),
})


# Video and audio classes (2026-12-04; verified in torch as above, and decode at other_frames).
CASES.update({
  "AutoencoderKLAllegro": Case(
    config={
      "in_channels": 3,
      "out_channels": 3,
      "down_block_types": ("AllegroDownBlock3D", "AllegroDownBlock3D", "AllegroDownBlock3D", "AllegroDownBlock3D"),
      "up_block_types": ("AllegroUpBlock3D", "AllegroUpBlock3D", "AllegroUpBlock3D", "AllegroUpBlock3D"),
      "block_out_channels": (8, 8, 8, 8),
      "latent_channels": 4,
      "layers_per_block": 1,
      "norm_num_groups": 2,
      "temporal_compression_ratio": 4,
      "sample_size": 16,
    },
    source=(
      "diffusers tests/models/autoencoders/test_models_autoencoder_kl_allegro.py (get_autoencoder_kl_allegro_config; "
      "test removed upstream in Oct 2024) + sample_size=16"
    ),
    kind=VIDEO,
    decode_input=(1, 4, 6, 2, 2),
    encode_input=(1, 3, 24, 16, 16),
    other_frames=10,
    tiling={},
    needs_tiling=True,
    note=(
      "0.42.1 decodes and encodes only with tiling on (otherwise NotImplementedError), so needs_tiling; enable_tiling()"
      " takes no arguments. The tile is (24 frames, sample_size, sample_size) px with hard-coded overlaps of 8 frames /"
      " 120 px (H) / 80 px (W): latent kernel (6, sample_size/8, sample_size/8), latent stride (4, (sample_size-120)/8,"
      " (sample_size-80)/8). sample_size must be a multiple of 8; the smallest that works is 8 (a 1x1 latent, 24x8x8 "
      "video), 16 is used here so the latent has spatial extent. With sample_size=16 the input must be exactly one "
      "6x2x2 latent tile (24x16x16 video): a larger H/W gives a negative stride and zero tiles (all-zero output), H == "
      "W is forced, and a spatial split needs sample_size > 120 (e.g. 128: latent 17x22 -> 2x2 tiles), too big for a "
      "small case. T decides the loop: decoder calls = (floor((T-6)/4)+1) x spatial tiles (T=6: 1, T=10: 2); T not 6+4k"
      " leaves trailing frames zero. Batch must be 1: each tile is copied into a batch-1 buffer (B=2 raises "
      "RuntimeError in expand). Output layout is (B, F, C, H, W) (tiled_decode permutes), not (B, C, F, H, W). No non-"
      "persistent buffers."
    ),
  ),
  "AutoencoderKLCosmos": Case(
    config={
      "in_channels": 3,
      "out_channels": 3,
      "latent_channels": 4,
      "encoder_block_out_channels": (8, 8, 8, 8),
      "decode_block_out_channels": (8, 8, 8, 8),
      "attention_resolutions": (8,),
      "resolution": 64,
      "num_layers": 2,
      "patch_size": 4,
      "patch_type": "haar",
      "scaling_factor": 1.0,
      "spatial_compression_ratio": 8,
      "temporal_compression_ratio": 8,
    },
    source=(
      "diffusers tests/models/autoencoders/test_models_autoencoder_cosmos.py (get_init_dict), "
      "spatial/temporal_compression_ratio 4 -> 8 so the down/upsample convs are built and run"
    ),
    kind=VIDEO,
    decode_input=(2, 4, 2, 4, 6),
    encode_input=(2, 3, 9, 32, 48),
    other_frames=3,
    tiling=None,
    note=(
      "enable_tiling(...) is accepted but a no-op in 0.42.1 (_encode/_decode never read use_tiling or use_framewise_*),"
      " so tiling=None; one decoder call whatever T. Frames 1+8k <-> latent 1+k. encode returns IdentityDistribution "
      "(mode() is the latent). Non-persistent buffers: encoder.patch_embed.wavelets, encoder.patch_embed._arange, "
      "decoder.unpatch_embed.wavelets, decoder.unpatch_embed._arange (Haar constants rebuilt in __init__)."
    ),
  ),
  "AutoencoderKLHunyuanVideo": Case(
    config={
      "in_channels": 3,
      "out_channels": 3,
      "latent_channels": 4,
      "down_block_types": (
        "HunyuanVideoDownBlock3D",
        "HunyuanVideoDownBlock3D",
        "HunyuanVideoDownBlock3D",
        "HunyuanVideoDownBlock3D",
      ),
      "up_block_types": (
        "HunyuanVideoUpBlock3D",
        "HunyuanVideoUpBlock3D",
        "HunyuanVideoUpBlock3D",
        "HunyuanVideoUpBlock3D",
      ),
      "block_out_channels": (8, 8, 8, 8),
      "layers_per_block": 1,
      "act_fn": "silu",
      "norm_num_groups": 4,
      "scaling_factor": 0.476986,
      "spatial_compression_ratio": 8,
      "temporal_compression_ratio": 4,
      "mid_block_add_attention": True,
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_hunyuan_video.py (get_init_dict)",
    kind=VIDEO,
    decode_input=(2, 4, 3, 2, 3),
    encode_input=(2, 3, 9, 16, 24),
    other_frames=5,
    tiling={
      "tile_sample_min_height": 16,
      "tile_sample_min_width": 16,
      "tile_sample_stride_height": 8,
      "tile_sample_stride_width": 8,
    },
    note=(
      "Framewise decoding is ON by default (use_framewise_decoding=True): for T > tile_sample_min_num_frames//4 = 4 "
      "latent frames, _temporal_tiled_decode makes one decoder call per tile_sample_stride_num_frames//4 = 3 latent "
      "frames (tiles of 5, blended): T=3: 1 call, T=5: 2, T=7: 3; encode likewise above 16 sample frames. Tiling args "
      "split the 2x3 latent into 2x3 = 6 tiles. No non-persistent buffers. Runs through its adapter "
      "(core.models.hunyuan_video): the driver walks those frame tiles with one program per tile length."
    ),
  ),
  "AutoencoderKLHunyuanVideo15": Case(
    config={
      "in_channels": 3,
      "out_channels": 3,
      "latent_channels": 4,
      "block_out_channels": (8, 8),
      "layers_per_block": 1,
      "spatial_compression_ratio": 4,
      "temporal_compression_ratio": 2,
      "downsample_match_channel": False,
      "upsample_match_channel": False,
    },
    source=(
      "diffusers tests/pipelines/hunyuan_video1_5/test_hunyuan_1_5.py (get_dummy_components vae; no model test exists),"
      " block_out_channels (16, 16) -> (8, 8)"
    ),
    kind=VIDEO,
    decode_input=(1, 4, 3, 4, 6),
    encode_input=(1, 3, 5, 16, 24),
    other_frames=5,
    tiling={
      "tile_sample_min_height": 16,
      "tile_sample_min_width": 16,
      "tile_latent_min_height": 4,
      "tile_latent_min_width": 4,
    },
    note=(
      "Batch 1: HunyuanVideo15AttnBlock builds a (B, L, L) causal mask that does not broadcast against its (B, 1, L, L)"
      " attention, so B > 1 raises RuntimeError in diffusers itself. prepare_causal_attention_mask fills the mask in a "
      "Python loop over T*h*w latent tokens (72 here), once per decode (mid-block attention) and once per encode. No "
      "framewise/temporal tiling: one decoder call whatever T. Runs through its adapter (core.models.hunyuan_video15): "
      "diffusers' one call, its spatial tiles one program each, the mask built in one op (batches decode as use_slicing). "
      "Tiling needs tile_sample_min_* and tile_latent_min_* "
      "given together (sample = 4 x latent here; with only the sample sizes the latent threshold stays 64 and nothing "
      "tiles): 4x6 latent -> 2x2 = 4 tiles. No non-persistent buffers."
    ),
  ),
  "AutoencoderKLKVAEVideo": Case(
    config={
      "ch": 32,
      "ch_mult": (1, 1),
      "num_res_blocks": 1,
      "in_channels": 3,
      "out_ch": 3,
      "z_channels": 4,
      "temporal_compress_times": 2,
    },
    source=(
      "diffusers tests/models/autoencoders/test_models_autoencoder_kl_kvae_video.py (get_init_dict), ch_mult (1, 2) -> "
      "(1, 1) (1.79M -> 0.60M params; GroupNorm groups are hard-coded to 32 so ch cannot go below 32)"
    ),
    kind=VIDEO,
    decode_input=(2, 4, 2, 8, 12),
    encode_input=(2, 3, 3, 16, 24),
    other_frames=11,
    tiling=None,
    note=(
      "No tiling: enable_tiling() (AutoencoderMixin) sets use_tiling but nothing reads it. Decode always runs the "
      "cached decoder on latent-frame segments: ceil(17/2) = 9 latent frames, then ceil(16/2) = 8 each, so decoder "
      "calls = 1 for T <= 9, 2 for T = 10..17, 3 for T = 18..25 (T=2: 1, T=11: 2); encode splits sample frames 17, 16, "
      "16, ... Quirk: a trailing 1-latent-frame segment decodes to 1 frame, so T=10 gives 18 frames, not 19 (hence "
      "other_frames=11 -> 21 frames). Frames 1+2k <-> latent 1+k. encode's posterior has zero logvar (std 1). No non-"
      "persistent buffers."
    ),
  ),
  "AutoencoderKLLTX2Video": Case(
    config={
      "in_channels": 3,
      "out_channels": 3,
      "latent_channels": 8,
      "block_out_channels": (8, 8, 8, 8),
      "decoder_block_out_channels": (8, 16, 32),
      "layers_per_block": (1, 1, 1, 1, 1),
      "decoder_layers_per_block": (1, 1, 1, 1),
      "spatio_temporal_scaling": (True, True, True, True),
      "decoder_spatio_temporal_scaling": (True, True, True),
      "decoder_inject_noise": (False, False, False, False),
      "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
      "upsample_residual": (True, True, True),
      "upsample_factor": (2, 2, 2),
      "timestep_conditioning": False,
      "patch_size": 1,
      "patch_size_t": 1,
      "encoder_causal": True,
      "decoder_causal": False,
      "encoder_spatial_padding_mode": "zeros",
      "decoder_spatial_padding_mode": "zeros",
      "spatial_compression_ratio": 8,
      "temporal_compression_ratio": 8,
    },
    source=(
      "diffusers tests/models/autoencoders/test_models_autoencoder_ltx2_video.py (get_init_dict), "
      "decoder_block_out_channels (16, 32, 64) -> (8, 16, 32), spatial/temporal_compression_ratio=8 given explicitly"
    ),
    kind=VIDEO,
    decode_input=(2, 8, 2, 2, 3),
    encode_input=(2, 3, 9, 16, 24),
    other_frames=3,
    tiling={
      "tile_sample_min_height": 16,
      "tile_sample_min_width": 16,
      "tile_sample_stride_height": 8,
      "tile_sample_stride_width": 8,
    },
    note=(
      "Framewise decoding is off by default (use_framewise_decoding=False, and enable_tiling does not set it): one "
      "decoder call whatever T. spatial/temporal_compression_ratio are given as 8: the default "
      "patch_size*2**sum(spatio_temporal_scaling) = 16 overstates this config (the 'temporal' downsample stage keeps "
      "H/W), and tiled decode uses those attributes: without them these tiling args raise ValueError (range step 0), "
      "and 32/16 tiles give a 24x40 output instead of 16x24. decode also takes temb (only for "
      "timestep_conditioning=True configs; off here) and causal. Tiling args split the 2x3 latent into 6 tiles. No non-"
      "persistent buffers. Runs through its adapter (core.models.ltx2_video): frame tiles, when switched on, one "
      "program per tile length."
    ),
  ),
  "AutoencoderKLLTXVideo": Case(
    config={
      "in_channels": 3,
      "out_channels": 3,
      "latent_channels": 8,
      "block_out_channels": (8, 8, 8, 8),
      "decoder_block_out_channels": (8, 8, 8, 8),
      "layers_per_block": (1, 1, 1, 1, 1),
      "decoder_layers_per_block": (1, 1, 1, 1, 1),
      "spatio_temporal_scaling": (True, True, False, False),
      "decoder_spatio_temporal_scaling": (True, True, False, False),
      "decoder_inject_noise": (False, False, False, False, False),
      "upsample_residual": (False, False, False, False),
      "upsample_factor": (1, 1, 1, 1),
      "timestep_conditioning": False,
      "patch_size": 1,
      "patch_size_t": 1,
      "encoder_causal": True,
      "decoder_causal": False,
    },
    source=(
      "diffusers tests/models/autoencoders/test_models_autoencoder_ltx_video.py "
      "(AutoencoderKLLTXVideo090TesterConfig.get_init_dict)"
    ),
    kind=VIDEO,
    decode_input=(2, 8, 3, 4, 6),
    encode_input=(2, 3, 9, 16, 24),
    other_frames=5,
    tiling={
      "tile_sample_min_height": 12,
      "tile_sample_min_width": 12,
      "tile_sample_stride_height": 8,
      "tile_sample_stride_width": 8,
    },
    note=(
      "Framewise decoding is off by default (use_framewise_decoding=False, not set by enable_tiling): one decoder call "
      "whatever T. decode takes an optional temb, used only by timestep_conditioning=True configs (0.9.1+); this 0.9.0 "
      "config has none and needs none. Tiling args split the 4x6 latent into 2x3 = 6 tiles. No non-persistent buffers. "
      "Runs through its adapter (core.models.ltx_video): frame tiles, when switched on, one program per tile length."
    ),
  ),
  "AutoencoderKLMagvit": Case(
    config={
      "in_channels": 3,
      "latent_channels": 4,
      "out_channels": 3,
      "block_out_channels": (8, 8, 8, 8),
      "down_block_types": (
        "SpatialDownBlock3D",
        "SpatialTemporalDownBlock3D",
        "SpatialTemporalDownBlock3D",
        "SpatialTemporalDownBlock3D",
      ),
      "up_block_types": (
        "SpatialUpBlock3D",
        "SpatialTemporalUpBlock3D",
        "SpatialTemporalUpBlock3D",
        "SpatialTemporalUpBlock3D",
      ),
      "layers_per_block": 1,
      "norm_num_groups": 8,
      "spatial_group_norm": True,
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_magvit.py (get_init_dict)",
    kind=VIDEO,
    decode_input=(2, 4, 3, 2, 3),
    encode_input=(2, 3, 9, 16, 24),
    other_frames=5,
    tiling={
      "tile_sample_min_height": 16,
      "tile_sample_min_width": 16,
      "tile_sample_stride_height": 8,
      "tile_sample_stride_width": 8,
    },
    note=(
      "Decoding is always frame by frame: one decoder call for latent frame 0, then one per "
      "num_latent_frames_batch_size=1 latent frame, so T decoder calls (T=3: 3, T=5: 5); encode makes 1 + ceil((F-1)/4)"
      " encoder calls (F=9: 3). enable_tiling also sets use_framewise_* (flags the paths ignore); tiled decode runs the"
      " same per-frame loop in every spatial tile (2x3 tiles x 3 frames = 18 calls). The tile trigger compares width to"
      " tile_latent_min_height and height to tile_latent_min_width (swapped; harmless with square tiles). Causal convs "
      "keep a prev_features cache between calls, but decode is still deterministic. No non-persistent buffers."
    ),
  ),
  "AutoencoderKLMochi": Case(
    config={
      "in_channels": 15,
      "out_channels": 3,
      "latent_channels": 4,
      "encoder_block_out_channels": (32, 32, 32, 32),
      "decoder_block_out_channels": (32, 32, 32, 32),
      "layers_per_block": (1, 1, 1, 1, 1),
      "act_fn": "silu",
      "scaling_factor": 1,
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_mochi.py (get_init_dict)",
    kind=VIDEO,
    decode_input=(2, 4, 2, 2, 3),
    encode_input=(2, 3, 7, 16, 24),
    other_frames=3,
    tiling={
      "tile_sample_min_height": 16,
      "tile_sample_min_width": 16,
      "tile_sample_stride_height": 8,
      "tile_sample_stride_width": 8,
    },
    note=(
      "Framewise decoding is off by default (only the private _enable_framewise_decoding() turns on 2-latent-frame "
      "chunks): one decoder call whatever T. Output frames (T-1)*6+1 (drop_last_temporal_frames=True). in_channels=15 "
      "is the encoder's Fourier-feature input for 3-channel video. GroupNorm groups are hard-coded to 32, so 32 "
      "channels is the floor (0.62M params). Tiling args split the 2x3 latent into 6 tiles. No non-persistent buffers."
    ),
  ),
  "AutoencoderKLTemporalDecoder": Case(
    config={
      "block_out_channels": (32, 32),
      "in_channels": 3,
      "out_channels": 3,
      "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
      "latent_channels": 4,
      "layers_per_block": 2,
    },
    source=(
      "diffusers tests/models/autoencoders/test_models_autoencoder_kl_temporal_decoder.py (get_init_dict), "
      "block_out_channels [32, 64] -> (32, 32) (0.99M -> 0.34M params; GroupNorm groups fixed at 32)"
    ),
    kind=IMAGE,
    decode_input=(6, 4, 8, 12),
    encode_input=(6, 3, 16, 24),
    decode_kwargs={
      "num_frames": 3,
    },
    tiling=None,
    note=(
      "SVD video VAE: 2-D per-frame encoder, temporal decoder. Latents are 4-D (B*F, C, h, w) and decode needs "
      "num_frames=F (here B=2, F=3), so kind IMAGE and no other_frames (T is not a tensor axis: change decode_input[0] "
      "and num_frames together). No tiling: enable_tiling raises NotImplementedError. GroupNorm groups fixed at 32 "
      "(conv_norm_out), so 32 channels is the floor. No non-persistent buffers."
    ),
  ),
  "LTX2VideoDiffusionDecoderModel": Case(
    config={
      "out_channels": 3,
      "latent_channels": 8,
      "patch_size": 2,
      "decoder_head_dim": 16,
      "decoder_stage_channels": (64, 32, 16, 16, 16),
      "decoder_stage_depths": (1, 1, 1, 1, 2),
      "decoder_stage_kernels": ((3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
      "decoder_upsample_strides": ((1, 1, 1), (2, 1, 1), (2, 2, 2), (2, 2, 2)),
      "decoder_upsample_channel_reductions": (2, 2, 1, 1),
      "decoder_stage5_kernel": (3, 3, 3),
      "decoder_t_emb_dim": 32,
      "spatial_compression_ratio": 8,
      "temporal_compression_ratio": 8,
    },
    source=(
      "diffusers tests/models/autoencoders/test_models_ltx2_diffusion_decoder.py (get_init_dict), first upsample stride"
      " (1, 2, 2) -> (1, 1, 1) and spatial_compression_ratio 16 -> 8 (3x fewer stage-5 tokens: CPU flex attention is "
      "slow)"
    ),
    kind=VIDEO,
    decode_input=(2, 8, 2, 3, 4),
    encode_input=None,
    other_frames=3,
    tiling={
      "tile_sample_min_height": 16,
      "tile_sample_min_width": 16,
      "tile_sample_stride_height": 8,
      "tile_sample_stride_width": 8,
    },
    note=(
      "Decoder only: no encode (pairs with AutoencoderKLLTX2Video latents). It is a diffusion decoder: decode draws "
      "random noise inside (randn_tensor with generator=None uses the global RNG), so two calls differ; they match "
      "under torch.manual_seed or a generator= (not a plain value, so not in decode_kwargs). Default "
      "num_inference_steps=1 (single x0 step). One decoder forward whatever T (no framewise). The tiling args split the"
      " stage-4 grid into 2x3 tiles (6 denoise calls), each drawing its own noise. Neighbourhood attention is a "
      "flex_attention block mask: on CPU the first decode of each new shape takes ~2-3 s (block-mask build), later ones"
      " ~0.3 s (T=2) / ~1.1-1.5 s (T=3). latents_mean/latents_std are persistent buffers; no non-persistent buffers."
    ),
  ),
  "AutoencoderKLKVAEAudio": Case(
    config={
      "encoder_dim": 4,
      "encoder_rates": (2, 3),
      "latent_dim": 16,
      "codebook_dim": 4,
      "decoder_dim": 16,
      "decoder_rates": (3, 2),
      "sample_rate": 48000,
      "num_channels": 1,
      "attn_num_heads": 2,
    },
    source=(
      "diffusers tests/models/autoencoders/test_models_autoencoder_kl_kvae_audio.py (get_init_dict + the attn variant's"
      " attn_num_heads=2), latent_dim=16 given explicitly (0.42.1 defaults it to 2048; the test's diffusers derived "
      "encoder_dim * 2**len(encoder_rates) = 16)"
    ),
    kind=AUDIO,
    decode_input=(2, 4, 7),
    encode_input=(2, 1, 42),
    tiling=None,
    note=(
      "Waveform (B, 1, N); encode pads N to the hop length 6 (prod(encoder_rates)); decode maps L latent frames to 6L "
      "samples. Always has the attention layer in 0.42.1. No tiling: enable_tiling raises NotImplementedError. "
      "weight_norm convs. No non-persistent buffers."
    ),
  ),
  "AutoencoderKLLTX2Audio": Case(
    config={
      "in_channels": 2,
      "output_channels": 2,
      "latent_channels": 4,
      "base_channels": 8,
      "ch_mult": (1, 2, 4),
      "resolution": 16,
      "attn_resolutions": None,
      "num_res_blocks": 2,
      "norm_type": "pixel",
      "causality_axis": "height",
      "mid_block_add_attention": False,
      "sample_rate": 16000,
      "mel_hop_length": 160,
      "mel_bins": 16,
      "is_causal": True,
      "double_z": True,
    },
    source=(
      "diffusers tests/models/autoencoders/test_models_autoencoder_kl_ltx2_audio.py (get_init_dict), base_channels 16 "
      "-> 8 (0.84M -> 0.21M params)"
    ),
    kind=AUDIO,
    decode_input=(2, 4, 3, 4),
    encode_input=(2, 2, 9, 16),
    tiling=None,
    note=(
      "Input is a stereo mel spectrogram (B, 2, frames, 16 mel bins); latent (B, 4, T, 4). Causal: frames 1+4k <-> T = "
      "k+1 (9 <-> 3; 8 frames give T=2, which decodes to 5). No attention in this config (attn_resolutions=None, mid-"
      "block attention off, as in the class defaults). No tiling: enable_tiling raises NotImplementedError. "
      "latents_mean/std are persistent buffers; no non-persistent buffers."
    ),
  ),
  "AutoencoderKLMiniMaxH3Audio": Case(
    config={
      "encoder_dim": 4,
      "encoder_rates": (2, 2),
      "latent_dim": 32,
      "latent_channels": 8,
      "num_attention_heads": 2,
      "decoder_dim": 16,
      "decoder_rates": (2, 2),
      "decoder_kernel_sizes": (4, 4),
      "resblock_kernel_sizes": (3, 7),
      "resblock_dilation_sizes": ((1, 3), (1, 3)),
      "sampling_rate": 32000,
      "latents_mean": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
      "latents_std": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_kl_minimax_h3_audio.py (get_init_dict)",
    kind=AUDIO,
    decode_input=(2, 8, 8),
    encode_input=(2, 1, 32),
    tiling=None,
    note=(
      "Waveform (B, 1, N); encode pads N to the hop length 4; decode gives T*4 samples. In this venv from_pretrained "
      "raises ValueError('low_cpu_mem_usage cannot be False when keep_in_fp32_modules is True'): _keep_in_fp32_modules "
      "pins every module and accelerate is not installed. from_config + load_state_dict works. No enable_tiling. No "
      "non-persistent buffers."
    ),
  ),
  "AutoencoderOobleck": Case(
    config={
      "encoder_hidden_size": 12,
      "decoder_channels": 12,
      "decoder_input_channels": 6,
      "audio_channels": 2,
      "downsampling_ratios": [2, 4],
      "channel_multiples": [1, 2],
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_oobleck.py (get_init_dict)",
    kind=AUDIO,
    decode_input=(2, 6, 3),
    encode_input=(2, 2, 24),
    tiling=None,
    note=(
      "channel_multiples and downsampling_ratios must be lists (a tuple raises TypeError in OobleckEncoder). "
      "enable_tiling() takes no arguments and its 1-D time tiling only starts above tile_latent_min_length = 512 latent"
      " frames (an attribute; overlap 64) or tile_sample_min_length = sampling_rate*30 samples, so tiling=None. Checked"
      " separately: 600 latent frames tiled gives 2 decoder calls, the same shape, max diff 1.6e-7. decode's generator "
      "argument is unused (decode is deterministic). weight_norm convs. No non-persistent buffers."
    ),
  ),
  "Cosmos3AVAEAudioTokenizer": Case(
    config={
      "sampling_rate": 16,
      "hop_size": 4,
      "input_channels": 1,
      "stereo": True,
      "normalize_volume": True,
      "enc_dim": 4,
      "enc_num_blocks": 1,
      "enc_n_fft": 8,
      "enc_hop_length": 2,
      "enc_latent_dim": 8,
      "enc_c_mults": (1,),
      "enc_strides": (2,),
      "vocoder_input_dim": 4,
      "dec_dim": 4,
      "dec_c_mults": (1, 2),
      "dec_strides": (2, 2),
      "dec_out_channels": 2,
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_cosmos3_audio.py (get_init_dict)",
    kind=AUDIO,
    decode_input=(2, 4, 4),
    encode_input=(2, 2, 16),
    tiling=None,
    note=(
      "Stereo waveform (B, 2, N), hop 4. decode(latents) has no return_dict and returns the tensor, clamped to [-1, 1]."
      " encode returns an OobleckDiagonalGaussianDistribution; normalize_volume=True rescales the input inside encode; "
      "force_pad is optional. No enable_tiling. No non-persistent buffers."
    ),
  ),
  "LongCatAudioDiTVae": Case(
    config={
      "in_channels": 1,
      "channels": 16,
      "c_mults": [1, 2],
      "strides": [2],
      "latent_dim": 8,
      "encoder_latent_dim": 16,
      "downsampling_ratio": 4,
      "sample_rate": 24000,
    },
    source=(
      "diffusers tests/pipelines/longcat_audio_dit/test_longcat_audio_dit.py (get_dummy_components vae; the model test "
      "only checks default strides)"
    ),
    kind=AUDIO,
    decode_input=(2, 8, 8),
    encode_input=(2, 1, 32),
    encode_kwargs={
      "sample_posterior": False,
    },
    tiling=None,
    note=(
      "encode samples the posterior by default (sample_posterior=True draws noise), so encode_kwargs sets "
      "sample_posterior=False for a deterministic encode; decode is deterministic. encode/decode return "
      "LongCatAudioDiTVaeEncoderOutput.latents / DecoderOutput.sample. downsampling_ratio is stored but neither checked"
      " nor used in 0.42.1 (the real factor here is 4, from c_mults/strides). No tiling: enable_tiling raises "
      "NotImplementedError. No non-persistent buffers."
    ),
  ),
  "MMAudioVAE": Case(
    config={
      "mel_bins": 8,
      "latent_channels": 4,
      "hidden_channels": 8,
      "channel_multipliers": (1, 2),
      "layers_per_block": 1,
      "sample_rate": 64,
      "n_fft": 16,
      "hop_length": 4,
    },
    source="diffusers tests/models/autoencoders/test_models_autoencoder_mmaudio.py (get_init_dict)",
    kind=AUDIO,
    decode_input=(2, 4, 32),
    encode_input=(2, 256),
    tiling=None,
    note=(
      "encode takes a mono waveform (B, N) and computes the mel spectrogram inside (mel_converter); decode returns that"
      " mel spectrogram (B, mel_bins, frames), not audio (the vocoder is the separate MMAudioVocoder). 256 samples -> "
      "64 mel frames -> 32 latent frames. The submodules are mel_converter and vae (no .decoder attribute). No "
      "enable_tiling. No non-persistent buffers."
    ),
  ),
})


def _adapter_cases() -> dict[str, Case]:
  """The two classes with adapters, at the tiny configs their own tests use (``compare.checkpoints``)."""
  from .checkpoints import TINY, TINY_WAN_2_1

  wan = {k: v for k, v in TINY_WAN_2_1.items() if not k.startswith("_")}
  return {
    "AutoencoderKLCogVideoX": Case(
      config=TINY, source="compare/checkpoints.py TINY (every block kind, 2 blocks)", kind=VIDEO,
      decode_input=(2, 4, 3, 4, 6), encode_input=(2, 3, 9, 16, 24), other_frames=13,
      tiling={"tile_sample_min_height": 8, "tile_sample_min_width": 8}, note="adapter: 2-latent-frame steps, cache carried",
    ),
    "AutoencoderKLWan": Case(
      config=wan, source="compare/checkpoints.py TINY_WAN_2_1 (every Wan 2.1 block kind)", kind=VIDEO,
      decode_input=(2, 4, 3, 4, 6), encode_input=(2, 3, 9, 32, 48), other_frames=13,
      tiling={"tile_sample_min_height": 16, "tile_sample_min_width": 16, "tile_sample_stride_height": 8,
              "tile_sample_stride_width": 8}, note="adapter: 1-latent-frame steps, cache carried",
    ),
  }  # fmt: skip


CASES.update(_adapter_cases())
