"""The hardware-aware energy model against hand sums; the counts against a second opinion
(torch's FlopCounterMode for MACs, a brute-force loop for ACs)."""

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from firecut.activations import ClipQuant
from firecut.config import ModelConfig
from firecut.energy import EnergyModel, HardwareModel, OpCounter, make_energy
from firecut.energy.hardware import memory_pj_per_bit
from firecut.errors import FirecutError
from firecut.models import list_models
from firecut.network import build_cnn
from firecut.spiking import LIF, SpikingNet
from test_energy import TinySNN, brute_force_accumulates


def count(model, x, T=1, spiking=True, energy=None):
    with OpCounter(model, T, spiking) as counter, torch.no_grad():
        counter.begin_batch(len(x))
        model(x)
    return counter.report(energy or EnergyModel())


def inputs_of(model, x, names):
    seen = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: seen.__setitem__(n, i[0].detach())) for n in names]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


# ------------------------------------------------------------------ the hardware model, by hand
def unit_memory(preset="45nm-int8", **kw):
    """Memory at 1 pJ per bit: every memory term is then its bit count."""
    m = make_energy(preset, model="hardware")
    return HardwareModel(m.e_ac_pj, m.e_mac_pj, m.name, weight_pj_per_bit=1.0, state_pj_per_bit=1.0, **kw)


def test_hardware_terms_of_a_tiny_snn_by_hand():
    torch.manual_seed(0)
    T, B = 3, 2
    model = SpikingNet(TinySNN(T, encode_once=True), T).eval()
    x = torch.randn(B, 2, 5, 5)
    seen = inputs_of(model, x, ["net.c2", "net.fc", "net.n1", "net.n2"])
    r = count(model, x, T, energy=unit_memory())
    rows = {row["name"]: row["energy_terms_pj"] for row in r["layers"]}
    add, w_bits, v_bits = 0.03, 8, 16

    # encoding conv: dense once per image, reads the 8-bit image
    assert rows["net.c1"]["synaptic"] == pytest.approx(3 * 25 * 18 * 0.23)
    assert rows["net.c1"]["weights"] == pytest.approx(3 * 2 * 9 * w_bits)
    assert rows["net.c1"]["inputs"] == pytest.approx(2 * 25 * 8)
    # spike-driven conv: one weight per synaptic event, one bit per input element and step
    ac_c2 = brute_force_accumulates(seen["net.c2"], model.net.c2) / B
    assert rows["net.c2"]["synaptic"] == pytest.approx(ac_c2 * add)
    assert rows["net.c2"]["weights"] == pytest.approx(ac_c2 * w_bits)
    assert rows["net.c2"]["inputs"] == pytest.approx(T * 3 * 25)
    # neurons (IF, subtract reset): 2 adds per neuron-step + 1 per spike; membrane r/w + spike bit
    spikes_n1 = float((seen["net.c2"] != 0).sum()) / B  # n1's output is c2's input
    steps_n1 = T * 3 * 25
    assert rows["net.n1"]["neuron"] == pytest.approx(steps_n1 * 2 * add + spikes_n1 * add)
    assert rows["net.n1"]["state"] == pytest.approx(steps_n1 * (2 * v_bits + 1))
    assert rows["net.n1"]["synaptic"] == 0 and rows["net.n1"]["weights"] == 0
    # totals: the sum of the rows, in mJ; the paper's figure kept beside it
    total_pj = sum(sum(t.values()) for t in rows.values())
    assert r["energy_mj"] == pytest.approx(total_pj * 1e-9)
    assert r["paper_energy_mj"] == pytest.approx((r["ac"] * add + r["mac"] * 0.23) * 1e-9)
    assert sum(r["energy_terms_mj"].values()) == pytest.approx(r["energy_mj"])
    assert r["energy_model"]["weight_bits"] == 8 and r["energy_model"]["membrane_bits"] == 16


def test_leak_and_reset_change_the_neuron_term():
    x = torch.randn(4, 3, 6, 6) + 1.0
    rows = {}
    for beta, reset in ((1.0, "subtract"), (0.9, "subtract"), (1.0, "zero")):
        lif = LIF(3, beta=beta, reset=reset, threshold=0.5, timesteps=2)
        r = count(lif, x, T=2, energy=unit_memory())
        rows[(beta, reset)] = r["layers"][0]
    steps = 3 * 36  # neuron-steps per counted row (count() begins a batch of len(x) rows)
    base = rows[(1.0, "subtract")]
    spikes = base["firing_rate"] * steps
    assert base["energy_terms_pj"]["neuron"] == pytest.approx(steps * 0.06 + spikes * 0.03)
    leaky = rows[(0.9, "subtract")]["energy_terms_pj"]["neuron"]
    leak_spikes = rows[(0.9, "subtract")]["firing_rate"] * steps
    assert leaky == pytest.approx(steps * (0.2 + 0.06) + leak_spikes * 0.03)
    assert rows[(1.0, "zero")]["energy_terms_pj"]["neuron"] == pytest.approx(steps * 0.06)


