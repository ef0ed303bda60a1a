"""The probe's word-level tokenizer and the non-weight files of its checkpoint.

The files follow a real mlx-vlm checkpoint, so ``mlx_vlm.utils.load`` reads them
offline: tokenizer.json (a ``tokenizers`` WordLevel model), tokenizer_config.json,
special_tokens_map.json, preprocessor_config.json (llava: CLIP image processor, resize
to 96 x 96, no crop; qwen2_vl: Qwen2-VL image processor, 4 px patches, merge 2, pinned
to 96 x 96; both mean = std = 0.5) and processor_config.json.

The qwen2_vl vocabulary is the llava one plus Qwen's vision tokens at the end, so
every word has the same id in both.
"""

import json
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

from . import qwen
from .questions import answer_words, question_words
from .scenes import IMAGE_SIZE, PATCH

PAD, EOS, UNK, IMAGE = "<pad>", "</s>", "<unk>", "<image>"
SPECIALS = (PAD, EOS, UNK, IMAGE)
MEAN = STD = (0.5, 0.5, 0.5)
# The prompt the probe was trained on: the image, then the question, nothing else.
PROMPT_FORMAT = IMAGE + "{question}"


# mlx-vlm formats prompts with the checkpoint's chat template; this one renders a user
# turn as PROMPT_FORMAT (image first, whatever order mlx-vlm lists the parts in) and
# drops other roles. An image token already in the text is not added twice.
def _chat_template(present: str, images: str) -> str:
    """A chat template that renders a user turn as its images then its text, drops
    other roles, and adds the images only when the text lacks ``present``
    (``images`` is Jinja that may read ``ns.images``, the turn's image count)."""
    return (
        "{%- for m in messages -%}{%- if m['role'] == 'user' -%}"
        "{%- if m['content'] is string -%}{{ m['content'] }}{%- else -%}"
        "{%- set ns = namespace(text='', images=0) -%}"
        "{%- for c in m['content'] -%}"
        "{%- if c['type'] == 'image' -%}{%- set ns.images = ns.images + 1 -%}"
        "{%- elif c['type'] == 'text' -%}{%- set ns.text = ns.text + c['text'] -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if " + present + " -%}" + images + "{%- endif -%}"
        "{{ ns.text }}{%- endif -%}{%- endif -%}{%- endfor -%}"
    )


CHAT_TEMPLATE = _chat_template(f"ns.images > 0 and '{IMAGE}' not in ns.text", IMAGE)
# The same for qwen2_vl, one vision block per image: what mlx-vlm's Qwen2-VL processor
# expands into 144 image pads and ``get_rope_index`` reads.
QWEN_IMAGE = qwen.VISION_START + qwen.IMAGE_PAD + qwen.VISION_END
QWEN_CHAT_TEMPLATE = _chat_template(
    f"'{qwen.IMAGE_PAD}' not in ns.text",
    "{%- for i in range(ns.images) -%}" + QWEN_IMAGE + "{%- endfor -%}",
)


def specials(arch: str = "llava") -> tuple:
    """The special tokens of ``arch``'s vocabulary."""
    return SPECIALS + (qwen.SPECIALS if arch == "qwen2_vl" else ())


def words(arch: str = "llava") -> list:
    """The vocabulary in id order: special tokens first, then every other word once
    (qwen2_vl: then Qwen's vision tokens)."""
    out = list(SPECIALS)
    for w in [*question_words(), *answer_words()]:
        if w not in out:
            out.append(w)
    return out + list(specials(arch)[len(SPECIALS) :])


def build_tokenizer(arch: str = "llava") -> Tokenizer:
    """A WordLevel tokenizer over ``words(arch)`` that splits on whitespace, ignoring
    case and question marks."""
    vocab = {w: i for i, w in enumerate(words(arch))}
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    # Users type "What color is at B3?": case and question marks carry nothing here.
    tok.normalizer = normalizers.Sequence(
        [normalizers.Lowercase(), normalizers.Replace("?", " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Special tokens are matched before splitting, so "<image><image>" is two tokens.
    tok.add_special_tokens(list(specials(arch)))
    return tok


def normalize(images):
    """uint8 [B, H, W, 3] -> float32 NHWC pixels, as the saved image processor does."""
    import numpy as np

    x = np.asarray(images, dtype=np.float32) / np.float32(255.0)
    return (x - np.float32(MEAN[0])) / np.float32(STD[0])


def _qwen_processor_files() -> tuple:
    """(tokenizer_config extras, preprocessor_config, processor_config) for qwen2_vl."""
    side = IMAGE_SIZE * IMAGE_SIZE  # min = max pixels: every image becomes 96 x 96
    tok = {"image_token": qwen.IMAGE_PAD, "chat_template": QWEN_CHAT_TEMPLATE}
    pre = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
        "patch_size": qwen.PATCH,
        "temporal_patch_size": qwen.TEMPORAL,
        "merge_size": qwen.MERGE,
        "min_pixels": side,
        "max_pixels": side,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(qwen.MEAN),
        "image_std": list(qwen.STD),
        "do_convert_rgb": True,
    }
    return tok, pre, {"processor_class": "Qwen2VLProcessor"}


def write_side_files(path, arch: str = "llava") -> None:
    """Write tokenizer and processor files of the probe checkpoint into ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    build_tokenizer(arch).save(str(path / "tokenizer.json"))
    names = {"pad_token": PAD, "eos_token": EOS, "unk_token": UNK}
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 512,
        "add_bos_token": False,
        "add_eos_token": False,
        "padding_side": "right",
        "image_token": IMAGE,
        "extra_special_tokens": {"image_token": IMAGE},
        "chat_template": CHAT_TEMPLATE,
        **names,
    }
    pre = {
        "image_processor_type": "CLIPImageProcessor",
        "processor_class": "LlavaProcessor",
        "do_resize": True,
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "resample": 3,
        "do_center_crop": False,
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(MEAN),
        "image_std": list(STD),
        "do_convert_rgb": True,
    }
    proc = {
        "processor_class": "LlavaProcessor",
        "patch_size": PATCH,
        "vision_feature_select_strategy": "default",
        "image_token": IMAGE,
        "num_additional_image_tokens": 1,
    }
    template = CHAT_TEMPLATE
    if arch == "qwen2_vl":
        extra, pre, proc = _qwen_processor_files()
        tok_cfg.update(extra)
        del tok_cfg["extra_special_tokens"]
        template = extra["chat_template"]
    files = {
        "tokenizer_config.json": tok_cfg,
        "special_tokens_map.json": names,
        "preprocessor_config.json": pre,
        "processor_config.json": proc,
    }
    for name, content in files.items():
        (path / name).write_text(json.dumps(content, indent=2) + "\n")
    (path / "chat_template.jinja").write_text(template)
