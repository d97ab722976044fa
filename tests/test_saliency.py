"""Saliency: a useless module scores lowest; the exact gate-off loss; rank correlation."""

import pytest
import torch
import torch.nn.functional as F

from firecut.config import ModelConfig, SpikingConfig
from firecut.errors import FirecutError
from firecut.network import build_network
from firecut.pruning.saliency import fire_modules, module_saliency, spearman


def make_useless(model, name):
    """Zero BN scale and shift of the module's expand branches: its output is always 0."""
    fire = fire_modules(model)[name]
    with torch.no_grad():
        for branch in (fire.expand1x1, fire.expand3x3):
            branch.bn.weight.zero_()
            branch.bn.bias.zero_()


def batches(n=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, 10, (size,), generator=g))
            for _ in range(n)]


@pytest.mark.parametrize("spiking", [False, True])
def test_a_useless_module_gets_the_lowest_score(spiking):
    # SqueezeNet is a chain: a module whose output is always 0 also cuts every module upstream of
    # it off from the loss. fire2 has no Fire module upstream, so it alone should score 0.
    torch.manual_seed(0)
    model = build_network(ModelConfig(width=0.25), SpikingConfig(enabled=spiking, timesteps=2), 10, 32)
    make_useless(model, "fire2")
    result = module_saliency(model, batches())
    scores = result["scores"]
    assert min(scores, key=scores.get) == "fire2" and scores["fire2"] == 0.0
    if not spiking:
        assert all(v > 0 for k, v in scores.items() if k != "fire2")
    # (in the untrained SNN the modules after a silenced fire2 get constant sub-threshold input
    # and fall silent too: a silent module's gate gradient <dL/dy, y> is 0, so they may tie)
    row = next(r for r in result["modules"] if r["module"] == "fire2")
    assert row["loss_increase"] == pytest.approx(0.0, abs=1e-6)  # removing nothing changes nothing
    assert sum(r["share"] for r in result["modules"]) == pytest.approx(1.0)


def test_gate_off_loss_increase_is_exact():
    torch.manual_seed(1)
    model = build_network(ModelConfig(width=0.25), SpikingConfig(enabled=False), 10, 32).eval()
    data = batches(n=1)
    result = module_saliency(model, data)
    x, y = data[0]
    h = fire_modules(model)["fire3"].register_forward_hook(lambda m, i, o: o * 0)
    with torch.no_grad():
        off = float(F.cross_entropy(model(x), y))
    h.remove()
    with torch.no_grad():
        on = float(F.cross_entropy(model(x), y))
    row = next(r for r in result["modules"] if r["module"] == "fire3")
    assert row["loss_increase"] == pytest.approx(off - on, rel=1e-5)
    assert result["loss"] == pytest.approx(on, rel=1e-5)


def test_saliency_is_the_gate_gradient():
    torch.manual_seed(2)
    model = build_network(ModelConfig(width=0.25), SpikingConfig(enabled=False), 10, 32).eval()
    data = batches(n=1)
    g = torch.ones((), requires_grad=True)
    h = fire_modules(model)["fire7"].register_forward_hook(lambda m, i, o: o * g)
    F.cross_entropy(model(data[0][0]), data[0][1]).backward()
    h.remove()
    assert module_saliency(model, data)["scores"]["fire7"] == pytest.approx(abs(float(g.grad)), rel=1e-5)


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, rel=1e-6)  # a tie


def test_no_batches_is_refused():
    with pytest.raises(FirecutError, match="at least one batch"):
        module_saliency(build_network(ModelConfig(width=0.25), SpikingConfig(), 10, 32), [])
