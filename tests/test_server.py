"""restore_mlx.server end to end: a subprocess on loopback, called with the openai client.

The shipped probe model answers known questions about examples/probe-scene.png; a
tiny Qwen2-VL checkpoint (restore_mlx.bench.checkpoints) covers M-RoPE.
"""

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from restore_mlx.bench import server as bench_server
from restore_mlx.bench.checkpoints import write_checkpoint, write_image

openai = pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "examples" / "probe-model"
SCENE = ROOT / "examples" / "probe-scene.png"


class Server(bench_server.Server):
    """The benchmark's server subprocess, with an OpenAI client and a few questions."""

    def __init__(self, model, *flags, **env):
        super().__init__(model, flags, env=env)
        self.client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{self.port}/v1", api_key="none", max_retries=0
        )
        try:
            self.wait_ready(timeout_s=60)
        except RuntimeError:
            raise RuntimeError("server did not start:\n" + self.log_tail()) from None

    def log_tail(self, chars=3000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-chars:]

    def ask(self, question, image=SCENE, restore=None, history=(), **options):
        content = [{"type": "text", "text": question}]
        if image is not None:
            content.insert(0, {"type": "image_url", "image_url": {"url": str(image)}})
        messages = [*history, {"role": "user", "content": content}]
        extra = {"restore": restore} if restore is not None else None
        return self.client.chat.completions.create(
            model=self.model, messages=messages, max_tokens=6, temperature=0.0,
            extra_body=extra, **options,
        )  # fmt: skip


@pytest.fixture(scope="module")
def probe():
    server = Server(PROBE)
    yield server
    server.close()
    assert server.proc.returncode is not None


def answer(response) -> str:
    return response.choices[0].message.content.strip()


def restore_usage(response) -> dict:
    return response.usage.model_extra["restore"]


QUESTIONS = ["what color is at c4", "what color is at a1", "what shape is at b2",
             "how many circles"]  # fmt: skip
RECIPES = [
    None,
    {"preset": "extreme-89"},
    {"off": True},
    {"method": "pool", "keep": 0.25},
]


def test_concurrent_clients_get_their_answers_alone(probe):
    # 8 clients x 4 requests at once: mixed recipes, every fourth one text-only.
    jobs = [
        (QUESTIONS[(c + i) % 4], (c * 4 + i) % 4, (c + i) % 4 == 3)
        for c in range(8) for i in range(4)
    ]  # fmt: skip

    def run(job):
        question, recipe, text_only = job
        image = None if text_only else SCENE
        return answer(probe.ask(question, image=image, restore=RECIPES[recipe]))

    alone = {job: run(job) for job in set(jobs)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(run, jobs))
    assert together == [alone[job] for job in jobs]


def test_answers_a_probe_question_with_the_default_preset(probe):
    response = probe.ask("what color is at c4")
    assert answer(response) == "purple"
    assert restore_usage(response)["visual_tokens_before"] == 144
    assert restore_usage(response)["visual_tokens_after"] == 72  # mobile-50


def test_streams_the_same_answer(probe):
    chunks = probe.ask(
        "what color is at c4", stream=True, stream_options={"include_usage": True}
    )
    parts, usage = [], None
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(parts).strip() == "purple"
    assert usage.model_extra["restore"]["visual_tokens_after"] == 72


def test_image_as_base64_data_uri(probe):
    data = base64.b64encode(SCENE.read_bytes()).decode()
    response = probe.ask("what color is at c4", image=f"data:image/png;base64,{data}")
    assert answer(response) == "purple"


def test_per_request_override(probe):
    extreme = probe.ask("what color is at c4", restore={"preset": "extreme-89"})
    assert restore_usage(extreme)["visual_tokens_after"] == 16
    custom = probe.ask("what color is at c4", restore={"method": "pool", "keep": 0.25})
    assert restore_usage(custom)["visual_tokens_after"] == 36
    off = probe.ask("what color is at c4", restore={"off": True})
    assert "restore" not in (off.usage.model_extra or {})
    assert answer(off) == "purple"


def test_models_endpoint(probe):
    assert str(PROBE) in [m.id for m in probe.client.models.list().data]


@pytest.mark.parametrize(
    "restore, named",
    [
        ({"preset": "nope"}, "unknown preset"),
        ({"keep": 3}, "keep"),
        ({"method": "vispruner", "keep": 0.5, "bogus": 1}, "bogus"),
        ("mobile-50", "must be an object"),
    ],
)
def test_bad_restore_field_is_400_and_the_server_keeps_serving(probe, restore, named):
    with pytest.raises(openai.BadRequestError) as error:
        probe.ask("what color is at c4", restore=restore)
    assert named in error.value.response.text
    assert answer(probe.ask("what color is at c4")) == "purple"


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    path = write_checkpoint("qwen2_vl", tmp_path_factory.mktemp("qwen") / "model")
    image = write_image(path.parent / "image.png", size=56)
    # Prefix-cache blocks of 4 tokens: the tiny prompt spans a few blocks.
    server = Server(path, APC_BLOCK_SIZE="4")
    yield server, image
    server.close()


def test_qwen_concurrent_rows_equal_alone(qwen):
    server, image = qwen
    jobs = [(q, r) for q in QUESTIONS[:2] for r in range(len(RECIPES))]

    def run(job):
        response = server.ask(job[0], image=image, restore=RECIPES[job[1]])
        return response.choices[0].message.content

    alone = [run(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        assert list(pool.map(run, jobs)) == alone
    reduced = server.ask("what is here", image=image, restore={"keep": 0.5})
    usage = restore_usage(reduced)
    assert usage["visual_tokens_after"] < usage["visual_tokens_before"]


def chat_turns(server, image):
    """Two turns about one image (the probe model's template is single-turn; the
    Qwen checkpoint's is a chat): turn 2 re-sends turn 1 and its answer."""
    first = server.ask("what color is at a1", image=image)
    history = [
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": str(image)}},
            {"type": "text", "text": "what color is at a1"}]},
        {"role": "assistant", "content": answer(first)},
    ]  # fmt: skip
    second = server.ask("what color is at c4", image=None, history=history)
    return first, second


def test_second_turn_reuses_the_reduction_and_prefills_only_the_new_text(qwen):
    server, image = qwen
    # An image no earlier request sent, so that turn 1 starts cold.
    image = write_image(image.parent / "chat.png", size=56, seed=1)
    first, second = chat_turns(server, image)
    one, two = restore_usage(first), restore_usage(second)
    assert (one["reused_reduction"], two["reused_reduction"]) == (False, True)
    assert two["visual_tokens_after"] == one["visual_tokens_after"]
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    # Turn 1's reduced prompt (image included) comes from the prefix cache, to the
    # block (4 tokens here); only turn 2's new text is prefilled.
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= one["prompt_tokens_prefilled"] - 4
    new_text = two["prompt_tokens_prefilled"] - one["prompt_tokens_prefilled"]
    assert two["prompt_tokens_prefilled"] - cached <= new_text + 4


def test_another_recipe_never_shares_the_prefix(qwen):
    # Same image, same text, another reduction: its prefix is another cache entry.
    server, image = qwen
    server.ask("what shape is at b2", image=image, restore={"keep": 0.25})
    other = server.ask("what shape is at b2", image=image, restore={"keep": 0.75})
    assert other.usage.prompt_tokens_details.cached_tokens == 0
