"""HF layouts of the tiled-image architectures for ``bench.checkpoints``: SmolVLM
(idefics3 family), LFM2-VL and LLaVA-OneVision. Config keys, special tokens, chat
templates and processor configs follow the published checkpoints
(HuggingFaceTB/SmolVLM2-*, LiquidAI/LFM2-VL-*, llava-hf/llava-onevision-qwen2-*-ov-hf);
sizes are the caller's knobs.
"""

# fmt: off
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}"
    "{% if m['content'] is string %}: {{ m['content'] }}{% else %}"
    "{% if m['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
    "{% elif c['type'] == 'image' %}<image>{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
LFM2_TEMPLATE = (
    "<|startoftext|>{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)
# llava-hf's template: every image of a turn first, then its text, one newline before.
ONEVISION_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} "
    "{% if m['content'] is string %}\n{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% endif %}"
    "{% endfor %}{% for c in m['content'] %}{% if c['type'] == 'text' %}"
    "\n{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_GRID = [(r, c) for r in range(1, 7) for c in range(1, 7)]  # up to 6 x 6 tiles
SMOLVLM_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<unk>", "<end_of_utterance>",
    "<fake_token_around_image>", "<image>", "<global-img>",
] + [f"<row_{r}_col_{c}>" for r, c in _GRID]
LFM2_SPECIALS = [
    "<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<unk>", "<image>", "<|image_start|>", "<|image_end|>", "<|img_thumbnail|>",
] + [f"<|img_row_{r}_col_{c}|>" for r, c in _GRID]
ONEVISION_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>", "<image>", "<video>",
]
_HALF = [0.5, 0.5, 0.5]


