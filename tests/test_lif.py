"""The LIF neuron equals snntorch.Leaky stepped T times; the fused path equals the reference."""

import pytest
import snntorch as snn
import torch
from snntorch import surrogate as sg

from firecut.spiking import LIF, SpikingNet

SNNTORCH_SURROGATES = {"atan": sg.atan, "fast_sigmoid": sg.fast_sigmoid, "sigmoid": sg.sigmoid}


def snntorch_steps(x, beta, thr, v_init, surrogate_name, reset="subtract"):
    """snntorch's tutorial way: a Leaky layer called once per step."""
    leaky = snn.Leaky(beta=beta, threshold=thr, spike_grad=SNNTORCH_SURROGATES[surrogate_name](),
                      reset_mechanism=reset)
    mem = torch.full_like(x[0], v_init * thr)
    out = []
    for t in range(x.shape[0]):
        spk, mem = leaky(x[t], mem)
        out.append(spk)
    return torch.stack(out)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("surrogate_name", ["atan", "fast_sigmoid", "sigmoid"])
@pytest.mark.parametrize("beta,thr,v_init", [(0.9, 1.0, 0.0), (1.0, 0.6, 0.5), (0.75, 1.3, 0.5)])
def test_lif_equals_snntorch_leaky(fused, reset, surrogate_name, beta, thr, v_init):
    T, B = 6, 4
    torch.manual_seed(0)
    x = (torch.randn(T, B, 3, 5, 5) * 1.2 + 0.4)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = LIF(None, beta=beta, threshold=thr, surrogate_name=surrogate_name, v_init=v_init,
               timesteps=T, fused=fused, reset=reset)
    ya = ours(xa.flatten(0, 1)).view(T, B, 3, 5, 5)
    yb = snntorch_steps(xb, beta, thr, v_init, surrogate_name, reset)
    assert ya.sum() > 0 and (ya == 0).any()  # the comparison sees spikes and silences
    assert torch.equal(ya, yb)
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert xa.grad.abs().sum() > 0
    assert torch.isfinite(xa.grad).all()
    # snntorch's sigmoid derivative k e^{-ku} / (e^{-ku} + 1)^2 overflows to NaN for very negative
    # u; firecut's equal, stable form stays finite. Compare wherever snntorch is finite.
    finite = torch.isfinite(xb.grad)
    assert finite.float().mean() > 0.5
    torch.testing.assert_close(xa.grad[finite], xb.grad[finite], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("broadcast", [False, True])
@pytest.mark.parametrize("beta", [1.0, 0.8])
@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("surrogate_name", ["atan", "fast_sigmoid", "sigmoid"])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_fused_equals_reference_values_and_gradients(broadcast, beta, scale, surrogate_name, reset):
    T, B, C = 4, 3, 5
    torch.manual_seed(1)
    kw = dict(beta=beta, learn_threshold=True, surrogate_name=surrogate_name, v_init=0.5,
              scale_output=scale, timesteps=T, broadcast_input=broadcast, reset=reset)
    fused, ref = LIF(C, fused=True, **kw), LIF(C, fused=False, **kw)
    with torch.no_grad():
        fused.threshold.copy_(torch.rand(C) + 0.3)
        ref.threshold.copy_(fused.threshold)
    x = torch.randn(B if broadcast else T * B, C, 6, 6) * 1.5
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fused(xa), ref(xb)
    assert ya.shape == (T * B, C, 6, 6)
    assert torch.equal(ya, yb)
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fused.threshold.grad, ref.threshold.grad, rtol=1e-4, atol=1e-4)
    assert fused.threshold.grad.abs().sum() > 0


@pytest.mark.parametrize("channels", [5, None])  # per-channel or one scalar threshold
@pytest.mark.parametrize("T", [1, 4])
@pytest.mark.parametrize("learn", [True, False])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_fused_equals_reference_for_scalar_fixed_thresholds_and_one_step(channels, T, learn, reset):
    # The fused backward sums the threshold's gradient over a (T, B, C, ...) tensor (to a scalar
    # for a scalar threshold), keeps the spikes only where it needs them, and has no t-1 at T=1.
    B = 3
    torch.manual_seed(3)
    kw = dict(threshold=0.8, beta=1.0, learn_threshold=learn, v_init=0.5, scale_output=True,
              timesteps=T, reset=reset)
    fused, ref = LIF(channels, fused=True, **kw), LIF(channels, fused=False, **kw)
    x = torch.randn(T * B, 5, 4, 4) * 1.5
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fused(xa), ref(xb)
    assert torch.equal(ya, yb)
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    if learn:
        assert fused.threshold.grad.shape == fused.threshold.shape
        torch.testing.assert_close(fused.threshold.grad, ref.threshold.grad, rtol=1e-4, atol=1e-4)
    else:
        assert fused.threshold.grad is None


def test_no_state_outlives_a_forward_call():
    lif = LIF(4, threshold=0.5, v_init=0.5, timesteps=3)
    x = torch.randn(3 * 2, 4, 3, 3)
    buffers_before = {k: v.clone() for k, v in lif.state_dict().items()}
    a, b = lif(x), lif(x)
    assert torch.equal(a, b)  # a second call starts from the same initial membrane
    assert set(lif.state_dict()) == {"threshold", "beta"}
    for k, v in lif.state_dict().items():
        assert torch.equal(v, buffers_before[k])


def test_spikes_are_binary_or_threshold_scaled():
    lif = LIF(3, threshold=0.7, scale_output=True, timesteps=4)
    y = lif(torch.randn(8, 3, 4, 4) * 3)
    values = torch.unique(y)
    assert len(values) == 2 and values[0] == 0 and abs(float(values[1]) - 0.7) < 1e-6
    plain = LIF(3, threshold=0.7, scale_output=False, timesteps=4)(torch.randn(8, 3, 4, 4) * 3)
    assert set(torch.unique(plain).tolist()) <= {0.0, 1.0}


def test_spiking_net_reads_out_the_mean_over_steps():
    T = 3
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    out = SpikingNet(net, T)(torch.ones(5, 4))
    assert out.shape == (5, 2)
    torch.testing.assert_close(out, net(torch.ones(5, 4)))  # identical steps: mean == one step


@pytest.mark.parametrize("broadcast", [False, True])
def test_channels_last_and_bf16_inputs_keep_their_layout_and_an_fp32_membrane(broadcast):
    # channels_last in -> channels_last spikes and input gradient (BN's backward on a gradient in
    # the other layout is several times slower on CPU), the same values as NCHW; a bf16 input
    # (autocast) gives the spikes of the fp32 neuron on the same bf16-rounded input, in bf16.
    T, B, C = 4, 3, 5
    torch.manual_seed(2)
    neuron = LIF(C, threshold=0.7, learn_threshold=True, v_init=0.5, scale_output=True,
                 timesteps=T, broadcast_input=broadcast)
    x = torch.randn(B if broadcast else T * B, C, 6, 6) * 1.5
    xa = x.clone().requires_grad_()
    xb = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    ya, yb = neuron(xa), neuron(xb)
    assert yb.is_contiguous(memory_format=torch.channels_last) and not yb.is_contiguous()
    assert torch.equal(ya, yb)
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert xb.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(xa.grad, xb.grad)
    x16 = x.to(torch.bfloat16)
    y16 = neuron(x16)
    assert y16.dtype == torch.bfloat16
    assert torch.equal(y16, neuron(x16.float()).to(torch.bfloat16))
