"""The weight-sharing supernet: every path is its standalone pruned net, the all-mask walk equals
256 separate forwards (outputs and counted accumulates), training touches only the sampled path,
and `firecut search --strategy supernet` ranks, fine-tunes the top K and resumes."""

import csv
import json
from collections import Counter

import pytest
import torch

from firecut import search as S
from firecut.checkpoint import make_checkpoint
from firecut.config import ModelConfig, SpikingConfig
from firecut.energy import EnergyModel, OpCounter
from firecut.masks import ALL_MASKS, keep_of
from firecut.models.squeezenet import pool_plan
from firecut.network import build_network
from firecut.supernet import batch_statistics, build_supernet, kendall_tau, subnet
from firecut.supernet_search import MaskSampler, balanced_draws, rank, score_masks

from conftest import assert_user_error, run_cli, shared_file
from test_search import base, cfg_for, quiet_fit  # noqa: F401, F811 (base: the tiny trained SNN fixture)

T = 3


@pytest.fixture(scope="module")
def base_ckpt():
    """A random unpruned spiking SqueezeNet (width 0.25, learnable thresholds) as a checkpoint."""
    torch.manual_seed(0)
    mc, sc = ModelConfig(width=0.25, act="clipq"), SpikingConfig(enabled=True, timesteps=T)
    net = build_network(mc, sc, 10, 32)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # running statistics unlike the batch's
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    ckpt = make_checkpoint(net, mc, sc, classes=[str(i) for i in range(10)], image_size=32,
                           dataset="synthetic", mean=[0.0] * 3, std=[1.0] * 3)
    return ckpt


@pytest.fixture(scope="module")
def sup(base_ckpt):
    return build_supernet(base_ckpt)


def test_pool_plan_keeps_pools_where_they_were():
    every = {"stem": 1, **{f"fire{i}": int(i in (3, 5)) for i in range(2, 10)}}
    assert pool_plan(keep_of("11111111")) == every
    assert pool_plan(("fire4",)) == {"stem": 2, "fire4": 1}
    assert pool_plan(()) == {"stem": 3}
    assert pool_plan(("fire2", "fire9")) == {"stem": 1, "fire2": 2, "fire9": 0}


def test_shared_tensors_come_from_the_base_and_rewired_branches_inherit_bn_and_neurons(sup, base_ckpt):
    state = base_ckpt["state_dict"]
    net = sup.net
    assert torch.equal(net.stem.conv.weight, state["net.features.stem.conv.weight"])
    assert torch.equal(net.fires.fire9.expand3x3.conv.weight,
                       state["net.features.fire9.expand3x3.conv.weight"])
    assert list(net.fires.fire9.squeeze) == ["16", "32", "64", "96", "128"]  # stem, fires
    assert list(net.fires.fire2.squeeze) == ["16"]
    assert list(net.fires.fire4.squeeze) == ["16", "32", "skip32"]  # fire2 -> fire4 skips fire3
    assert torch.equal(net.fires.fire5.squeeze["64"].conv.weight,
                       state["net.features.fire5.squeeze.conv.weight"])
    rewired = net.fires.fire5.squeeze["16"]  # stem -> fire5: a fresh conv, the base's BN and thresholds
    assert rewired.conv.weight.shape[1] == 16
    assert torch.equal(rewired.bn.running_mean, state["net.features.fire5.squeeze.bn.running_mean"])
    assert torch.equal(rewired.act.threshold, state["net.features.fire5.squeeze.act.threshold"])
    assert list(net.heads) == ["16", "32", "64", "96", "128", "skip128"]


