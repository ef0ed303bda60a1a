"""The model under test and its one prepared request, for ``restore_mlx.bench``.

A built-in config is instantiated with random fp32 weights and a synthetic request:
the published chat template's shape (system turn, user turn with the image, a short
question, assistant header) with arbitrary text ids, random pixels of the right shape.
A path or hub id is loaded with its real weights and processor and asked about a
noise image. Either way the processor work is done once, outside every timing.
"""

from dataclasses import dataclass, field
from typing import Optional

import mlx.core as mx
import numpy as np
from mlx_vlm.models.llava_onevision import llava_onevision as onevision

from ..adapters import internvl as internvl_adapter
from ..adapters import llava_onevision as ov_adapter
from ..adapters.processors import load
from ..core.budget import resolve_budget
from ..errors import InputError
from .configs import BUILTIN, get_config

QUESTION = "Describe this image in detail."
# Text around the image in Qwen's chat template (system + user header, question +
# end of turn + assistant header), in tokens: what a real request prefills besides it.
TEXT_BEFORE, TEXT_AFTER = 14, 13


@dataclass
class Subject:
    """A model, its request (``sample``: input_ids, pixel_values, extras) and sizes."""

    name: str
    about: str
    model: object
    sample: dict
    visual_tokens: int
    kv_shape: Optional[list] = field(default=None, repr=False)
    fixed_tokens: int = 0  # visual tokens no reduction touches (row newlines)

    @property
    def prompt_tokens(self) -> int:
        return self.sample["input_ids"].shape[1]

    def prompt_tokens_at(self, keep: float) -> int:
        """Prompt length after reducing the visual tokens to a ``keep`` fraction."""
        n = self.visual_tokens - self.fixed_tokens
        return self.prompt_tokens - n + resolve_budget(n, keep=keep)

    def split(self):
        """(input_ids, pixel_values, other generate keywords)."""
        extra = {
            k: v
            for k, v in self.sample.items()
            if k not in ("input_ids", "pixel_values")
        }
        return self.sample["input_ids"], self.sample["pixel_values"], extra


def build_model(config: dict):
    """An mlx-vlm model from a config dict, as ``mlx_vlm.utils.load_model`` builds it,
    with its random initial weights (fp32), evaluated."""
    from mlx_vlm.utils import get_model_and_args, update_module_configs

    arch, _ = get_model_and_args(config)
    config.setdefault("text_config", {})
    config.setdefault("vision_config", {})
    model_config = arch.ModelConfig.from_dict(config)
    modules = ["text", "vision", "perceiver", "projector", "audio"]
    model_config = update_module_configs(model_config, arch, config, modules)
    model = arch.Model(model_config)
    mx.eval(model.parameters())
    return model