def test_cnn_pays_activations_at_its_clip_quant_bits():
    torch.manual_seed(0)
    x = torch.randn(2, 2, 4, 4)
    for act, bits in ((nn.ReLU(), 8), (ClipQuant(levels=4), 3), (ClipQuant(levels=8), 4)):
        net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), act, nn.Conv2d(3, 2, 1)).eval()
        r = count(net, x, spiking=False, energy=unit_memory())
        assert r["energy_model"]["activation_bits"] == bits
        first, second = (row["energy_terms_pj"] for row in r["layers"])
        assert first["inputs"] == 2 * 16 * 8  # the image, 8 bits
        assert second["inputs"] == 3 * 16 * bits  # the activations it reads
        assert first["state"] == 3 * 16 * bits and first["neuron"] == pytest.approx(3 * 16 * 0.03)
        assert first["weights"] == 3 * 2 * 9 * 8  # every weight once per image
        assert second["neuron"] == 0 and second["state"] == 0  # no activation after the classifier
    # a pool before the activation (SqueezeNet's blocks): the activations are the pooled outputs
    pooled = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.MaxPool2d(2), ClipQuant(levels=4),
                           nn.Conv2d(3, 2, 1))
    first = count(pooled.eval(), x, spiking=False, energy=unit_memory())["layers"][0]["energy_terms_pj"]
    assert first["state"] == 3 * 4 * 3 and first["neuron"] == pytest.approx(3 * 4 * 0.03)
    fp = count(net, x, spiking=False, energy=make_energy("45nm-fp32", model="hardware"))
    assert fp["energy_model"]["activation_bits"] == 32 and fp["energy_model"]["weight_bits"] == 32


def test_pools_are_charged_per_window_and_the_gated_pool_for_its_running_sums():
    from firecut.spiking import SpikingMaxPool2d

    class PoolSNN(nn.Module):  # conv -> LIF -> conv -> gated max-pool (on currents) -> LIF -> linear
        def __init__(self, T):
            super().__init__()
            self.c1 = nn.Conv2d(2, 3, 3, padding=1)
            self.n1 = LIF(3, threshold=0.3, timesteps=T, broadcast_input=True, scale_output=True)
            self.c2 = nn.Conv2d(3, 4, 3, padding=1)
            self.pool = SpikingMaxPool2d(nn.MaxPool2d(3, 2, ceil_mode=True), T)  # 5x5 -> 2x2
            self.n2 = LIF(4, threshold=0.2, timesteps=T, scale_output=True)
            self.fc = nn.Linear(4 * 2 * 2, 3)

        def forward(self, x):
            return self.fc(self.n2(self.pool(self.c2(self.n1(self.c1(x))))).flatten(1))

    torch.manual_seed(0)
    T, B, add, v_bits = 3, 2, 0.03, 16
    x = torch.randn(B, 2, 5, 5)
    snn = SpikingNet(PoolSNN(T), T).eval()
    r = count(snn, x, T, energy=unit_memory())
    names = [row["name"] for row in r["layers"]]
    assert names == ["net.c1", "net.n1", "net.c2", "net.pool", "net.n2", "net.fc"]  # in place
    pool = r["layers"][3]["energy_terms_pj"]
    sums = T * 4 * 25  # one running sum per input and step
    assert pool["pool"] == pytest.approx((T * 4 * 4 * 8 + sums) * add)  # 8 compares per window
    assert pool["state"] == pytest.approx(sums * 2 * v_bits)
    assert r["energy_terms_mj"]["pool"] == pytest.approx(pool["pool"] * 1e-9)
    assert sum(r["energy_terms_mj"].values()) == pytest.approx(r["energy_mj"])
    membranes = 3 * 25 + 4 * 4  # n1 and n2, per step
    assert r["energy_model"]["state_memory_bytes"] == pytest.approx((membranes + 4 * 25) * v_bits / 8)
    # the CNN's max-pool: the same compares, once per image, and no running sums
    cnn = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(3, 2, ceil_mode=True),
                        ClipQuant(levels=4), nn.Flatten(), nn.Linear(16, 3)).eval()
    rows = {row["name"]: row for row in count(cnn, x, spiking=False, energy=unit_memory())["layers"]}
    assert rows["1"]["energy_terms_pj"] == {"pool": pytest.approx(4 * 4 * 8 * add), "state": 0.0}
    # the paper's model has no pool rows: its layers are the synapse layers and neurons only
    assert "net.pool" not in [row["name"] for row in count(snn, x, T)["layers"]]


