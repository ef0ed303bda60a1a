"""The tiny Qwen3-VL-MoE / Qwen3.5-MoE checkpoints are in the hub's layout: mlx-vlm's
own load + sanitize turns them into sparse models, experts where the hub keeps them."""

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from restore_mlx.bench.checkpoints import write_checkpoint  # noqa: E402

# moe_intermediate != hidden: a transposed expert tensor then fails mlx-vlm's strict
# shape check instead of loading silently.
HIDDEN, EXPERT_WIDTH, EXPERTS = 64, 32, 4
# arch -> (mlx-vlm's sparse block class, the hub's gate/up halves -> mlx [E, out, in])
HUB_EXPERTS = {
    "qwen3_vl_moe": (
        "Qwen3VLMoESparseMoeBlock",
        lambda gate_up, i: (  # [E, hidden, 2I], used as x @ w
            gate_up[..., :i].transpose(0, 2, 1),
            gate_up[..., i:].transpose(0, 2, 1),
        ),
    ),
    "qwen3_5_moe": (
        "Qwen3_5MoeSparseMoeBlock",
        lambda gate_up, i: (gate_up[:, :i], gate_up[:, i:]),  # [E, 2I, hidden]
    ),
}


@pytest.mark.parametrize("arch", sorted(HUB_EXPERTS))
def test_moe_checkpoint_loads_sparse_with_mlx_vlm(arch, tmp_path):
    import mlx.core as mx
    from mlx_vlm.utils import load

    path = write_checkpoint(
        arch, tmp_path / arch, hidden_size=HIDDEN, moe_intermediate_size=EXPERT_WIDTH
    )
    text = json.loads((path / "config.json").read_text())["text_config"]
    assert text["model_type"] == f"{arch}_text" and text["num_experts"] == EXPERTS
    hub = mx.load(str(path / "model.safetensors"))
    prefix = "model.language_model.layers.0.mlp."
    assert hub[prefix + "gate.weight"].shape == (EXPERTS, HIDDEN)
    assert not any(".switch_mlp." in name for name in hub)  # mlx-vlm's name, not HF's

    model, _ = load(str(path))  # strict: every weight named and shaped as expected
    block, halves = HUB_EXPERTS[arch]
    layers = model.language_model.model.layers
    assert [type(layer.mlp).__name__ for layer in layers] == [block] * len(layers)
    experts = layers[0].mlp.switch_mlp
    assert layers[0].mlp.num_experts == EXPERTS
    assert experts.gate_proj.weight.shape == (EXPERTS, EXPERT_WIDTH, HIDDEN)
    assert experts.down_proj.weight.shape == (EXPERTS, HIDDEN, EXPERT_WIDTH)
    # mlx-vlm takes the first half as the gate, as transformers' experts do
    gate, up = halves(hub[prefix + "experts.gate_up_proj"], EXPERT_WIDTH)
    assert mx.array_equal(experts.gate_proj.weight, gate)
    assert mx.array_equal(experts.up_proj.weight, up)
    assert not mx.array_equal(gate, up)
