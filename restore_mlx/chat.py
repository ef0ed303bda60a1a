"""A conversation about fixed images (``python -m restore_mlx.generate --chat``).

The images are encoded and reduced once, on the first turn; every later turn gets
the same reduction (``prepare_tokens(..., encoded=, reduction=)``), so the reduced
prompt of turn k starts with the reduced prompt of turn k - 1. The KV cache of the
previous turn is kept and only what follows that prefix is prefilled: the answer of
the previous turn and the new message.

What is reused is the previous turn's *prompt*, not its answer: the answer's keys
were computed while decoding, with the decode-time bias (sizes only), while the same
tokens in the next prompt are prefilled with the prefill bias (sizes and RoPE
distance). Keeping them would make a turn differ from the same prompt run afresh.

mlx-vlm's own ``--chat`` re-prefills the whole conversation every turn, and its
prompt-cache reuse (``PromptCacheState``) would recompute Qwen positions from the
reduced ids; the reuse here keeps the prompt's original positions.

mlx-vlm is imported inside functions: ``import restore_mlx`` must stay cheap.
"""

from dataclasses import dataclass, field
from typing import Optional

from .integration import encode_image, is_applied, prepare_tokens, tokenize_prompt

# Keywords of a prepared prompt that carry its images: a text-only suffix drops them.
IMAGE_KWARGS = ("pixel_values", "cached_image_features", "deepstack_visual_embeds")


@dataclass
class ChatTurn:
    """One answered turn: its text and what its prompt cost."""

    text: str
    prompt_tokens: int  # the (reduced) prompt of this turn
    reused_tokens: int  # served from the previous turn's KV cache
    visual_tokens_before: int = 0
    visual_tokens_after: int = 0

    @property
    def prefilled_tokens(self) -> int:
        return self.prompt_tokens - self.reused_tokens


class PromptCache:
    """The KV cache of the last turn and the prompt ids whose keys it holds as a
    prefill computes them (the prompt, not the answer decoded after it)."""

    def __init__(self):
        self.cache = None
        self.ids: list = []

    def reusable(self, ids: list) -> int:
        """How many leading tokens of ``ids`` the cache can serve (0: none). At least
        one token is always left to prefill: it gives the first answer token."""
        if self.cache is None or not all(c.is_trimmable() for c in self.cache):
            return 0
        same = 0
        for a, b in zip(self.ids, ids[:-1]):
            if a != b:
                break
            same += 1
        return same

    def take(self, model, keep: int, max_kv_size=None) -> list:
        """The cache trimmed to its first ``keep`` tokens (a fresh one when 0)."""
        from mlx_vlm.models import cache as vlm_cache

        if keep == 0:
            self.cache = vlm_cache.make_prompt_cache(
                model.language_model, max_kv_size=max_kv_size
            )
            return self.cache
        for c in self.cache:
            extra = c.offset - keep
            if extra > 0:
                c.trim(extra)
        return self.cache


def turn_kwargs(prepared, cache: list, keep: int) -> dict:
    """mlx-vlm keywords that prefill ``prepared`` after its first ``keep`` tokens,
    which ``cache`` holds: the suffix ids (text only: every image token is in the
    kept prefix), the prompt's own positions (the model reads them at the cache's
    offset) and no image inputs."""
    kwargs = dict(prepared.generate_kwargs)
    if keep:
        for name in IMAGE_KWARGS:
            kwargs.pop(name, None)
        if kwargs.get("mask") is not None:  # the embedding step's (gemma3's merge)
            kwargs["mask"] = kwargs["mask"][:, keep:]
    kwargs["input_ids"] = prepared.input_ids[:, keep:]
    kwargs["prompt_cache"] = cache
    return kwargs


@dataclass
class ChatSession:
    """A conversation with ``model`` about ``images`` (paths or PIL images), reduced
    with the model's applied recipe (or ``config``)."""

    model: object
    processor: object
    images: list
    config: object = None
    system: Optional[str] = None
    processing: dict = field(default_factory=dict)  # resize_shape, processor_kwargs
    messages: list = field(default_factory=list)

    def __post_init__(self):
        if self.system:
            self.messages.append({"role": "system", "content": self.system})
        self._cache = PromptCache()
        self._encoded = self._reduction = None

    def ask(self, text: str, on_text=None, **generation_kwargs) -> ChatTurn:
        """Answer ``text`` (streamed to ``on_text``) in the conversation so far."""
        from mlx_vlm import stream_generate

        user = self._user_message(text)
        prompt = self._format([*self.messages, user])
        prepared = self._prepare(prompt)
        ids = prepared.input_ids[0].tolist()
        keep = self._cache.reusable(ids)
        cache = self._cache.take(self.model, keep, generation_kwargs.get("max_kv_size"))
        kwargs = {**generation_kwargs, **turn_kwargs(prepared, cache, keep)}
        answer = []
        for chunk in stream_generate(self.model, self.processor, prompt, **kwargs):
            answer.append(chunk.text)
            if on_text is not None:
                on_text(chunk.text)
        self._cache.ids = ids
        reply = "".join(answer)
        self.messages += [user, {"role": "assistant", "content": reply}]
        return ChatTurn(
            reply,
            len(ids),
            keep,
            prepared.visual_tokens_before,
            prepared.visual_tokens_after,
        )

    def _user_message(self, text: str) -> dict:
        """The first user message carries the images (as explicit parts, so that
        mlx-vlm's template keeps them there instead of on the latest message)."""
        if self.messages and any(m["role"] == "user" for m in self.messages):
            return {"role": "user", "content": text}
        parts = [{"type": "image"} for _ in self.images]
        return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}

    def _format(self, messages) -> str:
        from mlx_vlm.prompt_utils import apply_chat_template

        return apply_chat_template(
            self.processor, self.model.config, messages, num_images=len(self.images)
        )

    def _prepare(self, prompt):
        """The reduced prompt; the images are encoded and reduced on the first turn
        only."""
        sample = tokenize_prompt(
            self.model, self.processor, prompt, self.images, **self.processing
        )
        if not self.images or not is_applied(self.model):
            return prepare_tokens_plain(sample)
        if self._encoded is None:
            self._encoded = encode_image(self.model, sample, config=self.config)
        prepared = prepare_tokens(
            self.model,
            sample,
            config=self.config,
            encoded=self._encoded,
            reduction=self._reduction,
        )
        self._reduction = prepared.reduction
        return prepared


@dataclass
class _Plain:
    """A text-only prompt in the shape of a prepared one."""

    input_ids: object
    generate_kwargs: dict
    visual_tokens_before: int = 0
    visual_tokens_after: int = 0


def prepare_tokens_plain(sample) -> _Plain:
    extras = {k: v for k, v in sample.items() if k != "input_ids"}
    return _Plain(sample["input_ids"], extras)
