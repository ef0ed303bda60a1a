"""Continuous batching: every row of a batch runs as its request runs alone.

mlx-vlm's own ``BatchGenerator`` (the server's engine) prefills and decodes requests
together; each row here is a different request (two reduction budgets, one unreduced
image, one text-only). Alone, each runs through mlx-vlm's single-request
``generate_step``, whose exactness the shared tests prove.
"""

import mlx.core as mx
import pytest
from conftest import BUILDERS
from mlx_vlm.generate.ar import BatchGenerator
from test_integration import run_generate

import restore_mlx.integration as ri
from restore_mlx.adapters import adapter_for
from restore_mlx.adapters.batching import batch_prompt_kwargs, register
from restore_mlx.adapters.contract import visual_slots
from restore_mlx.config import RestoreConfig
from restore_mlx.errors import UnsupportedMethod

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