def smolvlm_files(k, vocab):
    """(config, preprocessor config, processor config, tokenizer special names)."""
    side, scale = k["image_size"], 2
    config = dict(
        architectures=["SmolVLMForConditionalGeneration"], model_type="smolvlm",
        image_token_id=vocab["<image>"], scale_factor=scale, vocab_size=k["vocab_size"],
        torch_dtype=k["dtype"], pad_token_id=vocab["<|endoftext|>"],
        text_config=dict(
            model_type="llama", hidden_size=k["hidden_size"], vocab_size=k["vocab_size"],
            num_hidden_layers=k["num_layers"], intermediate_size=k["intermediate_size"],
            num_attention_heads=k["heads"], num_key_value_heads=k["kv_heads"],
            head_dim=k["hidden_size"] // k["heads"], rms_norm_eps=1e-5,
            rope_theta=k["rope_theta"], max_position_embeddings=8192,
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            model_type="smolvlm_vision", hidden_size=k["vision_hidden_size"],
            num_hidden_layers=k["vision_layers"], num_attention_heads=k["vision_heads"],
            intermediate_size=k["vision_intermediate_size"], image_size=side,
            patch_size=k["patch_size"], layer_norm_eps=1e-6,
        ),
    )
    preproc = dict(
        image_processor_type="SmolVLMImageProcessor", do_resize=True,
        size={"longest_edge": 2 * side}, max_image_size={"longest_edge": side},
        do_image_splitting=True, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=_HALF, image_std=_HALF, do_pad=True, resample=1,
        do_convert_rgb=True,
    )
    tokens = (side // k["patch_size"] // scale) ** 2
    proc = dict(processor_class="SmolVLMProcessor", image_seq_len=tokens)
    specials = dict(bos_token="<|im_start|>", eos_token="<end_of_utterance>",
                    unk_token="<unk>", pad_token="<|endoftext|>")
    return config, preproc, proc, specials


def lfm2_vl_files(k, vocab):
    """(config, preprocessor config, processor config, tokenizer special names)."""
    tile, patch, factor = k["image_size"], k["patch_size"], 2
    tile_tokens = (tile // patch // factor) ** 2
    layers = ["conv" if i % 2 == 0 else "full_attention" for i in range(k["num_layers"])]
    config = dict(
        architectures=["Lfm2VlForConditionalGeneration"], model_type="lfm2-vl",
        image_token_index=vocab["<image>"], downsample_factor=factor,
        projector_hidden_size=2 * k["hidden_size"], projector_bias=True,
        projector_use_layernorm=True, vision_feature_layer=-1, torch_dtype=k["dtype"],
        max_image_tokens=tile_tokens, min_image_tokens=max(1, tile_tokens // 4),
        tile_size=tile, encoder_patch_size=patch, eos_token_id=vocab["<|im_end|>"],
        text_config=dict(
            model_type="lfm2", hidden_size=k["hidden_size"], vocab_size=k["vocab_size"],
            num_hidden_layers=k["num_layers"], num_attention_heads=k["heads"],
            num_key_value_heads=k["kv_heads"], block_ff_dim=k["intermediate_size"],
            block_auto_adjust_ff_dim=False, block_dim=k["hidden_size"],
            conv_L_cache=3, conv_bias=False, norm_eps=1e-5, rope_theta=k["rope_theta"],
            layer_types=layers, max_position_embeddings=128000,
            tie_word_embeddings=True, eos_token_id=vocab["<|im_end|>"],
        ),
        vision_config=dict(
            model_type="siglip2_vision_model", hidden_size=k["vision_hidden_size"],
            num_hidden_layers=k["vision_layers"], num_attention_heads=k["vision_heads"],
            intermediate_size=k["vision_intermediate_size"], patch_size=patch,
            num_patches=(tile // patch) ** 2, layer_norm_eps=1e-6,
        ),
    )
    preproc = dict(
        image_processor_type="Lfm2VlImageProcessorFast", downsample_factor=factor,
        encoder_patch_size=patch, tile_size=tile, max_image_tokens=tile_tokens,
        min_image_tokens=max(1, tile_tokens // 4), max_pixels_tolerance=2.0,
        do_image_splitting=True, use_thumbnail=True, min_tiles=2, max_tiles=10,
        image_mean=_HALF, image_std=_HALF, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, resample=3,
    )
    proc = dict(processor_class="Lfm2VlProcessor", use_image_special_tokens=True)
    specials = dict(bos_token="<|startoftext|>", eos_token="<|im_end|>",
                    unk_token="<unk>", pad_token="<|pad|>")
    return config, preproc, proc, specials


def onevision_files(k, vocab):
    """(config, preprocessor config, processor config, tokenizer special names).

    AnyRes pinpoints are the published pattern (1..6 x 1..6 crops of the tower's
    side) cut to 2 x 2: a picture wider than tall picks 2 x 2 crops, is unpadded to
    its aspect ratio and gets a newline token after every row of the tile grid."""
    side, patch = k["image_size"], k["patch_size"]
    pinpoints = [[side * r, side * c] for r in (1, 2) for c in (1, 2)]
    config = dict(
        architectures=["LlavaOnevisionForConditionalGeneration"],
        model_type="llava_onevision", image_token_index=vocab["<image>"],
        video_token_index=vocab["<video>"], image_grid_pinpoints=pinpoints,
        vision_aspect_ratio="anyres_max_9", vision_feature_layer=-1,
        vision_feature_select_strategy="full", use_image_newline_parameter=True,
        projector_hidden_act="gelu", torch_dtype=k["dtype"], tie_word_embeddings=True,
        text_config=dict(
            model_type="qwen2", hidden_size=k["hidden_size"], vocab_size=k["vocab_size"],
            num_hidden_layers=k["num_layers"], intermediate_size=k["intermediate_size"],
            num_attention_heads=k["heads"], num_key_value_heads=k["kv_heads"],
            rms_norm_eps=1e-6, rope_theta=k["rope_theta"], max_position_embeddings=32768,
            tie_word_embeddings=True, eos_token_id=vocab["<|im_end|>"],
        ),
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=k["vision_hidden_size"],
            num_hidden_layers=k["vision_layers"], num_attention_heads=k["vision_heads"],
            intermediate_size=k["vision_intermediate_size"], image_size=side,
            patch_size=patch, layer_norm_eps=1e-6, vision_use_head=False,
        ),
    )
    preproc = dict(
        image_processor_type="LlavaOnevisionImageProcessor", do_resize=True,
        size={"height": side, "width": side}, image_grid_pinpoints=pinpoints,
        do_pad=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=_HALF, image_std=_HALF, do_convert_rgb=True, resample=3,
    )
    proc = dict(
        processor_class="LlavaOnevisionProcessor", image_token="<image>",
        video_token="<video>", num_image_tokens=(side // patch) ** 2,
        vision_feature_select_strategy="full",
    )
    specials = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>",
                    unk_token="<unk>")
    return config, preproc, proc, specials


def hf_name(arch: str, name: str, value):
    """An mlx-vlm parameter's name and value as the HF checkpoint stores it (the
    inverse of mlx-vlm's ``sanitize``)."""
    if arch == "smolvlm":
        if name.startswith("language_model.lm_head."):
            return name.replace("language_model.", "", 1), value
        if name.startswith("language_model."):
            return name.replace("language_model.", "model.text_model.", 1), value
        if name.endswith("patch_embedding.weight"):  # conv: MLX OHWI -> OIHW
            value = value.transpose(0, 3, 1, 2)
        return "model." + name, value
    if name.startswith("vision_tower."):
        return name.replace("vision_tower.", "model.vision_tower.vision_model.", 1), value
    if name.startswith("language_model.model."):
        if name.endswith("conv.conv.weight"):  # depthwise conv1d: [C, K, 1] -> [C, 1, K]
            value = value.transpose(0, 2, 1)
        return name.replace("language_model.model.", "model.language_model.", 1), value
    return "model." + name, value
# fmt: on
