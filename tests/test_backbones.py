"""The five backbones: parameter budgets, 32/64 px shapes, and conversion with honest counting."""

import pytest
import torch
from torch import nn

from firecut.config import ModelConfig, SpikingConfig
from firecut.energy import EnergyModel, OpCounter, is_spike_input
from firecut.errors import FirecutError
from firecut.models import list_models
from firecut.models.blocks import SqueezeExcite, channel_shuffle
from firecut.models.mixnet import MixConv, split_channels
from firecut.network import build_cnn, build_network, count_params
from firecut.spiking.graph import input_kinds
from firecut.spiking import balance_thresholds, convert

# name -> (CNN params, SNN params) on CIFAR-10 with the shared recipe's clip-quant activation,
# and the paper's count (its backbone table), in thousands
PARAMS = {
    "shufflenetv2": (913_486, 918_210, 911),
    "xception": (1_021_161, 1_026_338, 1_025),
    "mnasnet": (153_741, 157_338, 152),
    "mixnet_s": (87_682, 89_986, 85),
    "squeezenet": (733_539, 736_458, 736.5),
    "squeezenet_p": (545_159, 547_082, None),  # the paper gives no count for SqueezeNet-P
}
BACKBONES = sorted(PARAMS)


def test_the_benchmark_models_are_registered():
    assert set(BACKBONES) <= set(list_models())


@pytest.mark.parametrize("name", BACKBONES)
def test_parameter_counts_match_the_plan_and_the_papers_budget(name):
    cnn_params, snn_params, paper_k = PARAMS[name]
    mc = ModelConfig(name=name, act="clipq")
    assert count_params(build_network(mc, SpikingConfig(enabled=False), 10, 32)) == cnn_params
    snn = build_network(mc, SpikingConfig(enabled=True), 10, 32)
    assert count_params(snn) == snn_params
    if paper_k is not None:
        assert abs(snn_params / 1000 - paper_k) / paper_k < 0.06  # within 6% of the paper's count


@pytest.mark.parametrize("name", BACKBONES)
def test_width_scales_the_model(name):
    small = count_params(build_cnn(ModelConfig(name=name, width=0.5), 10))
    full = count_params(build_cnn(ModelConfig(name=name), 10))
    assert small < 0.6 * full


@pytest.mark.parametrize("name", BACKBONES)
def test_64px_inputs_cost_four_times_the_macs_outside_squeeze_excitation(name):
    net = build_cnn(ModelConfig(name=name), 10).eval()
    se = {f"{n}.{c}" for n, m in net.named_modules() if isinstance(m, SqueezeExcite)
          for c in ("reduce", "expand")}

    def macs(size):
        with torch.no_grad(), OpCounter(net, spiking=False) as c:
            c.begin_batch(1)
            assert net(torch.zeros(1, 3, size, size)).shape == (1, 10)
        return ({n: r.mac for n, r in c.layers.items() if n not in se},
                {n: r.mac for n, r in c.layers.items() if n in se})

    (small, small_se), (big, big_se) = macs(32), macs(64)
    assert {n: 4 * m for n, m in small.items()} == big  # fully convolutional, global pool
    assert small_se == big_se  # SE's 1x1 convs act on pooled (1x1) maps


@pytest.mark.parametrize("name", ["shufflenetv2", "xception", "mnasnet", "mixnet_s"])
def test_keep_masks_are_refused_where_there_are_no_fire_modules(name):
    with pytest.raises(FirecutError, match="applies to squeezenet"):
        build_cnn(ModelConfig(name=name, keep=["fire2"]), 10)


def test_squeezenet_p_is_the_ref1_mask():
    net = build_cnn(ModelConfig(name="squeezenet_p"), 10)
    assert net.keep == ("fire4", "fire6", "fire8", "fire9")


def test_channel_shuffle_is_a_permutation_that_interleaves_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_mixconv_gives_each_channel_group_its_kernel():
    assert split_channels(10, 3) == [4, 3, 3]
    mix = MixConv(10, (3, 5, 7), 2)
    assert [c.kernel_size[0] for c in mix.convs] == [3, 5, 7]
    assert [c.groups for c in mix.convs] == [4, 3, 3]  # depthwise within each group
    assert mix(torch.randn(2, 10, 32, 32)).shape == (2, 10, 16, 16)


def test_xception_residual_reads_the_input_before_the_inplace_activation():
    torch.manual_seed(0)
    net = build_cnn(ModelConfig(name="xception", act="relu", width=0.25), 10).eval()
    block = net.blocks[3]  # a middle block: identity residual, starts with an activation
    assert block.skip is None
    x = torch.randn(2, block.main.sep0.dw.in_channels, 4, 4)
    with torch.no_grad():
        expected = block.main(x.clone()) + x
        torch.testing.assert_close(block(x.clone()), expected)


# ------------------------------------------------------------------ conversion and counting
# Hand-written truth, per model: which layers read spikes (AC), the encoder (MAC once per image)
# and which read real values (MAC per step), by the role of the layer in its block.

