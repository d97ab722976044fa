"""AC/MAC counting against hand counts and brute force; the energy formula."""

import itertools

import pytest
import torch
from torch import nn

from firecut.energy import EnergyModel, OpCounter, conv_accumulates, is_spike_input
from firecut.spiking import LIF, SpikingNet


def brute_force_accumulates(x: torch.Tensor, conv: nn.Conv2d) -> int:
    """Loop over every output and every weight: count the nonzero inputs it reads."""
    n, c, h, w = x.shape
    g = conv.groups
    kh, kw = conv.kernel_size
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    cin_g, cout_g = c // g, conv.out_channels // g
    total = 0
    for b, o, oy, ox in itertools.product(range(n), range(conv.out_channels), range(oh), range(ow)):
        grp = o // cout_g
        for i, ky, kx in itertools.product(range(grp * cin_g, (grp + 1) * cin_g), range(kh), range(kw)):
            iy, ix = oy * sh - ph + ky, ox * sw - pw + kx
            if 0 <= iy < h and 0 <= ix < w and x[b, i, iy, ix] != 0:
                total += 1
    return total


def test_hand_count_3x3_all_ones_with_borders():
    # 3x3 input of ones, 3x3 kernel, padding 1: corner outputs read 4 inputs, edges 6, centre 9.
    conv = nn.Conv2d(1, 1, 3, padding=1)
    assert conv_accumulates(torch.ones(1, 1, 3, 3), conv) == 4 * 4 + 4 * 6 + 9


@pytest.mark.parametrize("cin,cout,k,stride,pad,groups", [
    (3, 4, 3, 1, 1, 1), (4, 6, 3, 2, 1, 2), (2, 3, 1, 1, 0, 1), (4, 4, 3, 1, 1, 4), (3, 2, 5, 2, 2, 1)])
def test_conv_accumulates_equals_brute_force(cin, cout, k, stride, pad, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups)
    x = (torch.rand(2, cin, 7, 6) < 0.3).float()
    assert conv_accumulates(x, conv) == brute_force_accumulates(x, conv)


def test_spike_detection_per_channel():
    s = (torch.rand(4, 3, 5, 5) < 0.4).float()
    assert is_spike_input(s)
    assert is_spike_input(s * torch.tensor([0.5, 2.0, 1.3]).view(1, 3, 1, 1))  # {0, c} per channel
    assert not is_spike_input(torch.rand(4, 3, 5, 5))
    mixed = s.clone()
    mixed[0, 0, 0, 0], mixed[0, 0, 0, 1] = 1.0, 2.0
    assert not is_spike_input(mixed)


class TinySNN(nn.Module):
    """conv (real input) -> LIF -> conv 3x3 pad 1 (spike input) -> LIF -> pool -> linear."""

    def __init__(self, T, encode_once):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, padding=1)
        self.n1 = LIF(3, threshold=0.3, timesteps=T, broadcast_input=encode_once, scale_output=True)
        self.c2 = nn.Conv2d(3, 4, 3, padding=1)
        self.n2 = LIF(4, threshold=0.2, timesteps=T, scale_output=True)
        self.fc = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        return self.fc(self.n2(self.c2(self.n1(self.c1(x)))).flatten(1))


@pytest.mark.parametrize("encode_once", [True, False])
def test_counter_on_a_tiny_snn_matches_brute_force(encode_once):
    torch.manual_seed(0)
    T, B = 3, 2
    model = SpikingNet(TinySNN(T, encode_once), T).eval()
    x = torch.randn(B, 2, 5, 5)
    # brute force from the recorded inputs of each layer
    seen = {}
    hooks = [getattr(model.net, n).register_forward_hook(
        lambda m, i, o, n=n: seen.__setitem__(n, i[0].detach())) for n in ("c2", "fc")]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    expect_ac = (brute_force_accumulates(seen["c2"], model.net.c2)
                 + int((seen["fc"] != 0).sum()) * 3) / B
    expect_mac = 3 * 5 * 5 * (2 * 9)  # c1: outputs x fan-in, once per image (same at every step)

    with OpCounter(model, T, spiking=True) as counter, torch.no_grad():
        counter.begin_batch(B)
        model(x)
    r = counter.report(EnergyModel())
    assert r["ac"] == pytest.approx(expect_ac)
    assert r["ac"] > 0
    assert r["mac"] == expect_mac
    kinds = {row["name"]: row["input"] for row in r["layers"] if row["type"] != "LIF"}
    assert kinds == {"net.c1": "real-static", "net.c2": "spike", "net.fc": "spike"}
    assert 0 < r["firing_rate"] < 1
    assert r["neuron_updates"] == T * (3 + 4) * 25
    assert r["energy_mj"] == pytest.approx((r["ac"] * 0.9 + r["mac"] * 4.6) * 1e-9)


def test_real_input_that_changes_per_step_counts_every_step():
    T, B = 4, 2
    conv = nn.Conv2d(2, 3, 1)
    counter = OpCounter(conv, T, spiking=True)
    with counter, torch.no_grad():
        counter.begin_batch(B)
        conv(torch.randn(T * B, 2, 4, 4))  # different at every step
    assert counter.report(EnergyModel())["mac"] == T * (3 * 16 * 2)


def test_cnn_counts_every_layer_as_mac():
    conv = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 1))
    counter = OpCounter(conv, 1, spiking=False)
    with counter, torch.no_grad():
        counter.begin_batch(2)
        conv((torch.rand(2, 2, 4, 4) > 0.5).float())  # binary input, still a CNN: MAC
    r = counter.report(EnergyModel())
    assert r["ac"] == 0
    assert r["mac"] == 3 * 16 * 18 + 2 * 16 * 3
    assert r["energy_mj"] == pytest.approx(r["mac"] * 4.6e-9)


def test_energy_presets_and_overrides():
    assert EnergyModel().energy_mj(1e6, 1e6) == pytest.approx(5.5e-3)  # (0.9 + 4.6) pJ x 1e6
    m = EnergyModel.from_config("45nm-fp32", e_ac_pj=0.1)
    assert (m.e_ac_pj, m.e_mac_pj) == (0.1, 4.6)
    assert EnergyModel.from_config("45nm-int8").e_mac_pj == pytest.approx(0.23)
