"""Generate with RESTORE visual token reduction: ``generate`` and ``stream_generate``.

They take the same arguments as mlx-vlm's. When the model has RESTORE applied
(``restore_mlx.apply``) and there is an image, the prompt is reduced first
(``restore_mlx.prepare_inputs``) and mlx-vlm generates from the reduced sequence;
otherwise they are plain mlx-vlm. While reducing, ``resize_shape`` and
``processor_kwargs`` (a dict) go to the processor, and a rotating cache
(``max_kv_size``) that the reduced prompt plus ``max_tokens`` would wrap raises
KVCacheTooSmall (a ValueError) instead of misplacing RESTORE's biases.

mlx-vlm is imported inside functions: ``import restore_mlx`` binds these functions
and must stay cheap.
"""

from .errors import KVCacheTooSmall
from .integration import is_applied, prepare_inputs


def _as_list(image) -> list:
    if image is None:
        return []
    return list(image) if isinstance(image, (list, tuple)) else [image]


def _reduces(model, images) -> bool:
    return bool(images) and is_applied(model)


# Keywords of a generate call that shape the processor's input, not mlx-vlm's decoding.
PROCESSING_KWARGS = ("resize_shape", "processor_kwargs")


def check_cache_fits(prompt_tokens: int, kwargs: dict) -> None:
    """KVCacheTooSmall unless ``max_kv_size`` (if set) holds the prompt and the answer.

    RESTORE biases keys by their position in the cache; a rotating cache that wraps
    overwrites old keys in place, so the biases would miss (or fail on a shape)."""
    size = kwargs.get("max_kv_size")
    if size is None:
        return
    from mlx_vlm.generate.common import DEFAULT_MAX_TOKENS

    max_tokens = kwargs.get("max_tokens", DEFAULT_MAX_TOKENS)
    need = prompt_tokens + max_tokens
    if need > size:
        raise KVCacheTooSmall(
            f"max_kv_size {size} cannot hold the reduced prompt ({prompt_tokens} "
            f"tokens) plus max_tokens {max_tokens}: the rotating KV cache would wrap "
            f"and misplace RESTORE's biases; set max_kv_size to at least {need}, "
            "lower max_tokens, or leave max_kv_size unset"
        )


def reduced_call(model, processor, prompt, images, kwargs):
    """Reduce the prompt; the keyword arguments that hand it to mlx-vlm.

    ``resize_shape`` and ``processor_kwargs`` (a dict) in ``kwargs`` go to the
    processor; KVCacheTooSmall when ``max_kv_size`` cannot hold the reduced prompt
    and ``max_tokens``."""
    kwargs = dict(kwargs)
    processing = {k: kwargs.pop(k) for k in PROCESSING_KWARGS if k in kwargs}
    prepared = prepare_inputs(model, processor, prompt, images, **processing)
    if prepared.reduction is not None:
        check_cache_fits(prepared.prompt_tokens, kwargs)
    merged = {**kwargs, **prepared.generate_kwargs, "input_ids": prepared.input_ids}
    return prepared, merged


def stream_generate(model, processor, prompt, image=None, **kwargs):
    """Like ``mlx_vlm.stream_generate``, reducing the visual tokens when RESTORE is
    applied to ``model`` and there is an image. Yields mlx-vlm ``GenerationResult``s."""
    from mlx_vlm import stream_generate as vlm_stream_generate

    images = _as_list(image)
    if _reduces(model, images):
        _, kwargs = reduced_call(model, processor, prompt, images, kwargs)
    yield from vlm_stream_generate(model, processor, prompt, images or None, **kwargs)


def generate(model, processor, prompt, image=None, **kwargs):
    """Like ``mlx_vlm.generate`` (returns its ``GenerationResult``), reducing the visual
    tokens when RESTORE is applied to ``model`` and there is an image."""
    from mlx_vlm import generate as vlm_generate

    images = _as_list(image)
    if _reduces(model, images):
        _, kwargs = reduced_call(model, processor, prompt, images, kwargs)
    return vlm_generate(model, processor, prompt, images or None, **kwargs)