def expected_kind(model: str, layer: str, layers) -> str:
    parts = layer.split(".")
    if layer in ("features.stem.conv", "stem.conv", "stem.0.conv"):
        return "real-static"  # the encoding layer reads the image
    if layer == "classifier.conv":
        return "spike"
    if model.startswith("squeezenet"):
        return "spike"  # every layer after the stem reads a neuron's output
    if model == "shufflenetv2":  # pw (act) -> dw (linear) -> pw (act); the left side dw -> pw
        return "real" if parts[-3:-1] in (["left", "1"], ["right", "2"]) else "spike"
    if model == "mnasnet":  # stem: conv, dw (act), pw (linear); blocks: expand reads the bottleneck
        return "real" if parts[-2] in ("expand", "head") else "spike"
    if model == "mixnet_s":
        if parts[-2] in ("expand", "head") or parts[-1] == "reduce":
            return "real"  # a linear bottleneck / residual sum; SE's spatial average
        if parts[-2] == "project":  # x * SE gate where the block has an SE
            return "real" if f"blocks.{parts[1]}.se.reduce" in layers else "spike"
        return "spike"
    if model == "xception":
        if parts[-1] == "pw":
            return "real"  # reads the depthwise half: nothing between them
        if layer.endswith("skip.conv"):
            return "spike" if layer.startswith("blocks.0.") else "real"  # block 0 reads the stem's act
        if layer == "tail.sep0.dw":
            return "real"  # reads the exit block's residual sum
        return "spike"  # every other depthwise conv follows an activation
    raise AssertionError(model)


@pytest.mark.parametrize("name", BACKBONES)
def test_every_model_converts_every_neuron_spikes_and_the_counter_reads_inputs_right(name):
    torch.manual_seed(0)
    cnn = build_cnn(ModelConfig(name=name, act="relu", width=0.5), 10)
    for m in cnn.modules():  # a 2-unit SE layer can be dead (ReLU never on) at random init
        if isinstance(m, SqueezeExcite):
            nn.init.constant_(m.reduce.bias, 1.0)
    x = torch.randn(32, 3, 32, 32)
    cnn.train()
    with torch.no_grad():
        cnn(x)  # BN statistics of this input, so activations are not degenerate
    thresholds = balance_thresholds(cnn, [x], percentile=80.0)
    acts = sum(isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU)) for m in cnn.modules())
    snn = convert(cnn, x[:2], 4, thresholds=thresholds).eval()
    assert len(snn.neurons()) == acts and not any(isinstance(m, nn.ReLU) for m in snn.modules())
    binary: dict[str, bool] = {}

    def record(name):
        def hook(mod, inp, out):
            binary[name] = is_spike_input(inp[0])
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in snn.net.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad(), OpCounter(snn, timesteps=4) as counter:
        counter.begin_batch(len(x))
        assert snn(x).shape == (32, 10)
    for h in hooks:
        h.remove()
    report = counter.report(EnergyModel())
    silent = [r["name"] for r in report["layers"] if r["type"] == "LIF" and r["firing_rate"] == 0]
    assert not silent, f"neurons that never spiked: {silent}"
    seen = {r["name"].removeprefix("net."): r["input"] for r in report["layers"] if r["type"] != "LIF"}
    assert seen == {layer: expected_kind(name, layer, seen) for layer in seen}
    assert all(binary[n] for n, k in seen.items() if k == "spike")  # AC layers really read {0, c}
    by_kind = {k: sum(r["ac"] + r["mac"] for r in report["layers"] if r["input"] == k) for k in seen.values()}
    assert by_kind["spike"] > 0 and report["ac"] > 0 and report["mac"] > 0
    if not name.startswith("squeezenet"):
        assert "real" in by_kind  # linear bottlenecks, depthwise halves, SE gates, residual sums


def test_a_real_gate_constant_over_the_batch_is_still_counted_as_mac():
    # a dead SE (its LIF never fires) gives every image the same gate sigmoid(bias): the product
    # is binary per channel in value, but the gate is computed at run time: MAC, not AC
    torch.manual_seed(0)
    cnn = build_cnn(ModelConfig(name="mixnet_s", act="relu", width=0.5), 10)
    snn = convert(cnn, torch.randn(2, 3, 32, 32), 4, default_threshold=0.05).eval()
    for m in snn.modules():
        if isinstance(m, SqueezeExcite):
            m.act.threshold.data.fill_(1e6)  # never fires
    with torch.no_grad(), OpCounter(snn, timesteps=4) as counter:
        counter.begin_batch(4)
        snn(torch.randn(4, 3, 32, 32))
    rows = {r["name"]: r for r in counter.report(EnergyModel())["layers"]}
    assert rows["net.blocks.3.project.conv"]["input"] == "real"
    assert rows["net.blocks.3.project.conv"]["ac"] == 0 and rows["net.blocks.3.project.conv"]["mac"] > 0
    assert input_kinds(snn.net)["blocks.3.se.expand"] == "spike"


def test_untraceable_nets_fall_back_to_judging_the_values():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.act, self.conv2 = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                x = x * 1.0
            return self.conv2(self.act(self.conv1(x))).mean((2, 3))

    snn = convert(Branchy(), torch.randn(2, 3, 8, 8), 2, default_threshold=0.1)
    assert input_kinds(snn.net) is None
    with torch.no_grad(), OpCounter(snn, timesteps=2) as counter:
        counter.begin_batch(2)
        snn(torch.rand(2, 3, 8, 8))
    rows = {r["name"]: r["input"] for r in counter.report(EnergyModel())["layers"]}
    assert rows == {"net.conv1": "real-static", "net.conv2": "spike", "net.act": ""}
