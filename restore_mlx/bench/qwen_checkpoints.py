"""Qwen-family files for ``checkpoints.write_checkpoint``: Qwen2-VL, Qwen2.5-VL,
Qwen3-VL, Qwen3.5 and the two sparse variants, Qwen3-VL-MoE and Qwen3.5-MoE.

Config keys follow the published checkpoints (Qwen/Qwen2-VL-*, Qwen/Qwen2.5-VL-*,
Qwen/Qwen3-VL-*, Qwen/Qwen3.5-*; the MoE ones Qwen/Qwen3-VL-30B-A3B-Instruct and
Qwen/Qwen3.5-35B-A3B); sizes are the caller's knobs. Both MoE hubs store each layer's
experts fused, three-dimensional and without a ``.weight`` suffix, but in opposite
orientations, which mlx-vlm's sanitize undoes for each:

- Qwen3-VL-MoE (transformers' ``Qwen3VLMoeTextExperts``): ``mlp.experts.gate_up_proj``
  [experts, hidden, 2 x moe_intermediate] and ``mlp.experts.down_proj``
  [experts, moe_intermediate, hidden], used as ``x @ w``;
- Qwen3.5-MoE (transformers' ``Qwen3NextExperts``): ``mlp.experts.gate_up_proj``
  [experts, 2 x moe_intermediate, hidden] and ``mlp.experts.down_proj``
  [experts, hidden, moe_intermediate], the ``nn.Linear`` orientation; plus a shared
  expert (``mlp.shared_expert.{gate,up,down}_proj``, ``mlp.shared_expert_gate``).

Both route with ``mlp.gate.weight`` [experts, hidden], gate rows before up rows.
"""

import mlx.core as mx

from .tiny_knobs import COMMON

ARCHS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_vl_moe", "qwen3_5_moe")
MOE = {"qwen3_vl_moe": "qwen3_vl", "qwen3_5_moe": "qwen3_5"}  # sparse -> dense sibling

TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}"
    "{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' or 'image' in c %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)
_LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<unk>",
]

DEFAULTS = {
    "qwen2_vl": dict(
        COMMON, hidden_size=32, num_layers=1, vision_layers=1, image_size=56,
        patch_size=7, rope_theta=1000000.0,
    ),
}  # fmt: skip
DEFAULTS["qwen2_5_vl"] = dict(DEFAULTS["qwen2_vl"])
# Qwen3-VL / 3.5: 16 px patches as published; 64 px images -> 4 x 4 patches -> 4 tokens
# is too few to reduce, so 128 px (16 tokens). Qwen3.5 needs a softmax-attention layer:
# with the published interval of 4 that is 4 layers.
DEFAULTS["qwen3_vl"] = dict(
    COMMON, hidden_size=32, num_layers=2, vision_layers=2, image_size=128,
    patch_size=16, rope_theta=5000000.0,
)  # fmt: skip
DEFAULTS["qwen3_5"] = dict(DEFAULTS["qwen3_vl"], num_layers=4, rope_theta=10000000.0)
# Experts as wide as the LM: at hidden 64 every expert matmul's input is a multiple of
# the 4-bit group size (64), so mlx-vlm's convert quantizes the SwitchLinear experts too.
_EXPERTS = dict(num_experts=4, experts_per_tok=2, moe_intermediate_size=None)
DEFAULTS["qwen3_vl_moe"] = dict(DEFAULTS["qwen3_vl"], **_EXPERTS)
DEFAULTS["qwen3_5_moe"] = dict(
    DEFAULTS["qwen3_5"], **_EXPERTS, shared_expert_intermediate_size=None
)
_CLIP_MEAN, _CLIP_STD = [0.4815, 0.4578, 0.4082], [0.2686, 0.2613, 0.2758]


# Config literals below keep related keys on one line.
# fmt: off
def _qwen_vision(arch, k):
    vision = dict(
        depth=k["vision_layers"], hidden_size=k["vision_hidden_size"],
        hidden_act="silu",
        num_heads=k["vision_heads"], in_chans=3, patch_size=k["patch_size"],
        spatial_patch_size=k["patch_size"], spatial_merge_size=2, temporal_patch_size=2,
    )
    ratio = k["vision_intermediate_size"] // k["vision_hidden_size"]  # mlx-vlm: int
    if arch == "qwen2_vl":  # embed_dim is the tower width, hidden_size the LM's
        vision.update(embed_dim=k["vision_hidden_size"], mlp_ratio=ratio,
                      hidden_size=k["hidden_size"])
    else:  # 2.5: hidden_size is the tower width, out_hidden_size the LM's
        vision.update(intermediate_size=k["vision_intermediate_size"],
                      out_hidden_size=k["hidden_size"], window_size=4 * k["patch_size"],
                      fullatt_block_indexes=[k["vision_layers"] - 1],
                      tokens_per_second=2)
    return vision


