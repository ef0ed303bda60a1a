"""Continuous batching: every row of a batch runs as its request runs alone.

mlx-vlm's own ``BatchGenerator`` (the server's engine) prefills and decodes requests
together; each row here is a different request (two reduction budgets, one unreduced
image, one text-only). Alone, each runs through mlx-vlm's single-request
``generate_step``, whose exactness the shared tests prove.
"""

import mlx.core as mx
import pytest
from conftest import BUILDERS
from mlx_vlm import apc as vlm_apc
from mlx_vlm.generate.ar import BatchGenerator
from test_integration import run_generate

import restore_mlx.integration as ri
from restore_mlx.adapters import adapter_for
from restore_mlx.adapters.batching import batch_prompt_kwargs, register
from restore_mlx.adapters.contract import visual_slots
from restore_mlx.config import RestoreConfig
from restore_mlx.errors import UnsupportedMethod
from restore_mlx.server.hooks import install_prefix_reuse

STEPS = 5
RECIPES = {
    "half": RestoreConfig(method="divprune", keep=0.5),
    "quarter": RestoreConfig(method="tome", keep=0.25),
    "unreduced": RestoreConfig(keep=1.0),
}


class _Stops:
    """The tokenizer part BatchGenerator needs: no token stops a row."""

    def add_eos_token_ids(self, ids):
        pass

    def __call__(self, token):
        return False


class _Processor:
    class tokenizer:
        stopping_criteria = _Stops()


def text_only(model, sample):
    """The prompt's text without its image tokens."""
    ids = sample["input_ids"]
    spans = adapter_for(model).image_spans(model, ids)
    image = set(visual_slots(spans).tolist())
    keep = mx.array([i for i in range(ids.shape[1]) if i not in image])
    return {"input_ids": ids[:, keep]}


def requests(model, sample):
    """(name, prepared) for each kind of request; the model is left armed for none."""
    out = [
        (name, ri.prepare_tokens(model, sample, config=cfg))
        for name, cfg in RECIPES.items()
    ]
    out.append(("text", ri.prepare_tokens(model, text_only(model, sample))))
    return out


def alone(model, prepared):
    """Greedy (token, logprob) of one request through mlx-vlm's single-request path."""
    model._restore_state.set_prompt(prepared.prompt)
    kwargs = dict(prepared.generate_kwargs)
    pixels = kwargs.pop("pixel_values", None)
    logprobs = run_generate(model, prepared.input_ids, pixels, kwargs, steps=STEPS)
    tokens = [int(mx.argmax(lp).item()) for lp in logprobs]
    return tokens, [lp.reshape(-1)[t].item() for lp, t in zip(logprobs, tokens)]


def batched(model, prepared_list, **options):
    """Greedy (tokens, logprobs) of every request, all in one BatchGenerator."""
    model._restore_state.set_prompt(None)
    gen = BatchGenerator(
        model.language_model, _Processor(), max_tokens=STEPS, **options
    )
    uids = []
    for prepared in prepared_list:
        rid = register(prepared.prompt)
        kw = batch_prompt_kwargs(
            model, prepared.input_ids, prepared.generate_kwargs, rid
        )
        uids += gen.insert([prepared.input_ids[0].tolist()], prompt_kwargs=[kw])
    tokens = {uid: ([], []) for uid in uids}
    for _ in range(10 * STEPS * len(uids)):  # bounded: prefills + decodes
        if not gen.has_work:
            break
        _, responses = gen.next()
        for r in responses:
            tokens[r.uid][0].append(r.token)
            tokens[r.uid][1].append(r.token_logprob)
    gen.close()
    return [tokens[u] for u in uids]


# Architectures whose adapters declare BATCHABLE (the others are refused below).
BATCHED = sorted(
    a for a in BUILDERS if getattr(adapter_for(BUILDERS[a]()[0]), "BATCHABLE", False)
)
REFUSED = sorted(set(BUILDERS) - set(BATCHED))


@pytest.mark.parametrize("arch", REFUSED)
def test_other_architectures_are_refused_not_mis_biased(arch):
    model, sample = BUILDERS[arch]()
    ri.apply(model)
    reduced = ri.prepare_tokens(model, sample)
    with pytest.raises(UnsupportedMethod, match="continuous batching"):
        batched(model, [reduced])


