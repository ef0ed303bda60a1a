"""InternVL's files for ``checkpoints.write_checkpoint``, in both hub layouts.

- ``internvl_chat``: the original layout of OpenGVLab/InternVL3-1B (config.json with
  ``llm_config`` (Qwen2, q/k/v bias) and an ``intern_vit_6b`` ``vision_config``,
  ``force_image_size``, ``max_dynamic_patch``, ``use_thumbnail``; a CLIP-style
  preprocessor_config.json; no processor_config.json: the processor derives 256 tokens
  per tile from the config). Weights keep the module names (``vision_model.*``,
  ``mlp1.*``, ``language_model.*``), the patch conv in PyTorch's OIHW.
- ``internvl``: the transformers layout of OpenGVLab/InternVL3-1B-hf
  (``InternVLForConditionalGeneration``, ``internvl_vision`` tower,
  ``multi_modal_projector``, processor_config.json with ``image_seq_length``, a chat
  template that writes ``<IMG_CONTEXT>`` per image). mlx-vlm 0.7.10 builds this type's
  language model as Qwen3 (q/k RMSNorm, no q/k/v bias), so the text config is Qwen3's:
  InternVL3-1B-hf's own Qwen2 weights do not load there (see Package notes).

Special tokens are InternVL's (``<img>``, ``</img>``, ``<IMG_CONTEXT>``) and Qwen's
chat markers; sizes are the caller's knobs.
"""

from .tiny_knobs import COMMON

SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>", "<img>", "</img>",
    "<IMG_CONTEXT>",
]  # fmt: skip

# ChatML; an image item renders as the placeholder each processor expands.
_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}PLACEHOLDER\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)
CHAT_TEMPLATE = _TEMPLATE.replace("PLACEHOLDER", "<image>")  # InternVLChatProcessor
HF_TEMPLATE = _TEMPLATE.replace("PLACEHOLDER", "<IMG_CONTEXT>")  # InternVLProcessor

# hidden 64 so that the LM's linear layers quantize (multiples of the group size);
# 64 px tiles of 8 px patches: 16 tokens per tile after the pixel shuffle.
DEFAULTS = dict(
    COMMON, hidden_size=64,
    num_layers=2, vision_layers=2, image_size=64, patch_size=8, rope_theta=1000000.0,
    max_tiles=12,
)  # fmt: skip
_IMAGENET = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
_SPECIAL_NAMES = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>",
                      unk_token="<unk>")  # fmt: skip


# Config literals keep related keys on one line.
# fmt: off
def _text(k, vocab, model_type):
    text = dict(
        model_type=model_type, hidden_size=k["hidden_size"],
        intermediate_size=k["intermediate_size"], num_hidden_layers=k["num_layers"],
        num_attention_heads=k["heads"], num_key_value_heads=k["kv_heads"],
        rms_norm_eps=1e-6, rope_theta=k["rope_theta"], max_position_embeddings=32768,
        vocab_size=k["vocab_size"], tie_word_embeddings=False, hidden_act="silu",
        bos_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|im_end|>"],
    )
    if model_type == "qwen3":
        text.update(head_dim=k["hidden_size"] // k["heads"], attention_bias=False)
    return text


def chat_files(k, vocab):
    """internvl_chat: (config, preprocessor config, None, tokenizer special names)."""
    side = k["image_size"]
    config = dict(
        architectures=["InternVLChatModel"], model_type="internvl_chat",
        downsample_ratio=0.5, dynamic_image_size=True, force_image_size=side,
        max_dynamic_patch=k["max_tiles"], min_dynamic_patch=1, use_thumbnail=True,
        ps_version="v2", select_layer=-1, template="internvl2_5",
        tie_word_embeddings=False, torch_dtype=k["dtype"],
        image_token_index=vocab["<IMG_CONTEXT>"],
        llm_config=_text(k, vocab, "qwen2"),
        vision_config=dict(
            architectures=["InternVisionModel"], model_type="intern_vit_6b",
            hidden_size=k["vision_hidden_size"], image_size=side,
            intermediate_size=k["vision_intermediate_size"],
            num_attention_heads=k["vision_heads"],
            num_hidden_layers=k["vision_layers"], patch_size=k["patch_size"],
            layer_norm_eps=1e-6, norm_type="layer_norm", qkv_bias=True,
            qk_normalization=False, hidden_act="gelu", drop_path_rate=0.0,
        ),
    )
    preproc = dict(
        crop_size=side, do_center_crop=True, do_normalize=True, do_resize=True,
        feature_extractor_type="CLIPFeatureExtractor", resample=3, size=side,
        **_IMAGENET,
    )
    return config, preproc, None, _SPECIAL_NAMES


def hf_files(k, vocab):
    """internvl: (config, preprocessor config, processor config, special names)."""
    side, patch = k["image_size"], k["patch_size"]
    tokens = (side // patch // 2) ** 2
    config = dict(
        architectures=["InternVLForConditionalGeneration"], model_type="internvl",
        downsample_ratio=0.5, image_seq_length=tokens,
        image_token_id=vocab["<IMG_CONTEXT>"], projector_hidden_act="gelu",
        vision_feature_layer=-1, vision_feature_select_strategy="default",
        torch_dtype=k["dtype"], text_config=_text(k, vocab, "qwen3"),
        vision_config=dict(
            architectures=["InternVisionModel"], model_type="internvl_vision",
            hidden_size=k["vision_hidden_size"], image_size=[side, side],
            intermediate_size=k["vision_intermediate_size"],
            num_attention_heads=k["vision_heads"],
            num_hidden_layers=k["vision_layers"], patch_size=[patch, patch],
            layer_norm_eps=1e-6, norm_type="layer_norm", attention_bias=True,
            use_qk_norm=False, layer_scale_init_value=0.1, hidden_act="gelu",
            use_mean_pooling=True,
        ),
    )
    preproc = dict(
        image_processor_type="GotOcr2ImageProcessorFast", processor_class="InternVLProcessor",
        crop_to_patches=False, max_patches=k["max_tiles"], min_patches=1,
        size={"height": side, "width": side}, do_resize=True, do_rescale=True,
        rescale_factor=1 / 255, do_normalize=True, do_convert_rgb=True, resample=3,
        **_IMAGENET,
    )
    proc = dict(image_seq_length=tokens, processor_class="InternVLProcessor")
    # The EOS id lives only here (mlx-vlm's internvl config has no field for it).
    config["generation_config"] = dict(
        bos_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|im_end|>"]
    )
    return config, preproc, proc, _SPECIAL_NAMES
# fmt: on


def hf_name(name: str, value):
    """An mlx-vlm internvl / internvl_chat parameter's name and value as the hub
    checkpoint stores it: the same module names, conv weights in PyTorch's OIHW."""
    if name.endswith(("patch_embedding.weight", "patch_embeddings.projection.weight")):
        value = value.transpose(0, 3, 1, 2)
    return name, value
