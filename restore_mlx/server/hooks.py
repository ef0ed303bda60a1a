"""The only code that touches mlx-vlm 0.7.10's server internals.

``install`` wraps, in place and once, the few places where a request becomes model
inputs (``mlx_vlm/server/generation.py`` and ``request_normalization.py``):

- ``_build_gen_args`` (every endpoint, on the request's thread): the ``restore`` field
  is parsed and checked; a bad one raises ValueError, which mlx-vlm answers with 400.
- ``ResponseGenerator._initialize_model`` (model load, also a model swap): the
  processor fix and ``restore_mlx.apply`` with the server's recipe.
- ``ResponseGenerator.generate`` / ``_preprocess_request`` (request thread): the
  request's recipe rides in the processor output to the GPU thread.
- ``ResponseGenerator._gpu_embed`` (GPU thread): the image is reduced and the
  reduced prompt, its embeddings, positions and row id go to mlx-vlm's batch.
- ``ResponseGenerator._make_logits_processors``: raises, inside mlx-vlm's per-request
  ``try``, an error the reduction hit on the GPU thread, so that only this request
  fails (mlx-vlm's loop would otherwise fail the whole batch).
- ``BatchGenerator._apc_pick_for`` / ``_apc_prefix_has_media_tokens`` (prefix cache
  lookup): a reduced row may reuse a cached prefix that holds its image (below).
"""

import contextvars
import hashlib
import logging
import threading

from fastapi import HTTPException
from mlx_vlm.generate import ar as vlm_batching
from mlx_vlm.server import generation as vlm_generation
from mlx_vlm.server import request_normalization as vlm_requests

from ..adapters.batching import (
    batch_prompt_kwargs,
    carries_request,
    register,
    row_kwarg,
)
from ..adapters.processors import fix_processor
from ..convert import PRESET_KEY, read_model_config
from ..errors import RestoreError
from ..integration import apply, is_applied
from ..presets import get_preset
from .recipes import (
    FIELD,
    Reductions,
    RequestRecipe,
    check_runnable,
    describe,
    parse_field,
    recipe_key,
    supports,
)

logger = logging.getLogger("restore_mlx.server")


class BadRequest(HTTPException, ValueError):
    """HTTP 400 wherever mlx-vlm calls ``_build_gen_args`` (some callers turn a
    ValueError into 400, others let an HTTPException through)."""


RECIPE_KEY = "_restore_recipe"
REPORT = contextvars.ContextVar("restore_report", default=None)
_local = threading.local()
_settings = {"preset": None, "reductions": Reductions()}


def install(preset=None) -> None:
    """Wrap mlx-vlm's server functions (idempotent). ``preset`` overrides every
    model's recorded ``restore_preset``."""
    _settings["preset"] = preset
    RG = vlm_generation.ResponseGenerator
    if getattr(RG, "_restore_installed", False):
        return
    RG._restore_installed = True
    _wrap(RG, "_initialize_model", _initialize_model)
    _wrap(RG, "generate", _generate)
    _wrap(RG, "_preprocess_request", _preprocess_request)
    _wrap(RG, "_gpu_embed", _gpu_embed)
    _wrap(RG, "_make_logits_processors", _make_logits_processors)
    _wrap(vlm_requests, "_build_gen_args", _build_gen_args)
    install_prefix_reuse()


def install_prefix_reuse() -> None:
    """Let reduced rows of mlx-vlm's ``BatchGenerator`` reuse a cached prefix that
    holds their image (``_apc_pick_for``); idempotent."""
    BG = vlm_batching.BatchGenerator
    if getattr(BG, "_restore_prefix_reuse", False):
        return
    BG._restore_prefix_reuse = True
    _wrap(BG, "_apc_pick_for", _apc_pick_for)
    _wrap(BG, "_apc_prefix_has_media_tokens", _apc_prefix_has_media_tokens)


