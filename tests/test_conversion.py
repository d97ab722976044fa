"""CNN -> SNN conversion: activations swapped, thresholds balanced, clip-quant converts exactly."""

import pytest
import torch
from torch import nn

from firecut.activations import ClipQuant
from firecut.errors import FirecutError
from firecut.models.squeezenet import make_pool
from firecut.spiking import LIF, SpikingMaxPool2d, balance_thresholds, convert, trace_activations


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 1), nn.ReLU6(),
            nn.Conv2d(5, 6, 1), nn.SiLU(), nn.Conv2d(6, 3, 1), nn.Hardswish(),
            nn.Conv2d(3, 2, 1), ClipQuant(4, 2.0))
        self.head = nn.Linear(2 * 8 * 8, 5)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


def test_converter_swaps_every_activation_kind_and_keeps_weights():
    model = Mixed()
    w_before = model.body[0].weight.clone()
    snn = convert(model, torch.zeros(2, 3, 8, 8), timesteps=3)
    neurons = [m for m in snn.modules() if isinstance(m, LIF)]
    assert len(neurons) == 5
    assert [n.threshold.numel() for n in neurons] == [4, 5, 6, 3, 2]  # per channel
    assert neurons[0].broadcast_input and not any(n.broadcast_input for n in neurons[1:])
    assert torch.equal(snn.net.body[0].weight, w_before)
    out = snn(torch.randn(4, 3, 8, 8))
    assert out.shape == (4, 5)


def test_converter_refuses_a_model_without_activations():
    with pytest.raises(FirecutError, match="no activation"):
        convert(nn.Sequential(nn.Conv2d(3, 2, 1)), torch.zeros(1, 3, 4, 4), timesteps=2)


def test_threshold_balancing_takes_the_percentile_of_each_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.ReLU())
    batches = [torch.randn(8, 3, 5, 5) for _ in range(3)]
    thr = balance_thresholds(model, batches, percentile=90.0)
    with torch.no_grad():
        a1 = torch.cat([model[1](model[0](b)).flatten() for b in batches])
    assert set(thr) == {"1", "3"}
    assert thr["1"] == pytest.approx(float(torch.quantile(a1, 0.9)), rel=1e-5)
    assert [n for n, _ in trace_activations(model, batches[0])] == ["1", "3"]


def test_clipquant_converts_exactly_to_if_neurons_at_t_equal_levels():
    # IF with threshold theta, membrane started at theta/2, constant input x for T steps fires
    # clamp(floor(x T / theta + 1/2), 0, T) times: the ClipQuant activation with L = T.
    T, theta = 4, 1.5
    act = ClipQuant(levels=T, init=theta)
    x = torch.linspace(-1, 2.5, 401).view(1, 1, 401, 1)
    x = x[(((x * T / theta) + 0.5) % 1).abs() > 1e-3].view(1, 1, -1, 1)  # off level boundaries
    lif = LIF(1, beta=1.0, threshold=theta, v_init=0.5, scale_output=True, timesteps=T,
              broadcast_input=True)
    rate = lif(x).view(T, *x.shape).mean(0)
    torch.testing.assert_close(rate, act(x))


def test_spiking_max_pool_is_max_pool_at_one_step_and_keeps_spikes_binary():
    g = torch.Generator().manual_seed(0)
    x = torch.round(torch.randn(4, 3, 9, 9, generator=g) * 64) / 64  # no two values closer than GRID
    torch.testing.assert_close(SpikingMaxPool2d(make_pool(), 1)(x), make_pool()(x))
    spikes = (torch.rand(4 * 2, 3, 9, 9) < 0.3).float()
    out = SpikingMaxPool2d(make_pool(), 4)(spikes)
    assert out.shape == (8, 3, 4, 4) and set(out.unique().tolist()) <= {0.0, 1.0}


