"""Gemma 3's files for ``checkpoints.write_checkpoint``: config, processor configs and
tokenizer names in the layout google/gemma-3-4b-it ships on the hub (config.json with
``text_config``/``vision_config``, ``Gemma3ImageProcessor``, ``Gemma3Processor`` with
``image_seq_length``, the ``<start_of_image>``/``<end_of_image>``/``<image_soft_token>``
special tokens and a Gemma chat template). Weights keep HF's names; the LM head is tied
to the embeddings, as on the hub, so mlx-vlm's sanitize restores it.
"""

from .tiny_knobs import COMMON

SPECIALS = [
    "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
    "<start_of_image>", "<end_of_image>", "<image_soft_token>",
]  # fmt: skip

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{% if m['role'] == 'assistant' %}model{% else %}{{ m['role'] }}{% endif %}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<start_of_image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
    "{% endif %}"
)

# hidden 64 so that the LM's linear layers quantize (multiples of the group size).
DEFAULTS = dict(
    COMMON, hidden_size=64,
    num_layers=3, vision_layers=2, image_size=32, patch_size=4, rope_theta=1000000.0,
    tokens_per_image=16, sliding_window=8, sliding_window_pattern=3,
)  # fmt: skip


# Config literals keep related keys on one line.
# fmt: off
def gemma3_files(k, vocab):
    """(config, preprocessor config, processor config, tokenizer special names)."""
    config = dict(
        architectures=["Gemma3ForConditionalGeneration"], model_type="gemma3",
        boi_token_index=vocab["<start_of_image>"],
        eoi_token_index=vocab["<end_of_image>"],
        image_token_index=vocab["<image_soft_token>"],
        mm_tokens_per_image=k["tokens_per_image"], torch_dtype=k["dtype"],
        eos_token_id=[vocab["<eos>"], vocab["<end_of_turn>"]],
        text_config=dict(
            model_type="gemma3_text", hidden_size=k["hidden_size"],
            intermediate_size=k["intermediate_size"], num_hidden_layers=k["num_layers"],
            num_attention_heads=k["heads"], num_key_value_heads=k["kv_heads"],
            head_dim=k["hidden_size"] // k["heads"],
            query_pre_attn_scalar=k["hidden_size"] // k["heads"],
            vocab_size=k["vocab_size"], sliding_window=k["sliding_window"],
            sliding_window_pattern=k["sliding_window_pattern"],
            rope_theta=k["rope_theta"], rope_local_base_freq=10000.0,
            rope_scaling={"factor": 8.0, "rope_type": "linear"},
            mm_tokens_per_image=k["tokens_per_image"],
        ),
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=k["vision_hidden_size"],
            intermediate_size=k["vision_intermediate_size"],
            num_attention_heads=k["vision_heads"],
            num_hidden_layers=k["vision_layers"], image_size=k["image_size"],
            patch_size=k["patch_size"], vision_use_head=False,
        ),
    )
    side = k["image_size"]
    preproc = dict(
        image_processor_type="Gemma3ImageProcessor", processor_class="Gemma3Processor",
        do_resize=True, size={"height": side, "width": side}, resample=2,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], do_convert_rgb=None,
        do_pan_and_scan=None, image_seq_length=k["tokens_per_image"],
    )
    proc = dict(processor_class="Gemma3Processor",
                image_seq_length=k["tokens_per_image"])
    specials = dict(
        bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens=dict(boi_token="<start_of_image>",
                                  eoi_token="<end_of_image>",
                                  image_token="<image_soft_token>"),
    )
    return config, preproc, proc, specials
# fmt: on


def hf_name(name: str) -> str:
    """The HF checkpoint name of an mlx-vlm gemma3 parameter (the same names: the
    hub layout is mlx-vlm's module tree), None for the tied LM head the hub omits."""
    return None if name == "language_model.lm_head.weight" else name