def _text(rng, n, vocab):
    # Ordinary word ids: inside the vocabulary, below the special tokens at its end.
    hi = min(30000, vocab - 16)
    return rng.integers(min(1000, hi // 4), hi, size=n).tolist()


def synthetic_sample(config: dict, side: int, seed: int = 0, images: int = 1):
    """(sample, number of visual tokens) for ``images`` ``side`` x ``side`` images,
    one after another in the user turn (as the published templates place them),
    each with its own random pixels."""
    rng = np.random.default_rng(seed)
    vocab = config.get("text_config", {}).get("vocab_size") or config["vocab_size"]
    before, after = _text(rng, TEXT_BEFORE, vocab), _text(rng, TEXT_AFTER, vocab)
    if "bench_views" in config and images > 1:
        raise InputError(
            f"--images {images}: the tiled built-ins ({config['model_type']}) measure "
            "one image; use qwen2-vl-2b, llava-ov-0.5b, gemma3-4b, internvl3-1b or a "
            "checkpoint"
        )
    if config["model_type"].startswith("qwen"):
        vc = config["vision_config"]
        g = side // vc["patch_size"]
        n = g * g // vc["spatial_merge_size"] ** 2
        image = [config["vision_start_token_id"]]
        image += [config["image_token_id"]] * n + [config["vision_end_token_id"]]
        channels = 3 * vc["temporal_patch_size"] * vc["patch_size"] ** 2
        pixels = rng.standard_normal((images * g * g, channels)).astype(np.float32)
        extra = {"image_grid_thw": mx.array([[1, g, g]] * images)}
    elif config["model_type"] == "gemma3":
        n = config["mm_tokens_per_image"]
        image = [config["boi_token_index"]] + [config["image_token_index"]] * n
        image += [config["eoi_token_index"]]
        pixels = rng.standard_normal((images, 3, side, side)).astype(np.float32)
        length = len(before) + images * len(image) + len(after)
        extra = {"mask": mx.ones((1, length), dtype=mx.int32)}  # the merge needs one
    elif config["model_type"] == "internvl_chat":
        image, n, pixels, extra = _internvl_request(config, side, rng, images)
    elif "bench_views" in config:
        image, n, pixels, extra = _tiled_request(config, rng, vocab)
    else:
        vc = config["vision_config"]
        n = (side // vc["patch_size"]) ** 2
        image = [config["image_token_index"]] * n
        pixels = rng.standard_normal((images, 3, side, side)).astype(np.float32)
        extra = {}
    ids = mx.array([before + image * images + after])
    return dict(input_ids=ids, pixel_values=mx.array(pixels), **extra), n * images


def _tiled_request(config: dict, rng, vocab: int):
    """(image ids, visual tokens, pixel_values, extras) of one image cut into the
    views ``config["bench_views"]`` (tiles, then the global view): each view a run of
    image tokens after a marker token, as the SmolVLM / LFM2-VL processors lay them
    out (the marker ids are arbitrary: adapters read them from the prompt)."""
    views, vc = config["bench_views"], config["vision_config"]
    p = vc["patch_size"]
    lfm2 = config["model_type"].startswith("lfm2")
    f = config["downsample_factor"] if lfm2 else config["scale_factor"]
    token = config.get("image_token_index") or config["image_token_id"]
    markers = [
        vocab - 2 - i for i in range(len(views))
    ]  # the last marks the global view
    image = []
    for marker, (h, w) in zip(markers[::-1], views):
        image += [marker] + [token] * (-(-h // f) * -(-w // f))
    n = sum(-(-h // f) * -(-w // f) for h, w in views)
    image += [vocab - 1]  # image end
    if not lfm2:  # [1, V, 3, H, W] images
        h, w = views[0]
        pixels = rng.standard_normal((1, len(views), 3, h * p, w * p))
        return image, n, pixels.astype(np.float32), {}
    most = max(h * w for h, w in views)  # packed patch rows, padded to the longest
    pixels = np.zeros((len(views), most, 3 * p * p), np.float32)
    mask = np.zeros((len(views), most), np.int32)
    for i, (h, w) in enumerate(views):
        pixels[i, : h * w] = rng.standard_normal((h * w, 3 * p * p))
        mask[i, : h * w] = 1
    extra = {
        "pixel_attention_mask": mx.array(mask),
        "spatial_shapes": mx.array(np.array(views, dtype=np.int32)),
    }
    return image, n, pixels, extra


def _internvl_request(config: dict, side: int, rng, images: int = 1):
    """(image ids, visual tokens, pixel_values, extras) of one ``side`` x ``side``
    picture (pixels for ``images`` of them) cut into tiles as mlx-vlm's InternVL processor cuts it (a thumbnail after
    several tiles), 256 tokens per tile between ``<img>`` and ``</img>``."""
    tile = config["vision_config"]["image_size"]
    cols, rows = internvl_adapter.tile_grid((side, side))
    tiles = cols * rows + (1 if cols * rows > 1 else 0)
    per_tile = int((tile // config["vision_config"]["patch_size"]) ** 2 * 0.25)
    n = tiles * per_tile
    token = config["image_token_index"]
    image = [token - 2] + [token] * n + [token - 1]  # <img> ... </img>
    pixels = rng.standard_normal((images * tiles, 3, tile, tile)).astype(np.float32)
    return image, n, pixels, {}


def _load_real(spec: str, images: int = 1) -> Subject:
    """A checkpoint (path or hub id) with its processor, asked about ``images`` noise
    images."""
    from mlx_vlm.prompt_utils import apply_chat_template
    from mlx_vlm.utils import prepare_inputs
    from PIL import Image

    model, processor = load(spec)
    rng = np.random.default_rng(0)
    noise = [
        Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8))
        for _ in range(images)
    ]
    prompt = apply_chat_template(processor, model.config, QUESTION, num_images=images)
    inputs = prepare_inputs(
        processor,
        images=noise,
        prompts=prompt,
        image_token_index=getattr(model.config, "image_token_index", None),
    )
    sample = {
        k: v for k, v in inputs.items() if k != "attention_mask" and v is not None
    }
    if model.config.model_type == "gemma3":  # its merge needs the attention mask
        sample["mask"] = inputs["attention_mask"]
    token = getattr(model.config, "image_token_index", None)
    if token is None:
        token = model.config.image_token_id
    n = int((sample["input_ids"] == token).sum().item())
    return Subject(spec, f"{spec} (real weights, {images} image(s))", model, sample, n)


def load_subject(
    spec: str, image_size: Optional[int] = None, images: int = 1
) -> Subject:
    """A built-in config name (random weights) or a checkpoint path / hub id, asked
    about ``images`` images in one prompt.

    ``image_size`` overrides a built-in's image side (Qwen2-VL: any multiple of 28).
    """
    if images < 1:
        raise InputError(f"--images must be at least 1, got {images}")
    if spec not in BUILTIN:
        return _load_real(spec, images)
    config, side, about = get_config(spec)
    if image_size and image_size != side:
        side, about = image_size, f"{about.split(',')[0]}, {image_size} px"
    if images > 1:
        about = f"{about}, {images} images"
    if config["model_type"] == "llava_onevision":
        return _onevision_subject(spec, about, config, side, images)
    sample, n = synthetic_sample(config, side, images=images)
    config.pop("bench_views", None)
    if config["model_type"] == "llava":
        config["vision_config"]["image_size"] = side
    return Subject(spec, f"{about} ({n} visual tokens)", build_model(config), sample, n)


def _onevision_subject(spec, about, config, side, images=1) -> Subject:
    """LLaVA-OneVision on ``images`` ``side`` x ``side`` images: random pixels for
    each one's base crop and AnyRes tiles, as many image tokens as mlx-vlm packs for
    that size."""
    model = build_model(config)
    segments, crops = onevision_layout(model, (side, side))
    n = max(s.end for s in segments) * images
    fixed = sum(s.length for s in segments if not s.reducible) * images
    rng = np.random.default_rng(0)
    vocab = config["text_config"]["vocab_size"]
    image = [config["image_token_index"]] * n
    ids = _text(rng, TEXT_BEFORE, vocab) + image + _text(rng, TEXT_AFTER, vocab)
    crop = config["vision_config"]["image_size"]
    pixels = rng.standard_normal((images, crops, 3, crop, crop)).astype(np.float32)
    sample = dict(
        input_ids=mx.array([ids]),
        pixel_values=mx.array(pixels),
        image_sizes=mx.array([[side, side]] * images),
    )
    about = f"{about} ({n} visual tokens, {fixed} of them row newlines)"
    return Subject(spec, about, model, sample, n, fixed_tokens=fixed)


def onevision_layout(model, size) -> tuple:
    """(segments: base, tiles, newlines; tower crops) of one image of ``size`` (h, w)."""
    cfg = model.config
    crops = onevision.image_size_to_num_patches(
        list(size), cfg.image_grid_pinpoints, cfg.vision_config.image_size
    )
    return ov_adapter.image_segments(model, list(size), crops, 0, 0), crops