def test_a_module_fed_past_a_dropped_same_width_module_runs_its_own_learning_copy(base_ckpt):
    from firecut.supernet import fresh_parameters

    net = build_supernet(base_ckpt)
    sup, state = net.net, base_ckpt["state_dict"]
    skip, own = sup.fires.fire6.squeeze["skip64"], sup.fires.fire6.squeeze["64"]  # fire4/fire5 -> fire6
    assert torch.equal(skip.conv.weight, state["net.features.fire6.squeeze.conv.weight"])
    assert skip.conv.weight is not own.conv.weight and skip.act is not own.act
    assert torch.equal(skip.act.threshold, own.act.threshold)
    widths = [16, 32, 32, 64, 64, 96, 96, 128]  # each module's own input: the one before it
    assert sup.path("11111111") == [f"fires.fire{i}.squeeze.{c}"
                                    for i, c in zip(range(2, 10), widths, strict=True)] + ["heads.128"]
    assert sup.path("11101110") == ["fires.fire2.squeeze.16", "fires.fire3.squeeze.32",
                                    "fires.fire4.squeeze.32", "fires.fire6.squeeze.skip64",
                                    "fires.fire7.squeeze.96", "fires.fire8.squeeze.96", "heads.skip128"]
    assert sup.path("11011111")[2:4] == ["fires.fire5.squeeze.32", "fires.fire6.squeeze.64"]  # widths differ
    assert {"fires.fire6.squeeze.skip64", "heads.skip128"} <= sup.fresh
    assert id(skip.conv.weight) in fresh_parameters(net) and id(own.conv.weight) not in fresh_parameters(net)
    assert not set(sup.path("11111111")) & sup.fresh  # the base's own wiring: nothing re-made


def test_every_path_is_its_standalone_pruned_net_and_the_walk_equals_separate_forwards(sup, base_ckpt):
    torch.manual_seed(1)
    x = torch.randn(4, 3, 32, 32) * 2
    walked = {}
    with torch.no_grad(), batch_statistics(sup):
        for bits, r, ac in sup.net.walk(x):
            walked[bits] = (r.view(T, -1, 10).mean(0), ac)
        assert sorted(walked) == sorted(ALL_MASKS)
        for bits in ALL_MASKS:
            sup.net.set_mask(bits)
            assert torch.equal(sup(x), walked[bits][0]), bits
    sup.net.set_mask("11111111")
    energy = EnergyModel()
    for bits in ["11111111", "00000000", "00010001", "10100110", "01011011", "00100000"]:
        net = subnet(sup, base_ckpt, bits)
        assert net.net.keep == keep_of(bits)
        with torch.no_grad(), batch_statistics(net), OpCounter(net, T, True) as counter:
            counter.begin_batch(len(x))
            y = net(x)
        assert torch.equal(y, walked[bits][0]), bits
        counted = counter.report(energy)
        assert counted["ac"] > 0
        assert float(walked[bits][1]) / len(x) == pytest.approx(counted["ac"], rel=1e-6), bits
        sup.net.set_mask(bits)  # running statistics too: the same network, not just the same maths
        sup.eval(), net.eval()
        with torch.no_grad():
            assert torch.equal(sup(x), net(x)), bits


def test_score_masks_counts_the_stem_as_mac_and_the_rest_as_ac(sup, base_ckpt):
    from firecut.data import DeviceLoader

    torch.manual_seed(2)
    xs = (torch.rand(12, 3, 32, 32) * 255).to(torch.uint8)
    ys = torch.randint(0, 10, (12,))
    loader = DeviceLoader(xs, ys, 6, [0.5] * 3, [0.25] * 3, torch.device("cpu"))
    scores = score_masks(sup, loader)
    assert len(scores) == 256
    assert {s["mac"] for s in scores.values()} == {32 * 32 * 16 * 27}  # the stem conv, once per image
    full, none = scores["11111111"], scores["00000000"]
    assert full["ac"] > none["ac"] > 0 and full["energy_mj"] > none["energy_mj"]
    assert all(0 <= s["acc"] <= 1 and s["loss"] > 0 for s in scores.values())


def test_batch_statistics_leave_running_statistics_and_modes_alone(sup):
    bn = sup.net.stem.bn
    before = (bn.running_mean.clone(), bn.num_batches_tracked.clone())
    sup.train()
    with torch.no_grad(), batch_statistics(sup):
        assert bn.training and not sup.net.heads["128"][0].training
        sup(torch.randn(3, 3, 32, 32))
    assert sup.training and torch.equal(bn.running_mean, before[0])
    assert torch.equal(bn.num_batches_tracked, before[1]) and bn.momentum == 0.1
    sup.eval()