def test_spiking_max_pool_passes_the_running_winner():
    # two inputs in one 2x2 window: A fires at steps 0,1,2 (rate 3/4), B only at step 3 (1/4).
    # A per-step max would pass 4 spikes (rate 1); the gated pool passes A's 3: the max rate.
    T = 4
    x = torch.zeros(T, 1, 1, 2, 2)
    x[:3, 0, 0, 0, 0] = 1.0
    x[3, 0, 0, 1, 1] = 1.0
    out = SpikingMaxPool2d(torch.nn.MaxPool2d(2, 2), T)(x.flatten(0, 1))
    assert out.flatten().tolist() == [1.0, 1.0, 1.0, 0.0]


def test_a_tie_goes_to_the_last_winner():
    # P (first in the window) gets currents 0, 1; Q gets 1, 0. Q leads after step 0; after step 1
    # both sums are 1. Passing Q again keeps the output's sum (1) equal to the max sum; passing
    # the first location (P) would pass 1 + 1 = 2, more than any input had.
    T = 2
    x = torch.zeros(T, 1, 1, 2, 2)
    x[:, 0, 0, 0, 0] = torch.tensor([0.0, 1.0])
    x[:, 0, 0, 1, 1] = torch.tensor([1.0, 0.0])
    out = SpikingMaxPool2d(torch.nn.MaxPool2d(2, 2), T)(x.flatten(0, 1))
    assert out.flatten().tolist() == [1.0, 0.0]


@pytest.mark.parametrize("dtype,layout", [(torch.float32, torch.channels_last),
                                          (torch.float64, torch.channels_last),
                                          (torch.float32, torch.contiguous_format),
                                          (torch.bfloat16, torch.channels_last)])