def test_memory_cost_follows_the_size_of_the_memory():
    assert memory_pj_per_bit(8 * 1024) == 10 / 64
    assert memory_pj_per_bit(8 * 1024 + 1) == 20 / 64
    assert memory_pj_per_bit(1024 * 1024) == 100 / 64
    assert memory_pj_per_bit(2 * 1024 * 1024) == 1300 / 64  # DRAM


def test_default_is_the_papers_model_and_a_yaml_sets_costs(tmp_path):
    x = torch.randn(2, 2, 4, 4)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 1)).eval()
    paper = count(net, x, spiking=False, energy=make_energy())
    assert "energy_terms_mj" not in paper and "energy_terms_pj" not in paper["layers"][0]
    costs = tmp_path / "chip.yaml"
    costs.write_text("weight_pj_per_bit: 0.5\nmembrane_bits: 12\n")
    hw = make_energy("45nm-int8", model=str(costs))
    assert (hw.weight_pj_per_bit, hw.membrane_bits, hw.state_pj_per_bit) == (0.5, 12, None)
    r = count(net, x, spiking=False, energy=hw)
    assert r["energy_model"]["weight_pj_per_bit"] == 0.5
    assert r["energy_mj"] > paper["energy_mj"] * 0.23 / 4.6  # memory adds to the arithmetic
    for text, needle in (("weight_pj: 1\n", "unknown cost 'weight_pj'"),
                         ("weight_pj_per_bit: -1\n", "must be a finite number >= 0"),
                         ("weight_pj_per_bit: .inf\n", "must be a finite number >= 0"),
                         ("weight_bits: 0\n", "whole number of bits >= 1"),
                         ("membrane_bits: 12.5\n", "whole number of bits >= 1"),
                         ("- 1\n", "must map cost names")):
        costs.write_text(text)
        with pytest.raises(FirecutError, match=needle):
            make_energy(model=str(costs))
    with pytest.raises(FirecutError, match=r"e_MAC \(0.01 pJ\) must be >= e_AC"):
        make_energy("45nm-int8", e_mac_pj=0.01, model="hardware")
    with pytest.raises(FirecutError, match="unknown energy model 'chip'"):
        make_energy(model="chip")
    with pytest.raises(FirecutError, match="cannot read the energy model"):
        make_energy(model=str(tmp_path / "absent.yaml"))


# ------------------------------------------------------------------ a second opinion on the counts
@pytest.mark.parametrize("name", list_models())
def test_dense_macs_match_torch_flop_counter(name):
    net = build_cnn(ModelConfig(name=name), 10).eval()
    x = torch.randn(1, 3, 32, 32)
    ours = count(net, x, spiking=False)["mac"]
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        net(x)
    assert ours > 1e6
    assert ours == flops.get_total_flops() / 2  # torch counts a multiply-accumulate as 2 FLOPs


class FireSNN(nn.Module):
    """Encoding conv -> LIF -> a Fire-like pair (1x1 and 3x3, padded) -> LIFs -> concatenation
    -> grouped 3x3 conv, stride 2 -> LIF -> linear: padding, groups and concatenation at once."""

    def __init__(self, T):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.n0 = LIF(4, threshold=0.3, timesteps=T, broadcast_input=True)
        self.e1 = nn.Conv2d(4, 3, 1)
        self.e3 = nn.Conv2d(4, 3, 3, padding=1)
        self.n1 = LIF(3, threshold=0.2, timesteps=T)
        self.n3 = LIF(3, threshold=0.2, timesteps=T)
        self.g = nn.Conv2d(6, 4, 3, stride=2, padding=1, groups=2)
        self.n4 = LIF(4, threshold=0.1, timesteps=T)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        s = self.n0(self.stem(x))
        cat = torch.cat([self.n1(self.e1(s)), self.n3(self.e3(s))], 1)
        return self.fc(self.n4(self.g(cat)).flatten(1))


def test_accumulates_match_a_brute_force_count_through_concatenation_and_groups():
    torch.manual_seed(1)
    T, B = 3, 2
    model = SpikingNet(FireSNN(T), T).eval()
    x = torch.randn(B, 3, 8, 8)
    names = ["net.e1", "net.e3", "net.g", "net.fc"]
    seen = inputs_of(model, x, names)
    expect = {n: brute_force_accumulates(seen[n], model.get_submodule(n)) / B for n in names[:3]}
    expect["net.fc"] = float((seen["net.fc"] != 0).sum()) * 5 / B
    r = count(model, x, T)
    got = {row["name"]: row["ac"] for row in r["layers"] if row["name"] in names}
    assert all(v > 0 for v in expect.values())
    assert got == pytest.approx(expect)
    kinds = {row["name"]: row["input"] for row in r["layers"] if row["name"] in names}
    assert kinds == dict.fromkeys(names, "spike")
    assert r["mac"] == 4 * 64 * 27  # the encoding conv only, once per image
    assert math.isclose(r["ac"], sum(expect.values()))