def test_a_training_step_changes_only_the_sampled_path(base_ckpt):
    from firecut.data import DeviceLoader

    net = build_supernet(base_ckpt)
    xs = (torch.rand(8, 3, 32, 32) * 255).to(torch.uint8)
    loader = DeviceLoader(xs, torch.randint(0, 10, (8,)), 4, [0.5] * 3, [0.25] * 3, torch.device("cpu"),
                          train=True)
    draws = [net.net.bits for _ in MaskSampler(loader, net, seed=3)]
    again = [net.net.bits for _ in MaskSampler(loader, net, seed=3)]
    assert draws == again and len(draws) == 2  # (seed, epoch) decides the draws: resumable
    net.net.set_mask("00010001")  # stem -> fire5 -> fire9
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    torch.nn.functional.cross_entropy(net(torch.randn(4, 3, 32, 32)), torch.arange(4)).backward()
    opt.step()
    changed = {k.rsplit(".", 1)[0] for k, v in net.state_dict().items()
               if k.endswith("weight") and not torch.equal(v, before[k])}
    assert "net.fires.fire5.squeeze.16.conv" in changed and "net.heads.128.conv" in changed
    assert "net.fires.fire9.squeeze.64.conv" in changed
    assert not any(k.startswith(("net.fires.fire2", "net.fires.fire6", "net.fires.fire5.squeeze.64"))
                   for k in changed)


def test_balanced_draws_give_the_rarest_branch_its_share(base_ckpt):
    net = build_supernet(base_ckpt).net
    paths = {b: set(net.path(b)) & net.fresh for b in ALL_MASKS}
    rarest = min(net.fresh, key=lambda n: sum(n in p for p in paths.values()))
    assert sum(rarest in p for p in paths.values()) <= 3  # uniform draws: ~1% of the steps
    draws = balanced_draws(paths, 600, seed=0)
    steps = Counter(n for b in draws for n in paths[b])
    assert set(steps) == net.fresh and "11111111" not in draws  # nothing of its own to learn
    # every len(fresh) steps raise the least-trained count by at least one
    assert steps[rarest] >= 600 // len(net.fresh) > 3 * 600 / 255
    assert balanced_draws(paths, 100, seed=0) == draws[:100]  # more epochs extend, not reshuffle
    assert balanced_draws(paths, 600, seed=1) != draws


def test_fresh_branches_and_shared_tensors_take_their_own_rates(base_ckpt):
    from firecut.config import RunConfig
    from firecut.supernet import fresh_parameters
    from firecut.supernet_search import supernet_optimizer

    net = build_supernet(base_ckpt)
    fresh = fresh_parameters(net)
    assert net.net.fresh >= {"fires.fire5.squeeze.16", "heads.16", "heads.64"}
    assert "fires.fire5.squeeze.64" not in net.net.fresh and "heads.128" not in net.net.fresh
    assert net.net.path("00010001") == ["fires.fire5.squeeze.16", "fires.fire9.squeeze.64", "heads.128"]
    assert id(net.net.fires.fire5.squeeze["16"].conv.weight) in fresh
    assert id(net.net.fires.fire5.squeeze["64"].conv.weight) not in fresh
    opt = supernet_optimizer(net, RunConfig(), fresh_lr=0.3, shared_lr=0.01)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert len(lr_of) == sum(1 for _ in net.parameters())  # every tensor in exactly one group
    assert {lr_of[i] for i in fresh} == {0.3} and {v for k, v in lr_of.items() if k not in fresh} == {0.01}
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(net.net.heads["16"].conv.weight)] > 0 == decay[id(net.net.heads["16"].conv.bias)]

    frozen = build_supernet(base_ckpt)  # shared rate 0: only the re-made branches learn
    opt = supernet_optimizer(frozen, RunConfig(), fresh_lr=0.3, shared_lr=0.0)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    frozen.net.set_mask("00010001")
    torch.nn.functional.cross_entropy(frozen(torch.randn(4, 3, 32, 32)), torch.arange(4)).backward()
    opt.step()
    changed = {k for k, v in frozen.state_dict().items()
               if k.endswith("weight") and not torch.equal(v, before[k])}
    assert "net.fires.fire5.squeeze.16.conv.weight" in changed  # stem -> fire5 -> fire9: re-made
    assert "net.fires.fire9.squeeze.64.conv.weight" in changed
    assert all(k.startswith(("net.fires.fire5.squeeze.16.", "net.fires.fire9.squeeze.64."))
               for k in changed)


