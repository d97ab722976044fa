"""Every registered model builds, runs at 32x32 and 64x64, as CNN and SNN; SqueezeNet's counts."""

import pytest
import torch

from firecut.config import ModelConfig, SpikingConfig
from firecut.errors import FirecutError
from firecut.models import list_models
from firecut.models.squeezenet import FIRE_NAMES
from firecut.network import build_network, count_params
from firecut.spiking import LIF, SpikingNet

# SqueezeNet-1.1 with a 3x3/64 stem and conv biases: 722,496 feature weights + 513 K classifier;
# BN adds 2 per activation channel (2,944 channels), a per-channel threshold 1 more.
FEATURES, CHANNELS = 722_496, 2_944


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("spiking", [False, True])
def test_every_model_forward(name, size, spiking):
    model = build_network(ModelConfig(name=name, width=0.25), SpikingConfig(enabled=spiking, timesteps=2),
                          7, size).eval()
    with torch.no_grad():
        y = model(torch.randn(3, 3, size, size))
    assert y.shape == (3, 7)
    assert torch.isfinite(y).all()
    assert isinstance(model, SpikingNet) == spiking


@pytest.mark.parametrize("classes,paper_k", [(10, 736.5), (100, 782.6), (200, 833.9)])
def test_squeezenet_parameter_counts(classes, paper_k):
    cnn = count_params(build_network(ModelConfig(), SpikingConfig(enabled=False), classes, 32))
    snn = count_params(build_network(ModelConfig(), SpikingConfig(enabled=True), classes, 32))
    assert cnn == FEATURES + 513 * classes + 2 * CHANNELS
    assert snn == cnn + CHANNELS  # one learnable threshold per channel
    assert round(snn / 1000, 1) == paper_k  # the paper's counts


def test_fire_modules_are_named_and_dropping_rewires_the_next_squeeze():
    full = build_network(ModelConfig(), SpikingConfig(enabled=False), 10, 32)
    assert [n for n, _ in full.features.named_children() if n.startswith("fire")] == list(FIRE_NAMES)
    pruned = build_network(ModelConfig(keep=["fire4", "fire6", "fire8", "fire9"]),
                           SpikingConfig(enabled=False), 10, 32)
    names = [n for n, _ in pruned.features.named_children()]
    assert names == ["stem", "fire4", "fire6", "fire8", "fire9"]
    # the pools after the stem and after fire3 both land in the stem; the one after fire5 in fire4
    assert isinstance(pruned.features.stem.pool, torch.nn.Sequential)
    assert pruned.features.fire4.expand3x3.pool is not None
    assert pruned.features.fire6.expand3x3.pool is None
    assert pruned.features.fire4.squeeze.conv.in_channels == 64  # takes the stem's channels
    assert pruned.features.fire6.squeeze.conv.in_channels == 256  # fire4's output
    assert pruned.features.fire8.squeeze.conv.in_channels == 384  # fire6's output
    assert pruned.features(torch.randn(2, 3, 32, 32)).shape == (2, 512, 4, 4)  # pools kept: 32 -> 4
    assert count_params(pruned) < count_params(full)
    empty = build_network(ModelConfig(keep=[]), SpikingConfig(enabled=False), 10, 32)
    assert empty.classifier.conv.in_channels == 64  # stem -> classifier


@pytest.mark.parametrize("keep,msg", [(["fire1"], "unknown Fire module"),
                                      (["fire2", "fire2"], "twice")])
def test_bad_keep_masks_are_refused(keep, msg):
    with pytest.raises(FirecutError, match=msg):
        build_network(ModelConfig(keep=keep), SpikingConfig(), 10, 32)


def test_pool_before_activation_leaves_the_cnn_unchanged():
    # maxpool(act(x)) == act(maxpool(x)) for a monotone activation: the torchvision order
    torch.manual_seed(0)
    net = build_network(ModelConfig(), SpikingConfig(enabled=False), 10, 32).eval()
    block = net.features.fire3.expand3x3
    x = torch.randn(2, 16, 16, 16)
    with torch.no_grad():
        inside = block(x)
        outside = block.pool(block.act(block.bn(block.conv(x))))
    torch.testing.assert_close(inside, outside)


def test_spiking_squeezenet_has_one_neuron_per_activation_and_encodes_once():
    snn = build_network(ModelConfig(), SpikingConfig(enabled=True), 10, 32)
    neurons = [m for m in snn.modules() if isinstance(m, LIF)]
    assert len(neurons) == 1 + 3 * len(FIRE_NAMES)
    assert [n.broadcast_input for n in neurons] == [True] + [False] * (len(neurons) - 1)
    assert not any(isinstance(m, torch.nn.ReLU) for m in snn.modules())


def test_avg_pool_squeezenet_swaps_every_pool_in_place():
    pooled = lambda net, kind: [n for n, m in net.named_modules() if isinstance(m, kind)]  # noqa: E731
    for keep in (None, ["fire4", "fire6", "fire8", "fire9"]):  # all kept; pools stacked in the stem
        mx = build_network(ModelConfig(keep=keep), SpikingConfig(), 10, 32)
        av = build_network(ModelConfig(keep=keep, pool="avg"), SpikingConfig(), 10, 32)
        assert pooled(av, torch.nn.AvgPool2d) == pooled(mx, torch.nn.MaxPool2d) != []
        assert not pooled(av, torch.nn.MaxPool2d) and count_params(av) == count_params(mx)
        assert av(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # a window clipped at the border averages the cells inside the image, not zero padding
    pool = build_network(ModelConfig(pool="avg"), SpikingConfig(), 10, 32).features.stem.pool
    assert pool(torch.ones(1, 1, 32, 32)).eq(1).all()


@pytest.mark.parametrize("mc,msg", [(ModelConfig(pool="min"), "unknown pool 'min'"),
                                    (ModelConfig(name="mnasnet", pool="avg"), "has no pool option")])
def test_bad_pool_options_are_refused(mc, msg):
    with pytest.raises(FirecutError, match=msg):
        build_network(mc, SpikingConfig(), 10, 32)
