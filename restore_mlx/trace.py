"""Trace one prefill for the eval harness: the last position's logits and final-norm
output, and how much attention the last query gives the visual keys."""

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from .adapters.patching import final_norm
from .state import patched_state


@dataclass
class PrefillTrace:
    """One prefill: last-position ``logits`` [B, V], final-norm ``hidden`` [B, D], and
    ``visual_attention`` [B] (last query's attention share on visual keys, mean over
    heads and layers; with calibration, the share of the calibrated softmax)."""

    logits: mx.array
    hidden: mx.array
    visual_attention: mx.array


class _Capture(nn.Module):
    """Wraps the final norm for one call to record the last position's output."""

    def __init__(self, norm, out):
        super().__init__()
        self.norm = norm
        self._out = out

    @property
    def weight(self):
        # idefics3's language model reads its dtype from the final norm's weight.
        return self.norm.weight

    def __call__(self, x):
        y = self.norm(x)
        self._out.append(y[:, -1, :])
        return y


def inspect_prefill(model, prepared) -> PrefillTrace:
    """Prefill ``prepared`` (a ``PreparedPrompt``) once, as generate would, and trace
    it (see ``PrefillTrace``)."""
    from mlx_vlm.models.cache import make_prompt_cache

    state = patched_state(model)
    state.set_prompt(prepared.prompt)
    lm = model.language_model
    kwargs = dict(prepared.generate_kwargs)
    pixels = kwargs.pop("pixel_values", None)
    ids = prepared.input_ids
    mask = kwargs.pop("mask", None)  # the merge's attention mask (gemma3 needs one)
    emb = model.get_input_embeddings(ids, pixels, mask=mask, **kwargs)
    extra = {
        k: v for k, v in emb.to_dict().items() if k != "inputs_embeds" and v is not None
    }
    # As in generate_step: explicit positions win over the embedding helper's.
    extra.update({k: kwargs[k] for k in ("position_ids", "rope_deltas") if k in kwargs})
    hidden, trace = [], []
    owner, name = final_norm(model)
    norm = getattr(owner, name)
    setattr(owner, name, _Capture(norm, hidden))
    state.trace = trace
    try:
        out = lm(
            ids,
            inputs_embeds=emb.inputs_embeds,
            cache=make_prompt_cache(lm),
            **{**kwargs, **extra},
        )
        logits = out.logits[:, -1, :]
        mx.eval(logits, hidden, trace)
    finally:
        setattr(owner, name, norm)
        state.trace = None
    share = mx.stack(trace).mean(axis=0) if trace else mx.zeros((ids.shape[0],))
    return PrefillTrace(logits=logits, hidden=hidden[0], visual_attention=share)