def test_kendall_tau():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)  # 2 concordant, 1 discordant
    # tau-b with a tie in b: pairs (12)+ (13)+ (14)+ (23)0 (24)+ (34)+ -> 5 / sqrt(6 * 5)
    assert kendall_tau([1, 2, 3, 4], [1, 2, 2, 3]) == pytest.approx(5 / 30 ** 0.5)


def test_rank_puts_each_non_dominated_front_first():
    # ranked by loss; accuracy (here in the opposite order) is shown, not ranked on
    s = {"a": {"loss": 1.5, "acc": 0.1, "energy_mj": 1.0}, "b": {"loss": 1.4, "acc": 0.2, "energy_mj": 2.0},
         "c": {"loss": 1.6, "acc": 0.9, "energy_mj": 2.0}, "d": {"loss": 1.45, "acc": 0.3, "energy_mj": 3.0},
         "11111111": {"loss": 1.3, "acc": 0.0, "energy_mj": 4.0}}
    assert rank(s, "pareto", 0.0) == ["11111111", "b", "a", "d", "c"]
    # scalar: J = -loss - lambda * E / E(all kept); lambda 0.4: a -1.6, b -1.6, c -1.8, d -1.75, all -1.7
    assert rank(s, "scalar", 0.4)[-1] == "c" and rank(s, "scalar", 0.4)[:2] in (["a", "b"], ["b", "a"])


# ------------------------------------------------------------------------------ the strategy


class CountingFit:
    def __init__(self):
        self.runs = []

    def __call__(self, cfg, out, **kw):
        self.runs.append(out)
        return quiet_fit(cfg, out, **kw)


def test_supernet_search_ranks_all_masks_fine_tunes_the_top_k_and_resumes(tmp_path, base):  # noqa: F811
    out = tmp_path / "s"
    cfg = cfg_for(base, strategy="supernet", top_k=2, supernet_epochs=1, score_images=64)
    fit = CountingFit()
    rep = S.run_search(cfg, out, fit=fit, log=lambda m: None)
    ranking = list(csv.DictReader((out / "ranking.csv").open()))
    assert len(ranking) == 256 and len({r["mask"] for r in ranking}) == 256
    assert [r["mask"] for r in ranking[:2]] == [r["mask"] for r in rep["rows"]] == rep["order"][:2]
    assert all(r["tuned_acc"] for r in ranking[:2]) and not any(r["tuned_acc"] for r in ranking[2:])
    scores = json.loads((out / "supernet" / "scores.json").read_text())
    assert scores["score_images"] == 64 and scores["train_seconds"] > 0
    front_loss = min(float(r["score_loss"]) for r in ranking if float(r["score_energy_mj"]) <= float(
        ranking[0]["score_energy_mj"]))
    assert float(ranking[0]["score_loss"]) == front_loss  # nothing as cheap has a lower loss
    assert len(fit.runs) == 2 and (out / "best.pt").is_file()
    assert rep["best"]["mask"] in rep["order"][:2]
    assert "# Mask search: supernet (pareto)" in (out / "pareto.md").read_text()
    scored_at = (out / "supernet" / "scores.json").stat().st_mtime_ns
    stamps = lambda: [(out / "masks" / f"{r['mask']}-s0" / "last.pt").stat().st_mtime_ns  # noqa: E731
                      for r in rep["rows"]]
    trained_at = stamps()
    again = CountingFit()
    rep2 = S.run_search(cfg, out, fit=again, log=lambda m: None)  # everything is kept
    assert rep2["order"] == rep["order"]
    assert [r["acc"] for r in rep2["rows"]] == [r["acc"] for r in rep["rows"]]
    assert stamps() == trained_at  # not trained again
    assert (out / "supernet" / "scores.json").stat().st_mtime_ns == scored_at  # not scored again
    with pytest.raises(Exception, match="different settings"):
        S.run_search(cfg_for(base, strategy="supernet", top_k=2, supernet_epochs=2,
                             score_images=64), out, fit=quiet_fit, log=lambda m: None)
    import yaml

    pinned = yaml.safe_load((out / "supernet.yaml").read_text())
    assert pinned.pop("branches") == "width+skip"  # an OUT from before skip branches is not resumed
    (out / "supernet.yaml").write_text(yaml.safe_dump(pinned))
    with pytest.raises(Exception, match=r"different settings \(branches\); use another --out"):
        S.run_search(cfg, out, fit=quiet_fit, log=lambda m: None)


