"""The CUDA path: fused LIF equal to the reference on the GPU, and a bf16 training step."""

import pytest
import torch

from firecut.config import ModelConfig, SpikingConfig
from firecut.network import build_network
from firecut.spiking import LIF


@pytest.mark.gpu
def test_fused_lif_on_cuda_equals_reference():
    torch.manual_seed(0)
    kw = dict(learn_threshold=True, v_init=0.5, scale_output=True, timesteps=4)
    fused, ref = LIF(8, fused=True, **kw).cuda(), LIF(8, fused=False, **kw).cuda()
    x = torch.randn(16, 8, 5, 5, device="cuda") * 2
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fused(xa), ref(xb)
    assert torch.equal(ya, yb)
    ya.sum().backward()
    yb.sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_snn_trains_a_step_under_bf16_autocast_channels_last():
    model = build_network(ModelConfig(), SpikingConfig(enabled=True), 10, 32).cuda()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        target = torch.zeros(8, dtype=torch.long, device="cuda")
        loss = torch.nn.functional.cross_entropy(model(x).float(), target)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads)
