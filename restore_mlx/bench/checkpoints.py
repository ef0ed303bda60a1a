"""Tiny random-weight checkpoints in Hugging Face layout, written offline.

For tests and speed runs where no real weights can be downloaded. The files mirror what
the hub ships (HF parameter names and conv layouts, tokenizer and processor configs, a
chat template), so ``mlx_vlm.convert`` and ``mlx_vlm.load`` sanitize them exactly as
they would a real checkpoint::

    from restore_mlx.bench.checkpoints import write_checkpoint, write_image
    path = write_checkpoint("llava", "/tmp/tiny-llava", hidden_size=64)
    write_image("/tmp/cat.png", size=32)
"""

import json
from pathlib import Path

from . import gemma3_checkpoint
from . import internvl_checkpoint as internvl
from . import qwen_checkpoints as qwen
from . import tiled_checkpoints as tiled
from .tiny_knobs import COMMON

ARCHS = (
    "llava", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_vl_moe",
    "qwen3_5_moe", "gemma3", "smolvlm", "lfm2_vl", "llava_onevision", "internvl_chat",
    "internvl",
)  # fmt: skip

# Knobs a caller may override, per architecture (``tiny_knobs``).
DEFAULTS = {
    "llava": dict(
        COMMON, hidden_size=32, num_layers=1, vision_layers=2, image_size=32,
        patch_size=4, rope_theta=10000.0,
    ),
}  # fmt: skip
DEFAULTS.update(qwen.DEFAULTS)
DEFAULTS["gemma3"] = dict(gemma3_checkpoint.DEFAULTS)
# image_size: a SmolVLM view's side (tiles and global image), an LFM2-VL tile's side.
DEFAULTS["smolvlm"] = dict(DEFAULTS["llava"], patch_size=4, num_layers=2)
DEFAULTS["lfm2_vl"] = dict(DEFAULTS["llava"], patch_size=4, num_layers=2)
# A 32 px crop of 8 px patches: a 4 x 4 base grid, 4 x 4 per AnyRes tile.
DEFAULTS["llava_onevision"] = dict(DEFAULTS["llava"], patch_size=8, num_layers=2)
# image_size: an InternVL tile's side (a picture is cut into up to max_tiles of them).
DEFAULTS["internvl_chat"] = dict(internvl.DEFAULTS)
DEFAULTS["internvl"] = dict(internvl.DEFAULTS)
DTYPES = ("float32", "float16", "bfloat16")


def _sizes(knobs, vocab) -> dict:
    """Fill the knobs left to defaults (intermediate sizes, vocabulary)."""
    k = dict(knobs)
    k["intermediate_size"] = k["intermediate_size"] or 2 * k["hidden_size"]
    k["vision_intermediate_size"] = (
        k["vision_intermediate_size"] or 2 * k["vision_hidden_size"]
    )
    if k["vocab_size"] is not None and k["vocab_size"] < len(vocab):
        raise ValueError(f"vocab_size must be at least {len(vocab)} (the tokenizer's)")
    k["vocab_size"] = k["vocab_size"] or len(vocab) + 4  # head-room, as real ones have
    if k["dtype"] not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
    return k


_WORDS = (
    "a an the is are what where how many of in on left right top bottom red green blue "
    "yellow circle square triangle shape color image picture there one two three four "
    "yes no and or it this that describe answer question . , ? !"
).split()

_LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% elif m['role'] == 'assistant' %}ASSISTANT: {% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if m['role'] == 'assistant' %}</s>{% else %}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
_LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
_CLIP_MEAN, _CLIP_STD = [0.4815, 0.4578, 0.4082], [0.2686, 0.2613, 0.2758]


def _vocab(specials):
    tokens = list(specials) + [w for w in _WORDS if w not in specials]
    return {t: i for i, t in enumerate(tokens)}