def test_a_killed_supernet_training_resumes_after_its_last_epoch(tmp_path, base, monkeypatch):  # noqa: F811
    import firecut.train as train_mod

    out = tmp_path / "k"
    cfg = cfg_for(base, strategy="supernet", top_k=1, supernet_epochs=2, score_images=64)
    real = train_mod.train_epoch
    calls = []

    def dies_in_second(model, *a, **kw):
        calls.append(type(model.net).__name__)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, *a, **kw)

    monkeypatch.setattr(train_mod, "train_epoch", dies_in_second)
    with pytest.raises(KeyboardInterrupt):
        S.run_search(cfg, out, fit=quiet_fit, log=lambda m: None)
    assert torch.load(out / "supernet" / "last.pt", weights_only=True)["epoch"] == 1
    assert not (out / "supernet" / "scores.json").exists()
    logs = []
    S.run_search(cfg, out, fit=quiet_fit, log=logs.append)
    assert any("resuming after epoch 1/2" in m for m in logs)
    # epoch 2 again (not epoch 1), then the top mask's fine-tune
    assert calls == ["SuperSqueezeNet"] * 3 + ["SqueezeNet"]


@pytest.mark.parametrize("over,msg", [({"strategy": "grid"}, "unknown --strategy 'grid'"),
                                      ({"top_k": 0}, "--top-k must be >= 1"),
                                      ({"score_images": 400}, "would hold out more than half")])
def test_impossible_supernet_settings_are_refused(tmp_path, base, over, msg):  # noqa: F811
    cfg = cfg_for(base, **{"strategy": "supernet", "supernet_epochs": 1, **over})
    with pytest.raises(Exception, match=msg):
        S.run_search(cfg, tmp_path / "x", fit=quiet_fit, log=lambda m: None)


def test_supernet_search_cli_on_real_cifar10(tmp_path):
    data = shared_file("cifar10-sub.npz")
    out = tmp_path / "sn"
    args = ["search", "--strategy", "supernet", "--dataset", data, "--train-subset", 400,
            "--test-subset", 100, "--epochs", 1, "--finetune-epochs", 1, "--supernet-epochs", 1,
            "--score-images", 100, "--top-k", 2, "--batch-size", 50, "--saliency-masks", 0,
            "--out", out]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    ranking = list(csv.DictReader((out / "ranking.csv").open()))
    assert len(ranking) == 256
    by_mask = {r["mask"]: r for r in ranking}
    assert float(by_mask["00000000"]["score_energy_mj"]) < float(by_mask["11111111"]["score_energy_mj"])
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["mask"] for r in rows] == [r["mask"] for r in ranking[:2]]
    for r in rows:
        assert float(r["mac"]) == 32 * 32 * 64 * 27 and float(r["ac"]) > 0
    assert "Supernet ranking" in proc.stdout and "best: trial" in proc.stderr
    assert (out / "best.pt").is_file()
    assert_user_error(run_cli(*args[:-2], "--out", tmp_path / "y", "--strategy", "grid"), "--strategy")