def _qwen_files(arch, k, vocab):
    half = k["hidden_size"] // k["heads"] // 2  # M-RoPE splits it over (t, h, w)
    section = [half - 2 * (half // 3), half // 3, half // 3]
    v2 = arch == "qwen2_vl"
    config = dict(
        architectures=["Qwen2VLForConditionalGeneration" if v2 else
                       "Qwen2_5_VLForConditionalGeneration"],
        model_type=arch, hidden_size=k["hidden_size"],
        intermediate_size=k["intermediate_size"], num_hidden_layers=k["num_layers"],
        num_attention_heads=k["heads"], num_key_value_heads=k["kv_heads"],
        rms_norm_eps=1e-6, rope_theta=k["rope_theta"], max_position_embeddings=4096,
        vocab_size=k["vocab_size"], tie_word_embeddings=False, torch_dtype=k["dtype"],
        rope_scaling={"type": "mrope", "mrope_section": section},
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
        vision_token_id=vocab["<|vision_pad|>"],
        bos_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|im_end|>"],
        vision_config=_qwen_vision(arch, k),
    )
    side = k["image_size"]
    preproc = dict(
        image_processor_type="Qwen2VLImageProcessor", patch_size=k["patch_size"],
        temporal_patch_size=2, merge_size=2, min_pixels=side * side // 4,
        max_pixels=side * side, image_mean=_CLIP_MEAN, image_std=_CLIP_STD,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True, do_convert_rgb=True,
    )
    proc = dict(processor_class="Qwen2VLProcessor" if v2 else "Qwen2_5_VLProcessor")
    specials = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>",
                    unk_token="<unk>")
    return config, preproc, proc, specials


def _qwen3_vision(arch, k):
    return dict(
        model_type=arch, depth=k["vision_layers"], hidden_size=k["vision_hidden_size"],
        hidden_act="gelu_pytorch_tanh", intermediate_size=k["vision_intermediate_size"],
        num_heads=k["vision_heads"], in_channels=3, patch_size=k["patch_size"],
        spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=k["hidden_size"],
        num_position_embeddings=64,
        deepstack_visual_indexes=[0] if arch == "qwen3_vl" else [],
    )


def _qwen3_text(arch, k, vocab):
    head_dim = 2 * k["hidden_size"] // k["heads"]  # published: head_dim 128 / 256
    text = dict(
        model_type=f"{arch}_text", hidden_size=k["hidden_size"],
        intermediate_size=k["intermediate_size"], num_hidden_layers=k["num_layers"],
        num_attention_heads=k["heads"], num_key_value_heads=k["kv_heads"],
        head_dim=head_dim, hidden_act="silu", rms_norm_eps=1e-6,
        max_position_embeddings=4096, vocab_size=k["vocab_size"],
        tie_word_embeddings=False, attention_bias=False,
        bos_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|im_end|>"],
    )
    if arch == "qwen3_vl":  # interleaved M-RoPE over all head_dim / 2 frequencies
        half = head_dim // 2
        text.update(rope_theta=k["rope_theta"], rope_scaling=dict(
            rope_type="default", mrope_interleaved=True,
            mrope_section=[half - 2 * (half // 3), half // 3, half // 3]))
        return text
    quarter = head_dim // 8  # partial rotary 0.25: head_dim / 8 frequencies
    text.update(
        full_attention_interval=4, linear_conv_kernel_dim=4,
        linear_num_key_heads=k["heads"], linear_num_value_heads=2 * k["heads"],
        linear_key_head_dim=head_dim // 2, linear_value_head_dim=head_dim // 2,
        layer_types=["full_attention" if (i + 1) % 4 == 0 else "linear_attention"
                     for i in range(k["num_layers"])],
        rope_parameters=dict(
            rope_type="default", mrope_interleaved=True, rope_theta=k["rope_theta"],
            partial_rotary_factor=0.25,
            mrope_section=[quarter - 2 * (quarter // 3), quarter // 3, quarter // 3]),
    )
    return text


def _moe_text(arch, k):
    """The sparse keys of the MoE text configs, as their hubs spell them."""
    experts = dict(
        model_type=f"{arch}_text", num_experts=k["num_experts"],
        num_experts_per_tok=k["experts_per_tok"],
        moe_intermediate_size=k["moe_intermediate_size"] or k["hidden_size"],
        router_aux_loss_coef=0.001,
    )
    if arch == "qwen3_vl_moe":  # every layer sparse, as Qwen3-VL-30B-A3B
        experts.update(decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True)
    else:  # 3.5 always sparse, top-k renormalised (no keys for either), + shared expert
        experts.update(shared_expert_intermediate_size=(
            k["shared_expert_intermediate_size"] or k["hidden_size"]))
    return experts


def _qwen3_files(arch, k, vocab):
    names = {"qwen3_vl": "Qwen3VL", "qwen3_5": "Qwen3_5", "qwen3_vl_moe": "Qwen3VLMoe",
             "qwen3_5_moe": "Qwen3_5Moe"}
    dense = MOE.get(arch, arch)
    text, vision = _qwen3_text(dense, k, vocab), _qwen3_vision(dense, k)
    if arch in MOE:
        text.update(_moe_text(arch, k))
        vision["model_type"] = arch
        if arch == "qwen3_5_moe":  # its text config has no dense MLP width
            del text["intermediate_size"]
    config = dict(
        architectures=[f"{names[arch]}ForConditionalGeneration"], model_type=arch,
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"], tie_word_embeddings=False,
        torch_dtype=k["dtype"], text_config=text, vision_config=vision,
    )
    side = k["image_size"]
    preproc = dict(
        image_processor_type="Qwen2VLImageProcessorFast", patch_size=k["patch_size"],
        temporal_patch_size=2, merge_size=2,
        size=dict(shortest_edge=side * side // 4, longest_edge=side * side),
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], do_rescale=True,
        rescale_factor=1 / 255, do_normalize=True, do_convert_rgb=True,
    )
    proc = dict(processor_class="Qwen3VLProcessor")
    specials = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>",
                    unk_token="<unk>")
    return config, preproc, proc, specials
# fmt: on


def files(arch, k, vocab):
    """(config, preprocessor config, processor config, tokenizer special names)."""
    if arch in ("qwen2_vl", "qwen2_5_vl"):
        return _qwen_files(arch, k, vocab)
    return _qwen3_files(arch, k, vocab)


def _hub_experts(arch, prefix, w):
    """mlx-vlm's stacked SwitchGLU ``{gate,up,down}_proj`` [experts, out, in] under
    ``prefix`` (``...mlp.switch_mlp.``) -> the hub's fused expert tensors."""
    gate, up, down = (w.pop(f"{prefix}{p}_proj.weight") for p in ("gate", "up", "down"))
    hub = prefix.replace("switch_mlp.", "experts.")
    if arch == "qwen3_vl_moe":  # stored for x @ w: [experts, in, out]
        gate, up, down = (m.transpose(0, 2, 1) for m in (gate, up, down))
        w[f"{hub}gate_up_proj"] = mx.concatenate([gate, up], axis=-1)
    else:
        w[f"{hub}gate_up_proj"] = mx.concatenate([gate, up], axis=-2)
    w[f"{hub}down_proj"] = down


def hf_weights(arch, weights: dict) -> dict:
    """mlx-vlm's parameter names (conv layouts already the hub's) -> the hub's."""
    renamed = {}
    for name, value in weights.items():
        if arch in ("qwen2_vl", "qwen2_5_vl"):  # the hub's names are mlx-vlm's
            name = name.replace("vision_tower.", "visual.", 1)
            name = name.replace("language_model.model.", "model.", 1)
        else:  # Qwen3 nests both under model.
            name = name.replace("vision_tower.", "model.visual.", 1)
            name = name.replace("language_model.model.", "model.language_model.", 1)
        renamed[name.replace("language_model.lm_head.", "lm_head.", 1)] = value
    if arch in MOE:
        for prefix in [
            n[: -len("gate_proj.weight")]
            for n in renamed
            if n.endswith("switch_mlp.gate_proj.weight")
        ]:
            _hub_experts(arch, prefix, renamed)
    return renamed