def _write_tokenizer(path: Path, specials, vocab, template, **special_names):
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(
        [AddedToken(s, special=True, normalized=False) for s in specials]
    )
    tok.save(str(path / "tokenizer.json"))
    cfg = dict(
        tokenizer_class="PreTrainedTokenizerFast",
        model_max_length=4096,
        chat_template=template,
        **special_names,
    )
    _dump(path / "tokenizer_config.json", cfg)
    (path / "chat_template.jinja").write_text(template)


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2))


# Config literals below keep related keys on one line.
# fmt: off
def _llava_files(k, vocab):
    n_vocab = k["vocab_size"]
    config = dict(
        architectures=["LlavaForConditionalGeneration"], model_type="llava",
        image_token_index=vocab["<image>"], vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
        vocab_size=n_vocab, torch_dtype=k["dtype"], eos_token_id=vocab["</s>"],
        pad_token_id=vocab["<pad>"],
        text_config=dict(
            model_type="llama", hidden_size=k["hidden_size"], vocab_size=n_vocab,
            num_hidden_layers=k["num_layers"], intermediate_size=k["intermediate_size"],
            num_attention_heads=k["heads"], num_key_value_heads=k["kv_heads"],
            rms_norm_eps=1e-5, rope_theta=k["rope_theta"], max_position_embeddings=4096,
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            model_type="clip_vision_model", hidden_size=k["vision_hidden_size"],
            num_hidden_layers=k["vision_layers"], num_attention_heads=k["vision_heads"],
            intermediate_size=k["vision_intermediate_size"], image_size=k["image_size"],
            patch_size=k["patch_size"], projection_dim=k["hidden_size"],
            hidden_act="quick_gelu", layer_norm_eps=1e-5,
        ),
    )
    side = k["image_size"]
    preproc = dict(
        image_processor_type="CLIPImageProcessor", do_resize=True, do_center_crop=True,
        size={"shortest_edge": side}, crop_size={"height": side, "width": side},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=_CLIP_MEAN, image_std=_CLIP_STD, do_convert_rgb=True, resample=3,
    )
    proc = dict(
        processor_class="LlavaProcessor", patch_size=k["patch_size"],
        vision_feature_select_strategy="default", image_token="<image>",
        num_additional_image_tokens=1,
    )
    specials = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                    pad_token="<pad>")
    return config, preproc, proc, specials


# fmt: on