def test_gated_pool_sends_each_outputs_gradient_to_its_winner_and_leaves_the_input_alone(dtype, layout):
    # Reference: step by step, each window passes the input of the location whose running sum is
    # largest (no ties in random currents); the gradient of an output reaches that input only.
    # Output and input gradient keep the input's memory layout (BN's backward is slow on a mix).
    g = torch.Generator().manual_seed(0)
    T, B = 3, 2
    x = torch.randn(T * B, 2, 5, 5, generator=g, dtype=dtype).contiguous(memory_format=layout)
    before = x.clone()
    x.requires_grad_()
    inner = x * 1  # not a leaf: a leaf's .grad is re-laid out to match it, hiding the layout
    seen = []
    inner.register_hook(seen.append)  # the gradient as the layer before the pool receives it
    out = SpikingMaxPool2d(nn.MaxPool2d(2, 2), T)(inner)  # (T*B, 2, 2, 2)
    assert torch.equal(x.detach(), before)  # the running sums are the pool's own copy
    assert out.is_contiguous(memory_format=layout)
    weights = torch.randn(out.shape, generator=g, dtype=dtype)
    (out * weights).sum().backward()
    sums = before.double().view(T, B, 2, 5, 5).cumsum(0)  # exact, whatever the dtype
    want_out, want_grad = torch.zeros_like(out), torch.zeros_like(before).view(T, B, 2, 5, 5)
    for t in range(T):
        _, idx = nn.functional.max_pool2d(sums[t], 2, 2, return_indices=True)  # (B, 2, 2, 2)
        xt = before.view(T, B, 2, 25)[t]
        want_out.view(T, B, 2, 4)[t] = xt.gather(2, idx.flatten(2))
        want_grad[t].view(B, 2, 25).scatter_(2, idx.flatten(2), weights.view(T, B, 2, 4)[t])
    assert torch.equal(out.detach(), want_out)
    assert torch.equal(x.grad, want_grad.view_as(before))
    assert seen[0].is_contiguous(memory_format=layout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gated_pool_gradient_sums_over_overlapping_windows_in_training_and_in_eval(dtype):
    # SqueezeNet's 3x3/2 windows overlap: a location can win up to four windows, and its gradient
    # is the sum of theirs. Training takes max-pooling's own backward, eval the gather's; both
    # must be that sum (bf16: within its rounding of a four-term sum).
    g = torch.Generator().manual_seed(1)
    T, B = 4, 3
    x = torch.randn(T * B, 4, 9, 9, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    pool = SpikingMaxPool2d(nn.MaxPool2d(3, 2, ceil_mode=True), T)
    idx = pool.winners(x).flatten(2)  # (T*B, 4, 16)
    weights = torch.randn(T * B, 4, 4, 4, generator=g).to(dtype)
    want = torch.zeros(T * B, 4, 81, dtype=torch.float64).scatter_add_(
        2, idx, weights.double().flatten(2)).view(x.shape)
    assert int(torch.bincount(idx[0, 0]).max()) > 1  # some location does win several windows
    for training in (True, False):
        leaf = x.detach().requires_grad_()
        (pool.train(training)(leaf) * weights).sum().backward()
        tol = dict(rtol=2 ** -7, atol=2 ** -7) if dtype == torch.bfloat16 else dict(rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(leaf.grad.double(), want, **tol)
        assert leaf.grad.is_contiguous(memory_format=torch.channels_last)


def test_gated_pool_on_bf16_picks_the_winners_of_exact_sums():
    # Under bf16 autocast the keys are float32, not float64: the sums of T bf16 currents must still
    # be exact, so the winners are those of the float64 sums of the same values.
    g = torch.Generator().manual_seed(2)
    T, conv = 4, nn.Conv2d(3, 16, 1)
    spikes = (torch.rand(T * 8, 3, 12, 12, generator=g) < 0.4).float()
    with torch.no_grad():
        x = conv(spikes).to(torch.bfloat16)  # (T*B, 16, 12, 12): many currents tie exactly
    pool = SpikingMaxPool2d(nn.MaxPool2d(3, 2, ceil_mode=True), T)
    assert torch.equal(pool.winners(x), pool.winners(x.double()))
    assert torch.equal(pool(x), pool(x.double()).to(torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_gated_pool_sums_large_currents_without_overflow(dtype):
    # Step 0: 70 > 66; step 1: 70 + 0 < 66 + 10. Scaled to grid units in fp16, 70 would be inf.
    x = torch.tensor([[70.0, 66.0], [0.0, 10.0]]).view(2, 1, 1, 2).to(dtype)
    pool = SpikingMaxPool2d(nn.MaxPool2d((1, 2)), 2)
    assert pool.winners(x).flatten().tolist() == [0, 1]


def test_gated_pool_choice_does_not_hang_on_float_rounding(monkeypatch):
    # Spikes through a 1x1 conv: locations that got the same spikes in another order have running
    # sums equal in exact maths. Another arithmetic (BN folded, onnxruntime) moves every current by
    # ~1 ulp; the pool must still pass the same locations.
    g = torch.Generator().manual_seed(0)
    T, conv = 4, nn.Conv2d(3, 8, 1)
    spikes = (torch.rand(T * 16, 3, 8, 8, generator=g) < 0.5).float()
    with torch.no_grad():
        x = conv(spikes)  # (T*B, 8, 8, 8)
    nudged = x * (1 + 2.0 ** -23 * torch.randn(x.shape, generator=g))  # ~1 ulp per current
    pool = SpikingMaxPool2d(nn.MaxPool2d(2, 2), T)

    def moved() -> float:  # fraction of pooled outputs that come from another location
        return float(((pool(x) - pool(nudged)).abs() > 1e-4).float().mean())

    assert moved() == 0.0
    monkeypatch.setattr(SpikingMaxPool2d, "GRID", 2.0 ** -40)  # no grid: the last bit decides
    assert moved() > 0.01


def test_converter_gates_only_the_pools_after_the_first_neuron():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), make_pool(), nn.ReLU(),
                          nn.Conv2d(4, 4, 1), nn.ReLU(), make_pool(), nn.Flatten(), nn.Linear(16, 2))
    snn = convert(model, torch.zeros(2, 3, 9, 9), timesteps=3)
    assert type(snn.net[1]) is nn.MaxPool2d  # before the first neuron: static input
    assert isinstance(snn.net[5], SpikingMaxPool2d)
    snn.set_timesteps(5)
    assert snn.net[5].timesteps == 5 and snn.net[2].timesteps == 5
    assert snn(torch.randn(3, 3, 9, 9)).shape == (3, 2)


def test_avg_pool_net_converts_without_gates_and_every_layer_after_the_stem_reads_spikes():
    # The pools sit before the activations, so an average of currents still feeds a neuron, and
    # the next conv reads spikes: only the encoding layer (the stem) is counted as MAC.
    from firecut.config import ModelConfig, SpikingConfig
    from firecut.energy import EnergyModel, OpCounter
    from firecut.network import build_network

    torch.manual_seed(0)
    snn = build_network(ModelConfig(act="clipq", pool="avg", width=0.25),
                        SpikingConfig(enabled=True, timesteps=4, init="cnn.pt"), 10, 32).eval()
    assert not any(isinstance(m, SpikingMaxPool2d) for m in snn.modules())
    assert sum(isinstance(m, nn.AvgPool2d) for m in snn.modules()) == 5  # stem; fire3, fire5 x 2 branches
    counter = OpCounter(snn, 4, True)
    with counter, torch.no_grad():
        counter.begin_batch(2)
        snn(torch.randn(2, 3, 32, 32))
    report = counter.report(EnergyModel())
    kinds = {r["name"]: r["input"] for r in report["layers"] if r["type"] == "Conv2d"}
    assert len(kinds) == 1 + 3 * 8 + 1  # stem, 3 per Fire module, classifier
    assert kinds.pop("net.features.stem.conv") == "real-static"
    assert set(kinds.values()) == {"spike"} and report["ac"] > 0
    assert report["mac"] == report["layers"][0]["mac"] > 0  # the stem's, once per image


def test_an_avg_pool_of_spikes_is_the_pool_of_their_rate():
    # The linear pool needs no gate: per-step pooling of spike trains averages to the pool of the
    # rates exactly, where a per-step max overstates it (E[max] >= max E).
    torch.manual_seed(0)
    T = 8
    spikes = (torch.rand(T, 2, 3, 8, 8) < 0.3).float()
    avg = nn.AvgPool2d(3, 2, ceil_mode=True)
    per_step = avg(spikes.flatten(0, 1)).view(T, 2, 3, 4, 4).mean(0)
    torch.testing.assert_close(per_step, avg(spikes.mean(0)))
    mx = make_pool()
    assert (mx(spikes.flatten(0, 1)).view(T, 2, 3, 4, 4).mean(0) > mx(spikes.mean(0)) + 1e-6).any()


def test_clipquant_training_path_equals_its_autograd_definition():
    # ClipQuant trains through one fused function; values and both gradients equal the plain
    # straight-through expression (in float64, so that only the maths could differ).
    torch.manual_seed(0)
    act = ClipQuant(4, 2.0).double()
    x = (torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2).requires_grad_()
    y = act(x)
    g = torch.randn_like(y)
    y.backward(g)
    fused = x.grad.clone(), act.theta.grad.clone()
    x.grad, act.theta.grad = None, None
    theta = act.theta.abs().clamp_min(1e-3)
    q = torch.clamp(x / theta, 0.0, 1.0)
    ref = (q + (torch.floor(q * 4 + 0.5) / 4 - q).detach()) * theta
    ref.backward(g)
    assert torch.equal(y, ref)
    assert torch.equal(fused[0], x.grad) and 0 < (x.grad != 0).float().mean() < 1
    torch.testing.assert_close(fused[1], act.theta.grad, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # inference takes the plain path (what export traces)
        assert torch.equal(act(x), ref)


def test_convert_by_default_makes_the_converted_neuron():
    """IF neurons (beta 1) with learnable per-channel thresholds, membranes started at theta/2,
    spikes of amplitude theta: what threshold balancing assumes."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    snn = convert(model, torch.zeros(2, 3, 8, 8), timesteps=3, default_threshold=2.0)
    (lif,) = [m for m in snn.modules() if isinstance(m, LIF)]
    assert lif.scale_output and lif.v_init == 0.5 and float(lif.beta) == 1.0
    assert lif.threshold.requires_grad and lif.threshold.shape == (4,)
    assert torch.allclose(lif.threshold, torch.full((4,), 2.0))
