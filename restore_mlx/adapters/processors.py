"""Processor fixes for mlx-vlm 0.7.10 under transformers 5, applied on load.

mlx-vlm's ``LlavaProcessor.__call__`` forwards every keyword it gets to
``self.image_processor(images, **kwargs)``. ``mlx_vlm.utils.process_inputs`` calls it
with ``padding=True`` (a tokenizer option), and transformers 5 image processors validate
their keywords (``ImagesKwargs``) and raise ``TypeError: ... unexpected keyword argument
'padding'``, so ``mlx_vlm.generate`` fails on every llava image prompt.

The fix is per instance and at the narrowest point: the processor's image processor gets
a subclass (same class name, so ``save_pretrained`` writes the same config) whose
``__call__`` drops tokenizer-only keywords it does not itself accept. Nothing global is
patched; other processors are left alone.
"""

_FIXED_CLASSES = {}


def _tokenizer_only_keys(image_processor) -> frozenset:
    """Tokenizer keywords the image processor would reject."""
    from transformers.processing_utils import TextKwargs

    valid = getattr(image_processor, "valid_kwargs", None)
    accepted = set(getattr(valid, "__annotations__", {}))
    return frozenset(set(TextKwargs.__annotations__) - accepted)


class _DropTokenizerKwargs:
    """Mixin: an image processor that ignores keywords meant for the tokenizer."""

    _restore_mlx_fixed = True

    def __call__(self, images, *args, **kwargs):
        for key in _tokenizer_only_keys(self) & kwargs.keys():
            del kwargs[key]
        return super().__call__(images, *args, **kwargs)


def _fixed_class(cls):
    if cls not in _FIXED_CLASSES:
        # Same __name__ and __module__: saved configs keep their image_processor_type.
        attrs = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        _FIXED_CLASSES[cls] = type(cls.__name__, (_DropTokenizerKwargs, cls), attrs)
    return _FIXED_CLASSES[cls]


def needs_fix(processor) -> bool:
    """True for an mlx-vlm LlavaProcessor whose image processor is not yet fixed."""
    from mlx_vlm.models.llava.processing_llava import LlavaProcessor

    image_processor = getattr(processor, "image_processor", None)
    return (
        isinstance(processor, LlavaProcessor)
        and image_processor is not None
        and not getattr(image_processor, "_restore_mlx_fixed", False)
    )


def fix_processor(processor):
    """Apply the known mlx-vlm processor workarounds to ``processor`` in place.

    Idempotent; returns ``processor``. Processors that need nothing are unchanged.
    """
    if needs_fix(processor):
        image_processor = processor.image_processor
        image_processor.__class__ = _fixed_class(type(image_processor))
    return processor


def load(path_or_hf_repo, **kwargs):
    """``mlx_vlm.utils.load``, then :func:`fix_processor`: ``(model, processor)``."""
    from mlx_vlm.utils import load as vlm_load

    model, processor = vlm_load(str(path_or_hf_repo), **kwargs)
    return model, fix_processor(processor)