def _hf_weights(arch, config, seed):
    """Random weights under the names and layouts HF checkpoints on the hub use."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm.utils import get_model_and_args, update_module_configs

    mx.random.seed(seed)
    model_class, _ = get_model_and_args(json.loads(json.dumps(config)))
    cfg = json.loads(json.dumps(config))
    cfg.setdefault("text_config", cfg.pop("llm_config", {}))  # as mlx-vlm's load
    model_config = model_class.ModelConfig.from_dict(cfg)
    model_config = update_module_configs(
        model_config, model_class, cfg, ["text", "vision"]
    )
    weights = {}
    for name, value in tree_flatten(model_class.Model(model_config).parameters()):
        if arch in ("smolvlm", "lfm2_vl", "internvl_chat", "internvl"):
            pass  # their own hf_name converts these
        elif name.endswith("patch_embedding.weight"):  # CLIP conv: MLX OHWI -> OIHW
            value = value.transpose(0, 3, 1, 2)
        elif name.endswith("patch_embed.proj.weight"):  # Qwen conv3d: OTHWI -> OITHW
            value = value.transpose(0, 4, 1, 2, 3)
        elif name.endswith("conv1d.weight"):  # GatedDeltaNet conv1d: MLX OKI -> OIK
            value = value.transpose(0, 2, 1)
        if arch == "gemma3":
            name = gemma3_checkpoint.hf_name(name)
            if name is None:
                continue
        elif arch in ("smolvlm", "lfm2_vl"):
            name, value = tiled.hf_name(arch, name, value)
        elif arch in ("internvl_chat", "internvl"):
            name, value = internvl.hf_name(name, value)
        weights[name] = value
    return qwen.hf_weights(arch, weights) if arch in qwen.ARCHS else weights


def _same_for_every_arch(files):
    """``files(knobs, vocab)`` as the ``files(arch, knobs, vocab)`` _LAYOUTS wants."""
    return lambda arch, knobs, vocab: files(knobs, vocab)


# arch -> (special tokens, files(arch, knobs, vocab), chat template)
_LAYOUTS = {
    **{arch: (qwen.SPECIALS, qwen.files, qwen.TEMPLATE) for arch in qwen.ARCHS},
    "llava": (_LLAVA_SPECIALS, _same_for_every_arch(_llava_files), _LLAVA_TEMPLATE),
    "smolvlm": (
        tiled.SMOLVLM_SPECIALS,
        _same_for_every_arch(tiled.smolvlm_files),
        tiled.SMOLVLM_TEMPLATE,
    ),
    "lfm2_vl": (
        tiled.LFM2_SPECIALS,
        _same_for_every_arch(tiled.lfm2_vl_files),
        tiled.LFM2_TEMPLATE,
    ),
    "llava_onevision": (
        tiled.ONEVISION_SPECIALS,
        _same_for_every_arch(tiled.onevision_files),
        tiled.ONEVISION_TEMPLATE,
    ),
    "internvl_chat": (
        internvl.SPECIALS,
        _same_for_every_arch(internvl.chat_files),
        internvl.CHAT_TEMPLATE,
    ),
    "internvl": (
        internvl.SPECIALS,
        _same_for_every_arch(internvl.hf_files),
        internvl.HF_TEMPLATE,
    ),
    "gemma3": (
        gemma3_checkpoint.SPECIALS,
        _same_for_every_arch(gemma3_checkpoint.gemma3_files),
        gemma3_checkpoint.TEMPLATE,
    ),
}


def write_checkpoint(arch: str, path, *, seed: int = 0, **size_overrides) -> Path:
    """Write a tiny random ``arch`` checkpoint in HF layout to ``path``; returns it.

    ``size_overrides`` change the knobs in ``DEFAULTS[arch]``: widths and depths
    (``hidden_size``, ``num_layers``, ``intermediate_size``, ``heads``, ``kv_heads``,
    ``vision_*``), ``vocab_size``, ``image_size``, ``patch_size``, ``rope_theta`` and
    the stored ``dtype``. Weights are built in float32 first, so a full-size config
    needs that much memory.
    """
    import mlx.core as mx

    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    unknown = set(size_overrides) - set(DEFAULTS[arch])
    if unknown:
        raise ValueError(f"unknown size overrides for {arch}: {sorted(unknown)}")
    specials, files, template = _LAYOUTS[arch]
    vocab = _vocab(specials)
    knobs = _sizes({**DEFAULTS[arch], **size_overrides}, vocab)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config, preproc, proc, names = files(arch, knobs, vocab)
    generation = config.pop("generation_config", None)  # its own file on the hub
    if generation is not None:
        _dump(path / "generation_config.json", generation)
    _dump(path / "config.json", config)
    _dump(path / "preprocessor_config.json", preproc)
    if proc is not None:  # not every hub layout ships one
        _dump(path / "processor_config.json", proc)
    _write_tokenizer(path, specials, vocab, template, **names)
    dtype = getattr(mx, knobs["dtype"])
    weights = {k: v.astype(dtype) for k, v in _hf_weights(arch, config, seed).items()}
    mx.save_safetensors(
        str(path / "model.safetensors"), weights, metadata={"format": "pt"}
    )
    return path


def write_image(path, size: int = 32, seed: int = 0, height=None) -> Path:
    """Write a small RGB PNG of 4 x 4 coloured blocks (deterministic in ``seed``),
    ``size`` pixels wide and ``height`` (default ``size``) high."""
    import numpy as np
    from PIL import Image

    height = height or size
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    block = (height // 4 + 1, size // 4 + 1, 1)
    pixels = np.kron(cells, np.ones(block, dtype=np.uint8))
    Image.fromarray(pixels[:height, :size]).save(path)
    return Path(path)