@pytest.fixture(scope="module", params=BATCHED)
def served(request):
    model, sample = BUILDERS[request.param]()
    ri.apply(model)
    prepared = requests(model, sample)
    expected = {name: alone(model, p) for name, p in prepared}
    return model, prepared, expected


def same(got, expected, name):
    (tokens, logprobs), (want, want_lp) = got, expected
    assert tokens == want, name
    assert logprobs == pytest.approx(want_lp, abs=1e-5), name


def test_every_row_equals_its_request_alone(served):
    model, prepared, expected = served
    got = batched(model, [p for _, p in prepared])
    for (name, _), row in zip(prepared, got):
        same(row, expected[name], name)


def test_rows_prefilled_in_separate_batches_join_one_decode_batch(served):
    # prefill_batch_size 1: every request prefills alone, then joins the running
    # decode batch (cache rows merged and extended with their tags).
    model, prepared, expected = served
    got = batched(model, [p for _, p in prepared], prefill_batch_size=1)
    for (name, _), row in zip(prepared, got):
        same(row, expected[name], name)


def test_reduced_requests_differ_from_unreduced(served):
    # Every request's logprobs differ from the others' by far more than the tolerance
    # above, so a row given another request's plan fails the tests above.
    _, _, expected = served
    lps = [expected[name][1] for name in ("half", "quarter", "unreduced", "text")]
    for i, a in enumerate(lps):
        for b in lps[i + 1 :]:
            assert max(abs(x - y) for x, y in zip(a, b)) > 1e-4


# --- Prefix cache: a follow-up turn about the same image ------------------------------

BLOCK = 4  # prefix-cache block (tokens): the tiny prompts span several blocks


def follow_up(model, sample, first):
    """Turn 2: turn 1's whole prompt plus more text, with turn 1's reduction (what
    the server's ``recipes.Reductions`` hands a later turn)."""
    ids, text = sample["input_ids"], text_only(model, sample)["input_ids"]
    more = {**sample, "input_ids": mx.concatenate([ids, text[:, -6:]], axis=1)}
    return ri.prepare_tokens(
        model, more, config=RECIPES["half"], reduction=first.reduction
    )


def turns_with_prefix_cache(model, turns):
    """Greedy (tokens, logprobs) and cached tokens of each turn, served one after
    the other by one BatchGenerator with mlx-vlm's prefix cache (in memory)."""
    model._restore_state.set_prompt(None)
    manager = vlm_apc.from_env(
        overrides={"enabled": True, "block_size": BLOCK, "disk_enabled": False}
    )
    gen = BatchGenerator(
        model.language_model, _Processor(), max_tokens=STEPS, apc_manager=manager
    )
    out = []
    for prepared in turns:
        kw = batch_prompt_kwargs(
            model,
            prepared.input_ids,
            prepared.generate_kwargs,
            register(prepared.prompt),
        )
        kw["_apc_semantic_hash"] = 1234  # the server's image + recipe salt
        (uid,) = gen.insert([prepared.input_ids[0].tolist()], prompt_kwargs=[kw])
        tokens, logprobs, cached = [], [], None
        for _ in range(10 * STEPS):  # bounded: prefill + decode
            if not gen.has_work:
                break
            prompts, responses = gen.next()
            for p in prompts:
                cached = p.cached_tokens
            for r in responses:
                tokens.append(r.token)
                logprobs.append(r.token_logprob)
        out.append(((tokens, logprobs), cached))
    gen.close()
    manager.close()
    return out


@pytest.mark.parametrize("arch", BATCHED)
def test_second_turn_reuses_the_reduced_prefix_and_equals_it_alone(arch):
    # The reduced prefix (image included) comes from the prefix cache, and the
    # follow-up's suffix runs at its own positions with its bias: same tokens and
    # logprobs as the follow-up served alone.
    install_prefix_reuse()
    model, sample = BUILDERS[arch]()
    ri.apply(model)
    first = ri.prepare_tokens(model, sample, config=RECIPES["half"])
    second = follow_up(model, sample, first)
    assert second.visual_tokens_after == first.visual_tokens_after
    (_, cached1), (got, cached2) = turns_with_prefix_cache(model, [first, second])
    assert cached1 == 0
    assert cached2 >= first.prompt_tokens - BLOCK
    assert (
        second.prompt_tokens - cached2
        <= second.prompt_tokens - first.prompt_tokens + BLOCK
    )
    same(got, alone(model, second), "second turn")