def _wrap(owner, name, hook):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        return hook(original, *args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = name, hook.__doc__
    setattr(owner, name, wrapper)


def reductions() -> Reductions:
    return _settings["reductions"]


def server_recipe(model):
    """The server's recipe for ``model``: --preset, else its recorded preset, else
    mobile-50 (what ``restore_mlx.generate`` picks too)."""
    name = _settings["preset"] or getattr(model, "_restore_preset", None)
    return get_preset(name or "mobile-50")


def _current_model():
    generator = vlm_generation.runtime.response_generator
    return getattr(generator, "model", None)


def _build_gen_args(original, request, *args, **kwargs):
    """mlx-vlm's arguments plus the request's recipe (``args.restore``)."""
    gen_args = original(request, *args, **kwargs)
    extra = getattr(request, "model_extra", None) or {}
    model = _current_model()
    if model is None or not supports(model):
        gen_args.restore = None
        return gen_args
    try:
        gen_args.restore = parse_field(extra.get(FIELD), server_recipe(model))
        check_runnable(model, gen_args.restore)
    except RestoreError as e:
        raise BadRequest(status_code=400, detail=str(e)) from None
    return gen_args


def _initialize_model(original, self):
    """Load as mlx-vlm does, then fix the processor and patch the model."""
    original(self)
    fix_processor(self.processor)
    self.model._restore_preset = _recorded_preset(self.model_path)
    if supports(self.model):
        apply(self.model, config=server_recipe(self.model))
        logger.info("RESTORE applied: %s", server_recipe(self.model))


def _recorded_preset(model_path):
    try:
        return read_model_config(model_path).get(PRESET_KEY)
    except Exception:  # a hub id without a local config: the default applies
        return None


def _generate(original, self, prompt, images=None, audio=None, args=None, **kw):
    """Carry the request's recipe to preprocessing; report what it did."""
    recipe = RequestRecipe(getattr(args, "restore", None) if args else None)
    if args is None or not hasattr(args, "restore"):
        recipe.config = server_recipe(self.model) if is_applied(self.model) else None
    _local.recipe = recipe
    try:
        result = original(self, prompt, images, audio, args, **kw)
    finally:
        _local.recipe = None
    holder = REPORT.get()
    if holder is not None and recipe.report:
        holder.update(recipe.report)
    return result


def _preprocess_request(original, self, *args, **kwargs):
    raw = original(self, *args, **kwargs)
    recipe = getattr(_local, "recipe", None)
    if recipe is not None:
        raw[RECIPE_KEY] = recipe
    return raw


def _gpu_embed(original, self, raw_inputs, images=None, apc_semantic_hash=None):
    """Reduce the request's image and hand mlx-vlm the reduced row."""
    raw_inputs = dict(raw_inputs)
    recipe = raw_inputs.pop(RECIPE_KEY, None)
    model = self.model
    if (
        recipe is None
        or recipe.config is None
        or not is_applied(model)
        or raw_inputs.get("pixel_values") is None
    ):
        ids, kwargs = original(self, raw_inputs, images, apc_semantic_hash)
        kwargs["restore_row"] = row_kwarg(0)
        return ids, kwargs
    try:
        return _reduced_row(model, raw_inputs, recipe, apc_semantic_hash)
    except ValueError as e:  # RestoreError included: this request fails alone
        self._restore_error = e
        return raw_inputs["input_ids"], {}


def _reduced_row(model, raw_inputs, recipe, apc_semantic_hash):
    sample = {
        k: v for k, v in raw_inputs.items() if k != "attention_mask" and v is not None
    }
    prepared, reused = reductions().prepare(model, sample, recipe.config)
    recipe.report.update(describe(prepared, reused))
    rid = register(prepared.prompt) if prepared.prompt is not None else 0
    kwargs = batch_prompt_kwargs(
        model, prepared.input_ids, prepared.generate_kwargs, rid
    )
    if apc_semantic_hash is not None:
        kwargs["_apc_semantic_hash"] = prefix_key(apc_semantic_hash, recipe.config)
    return prepared.input_ids, kwargs


def prefix_key(image_hash: int, config) -> int:
    """The prefix-cache salt of a reduced prompt: mlx-vlm's hash of the image (and
    tenant) with the recipe, so two reductions of one image never share entries."""
    salt = f"{image_hash}:{recipe_key(config)}".encode()
    return int.from_bytes(hashlib.sha256(salt).digest()[:8], "little") >> 1


def _make_logits_processors(original, self, args, input_ids=None):
    error = getattr(self, "_restore_error", None)
    if error is not None:
        self._restore_error = None
        raise error
    return original(self, args, input_ids)


def _apc_pick_for(original, self, sequence):
    """Prefix-cache lookup for one queued row; a reduced row may reuse its image.

    mlx-vlm's block lookup drops any cached prefix that holds image tokens, because
    an unpatched row recomputes its positions from the suffix ids alone. A reduced
    row does not: it carries the whole prompt's embeddings (mlx-vlm slices them to
    the suffix), its own positions (sliced ``position_ids``, or its row's RoPE
    table read at the warm cache's offset) and its bias rows. The prefix must
    still cover every image token (mlx-vlm checks that the suffix is text only), and
    its key is salted with the image and the recipe (``_reduced_row``).
    """
    self._restore_media_prefix = carries_request(sequence[3])
    try:
        return original(self, sequence)
    finally:
        self._restore_media_prefix = False


def _apc_prefix_has_media_tokens(original, self, ids_list, prefix_len):
    if getattr(self, "_restore_media_prefix", False):
        return False
    return original(self, ids_list, prefix_len)
