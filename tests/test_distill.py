"""Distillation of the converted SNN from its CNN: the loss's maths, its wiring into training,
and the settings it refuses."""

import math

import pytest
import torch
from torch import nn

from firecut.config import RunConfig, validate
from firecut.data import DeviceLoader, load_synthetic
from firecut.errors import FirecutError
from firecut.training import loop as T
from firecut.training import steps
from firecut.training.distill import distill_loss, load_teacher

from conftest import assert_user_error, run_cli


def test_distill_loss_is_hintons_mix_of_cross_entropy_and_tempered_kl():
    s = torch.tensor([[0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[math.log(3.0), 0.0]])  # teacher: softmax = (0.75, 0.25)
    y = torch.tensor([1])

    def loss(*args):
        return float(distill_loss(*args).detach())

    ce = math.log(2.0)  # student (0.5, 0.5), label 1
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert loss(s, t, y, 0.0, 1.0) == pytest.approx(ce)
    assert loss(s, t, y, 1.0, 1.0) == pytest.approx(kl)
    assert loss(s, t, y, 0.25, 1.0) == pytest.approx(0.75 * ce + 0.25 * kl)
    # identical logits: the soft term vanishes at any temperature
    assert loss(t, t, y, 1.0, 4.0) == pytest.approx(0.0, abs=1e-7)
    # d/ds tau^2 KL(p_t || softmax(s/tau)) = tau (softmax(s/tau) - p_t): tau^2 keeps the scale
    tau = 4.0
    distill_loss(s, t, y, 1.0, tau).backward()
    p_t = torch.softmax(t / tau, dim=1)
    assert torch.allclose(s.grad, tau * (torch.softmax(s.detach() / tau, dim=1) - p_t), atol=1e-6)


def _one_batch():
    data = load_synthetic(n_train=64)
    mean, std = data.norm()
    return DeviceLoader(data.x_train, data.y_train, 64, mean, std, torch.device("cpu"),
                        train=True, augment=False, seed=0)


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_a_student_equal_to_its_teacher_has_no_distillation_loss(weight):
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    teacher.load_state_dict(student.state_dict())
    cfg = RunConfig()
    cfg.train.amp, cfg.train.distill = False, weight

    def epoch_loss(with_teacher):
        opt = torch.optim.SGD(student.parameters(), lr=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        return steps.train_epoch(student, _one_batch(), opt, sched, cfg,
                                 teacher=teacher if with_teacher else None)["train_loss"]

    loss = epoch_loss(True)
    if weight == 1.0:
        assert loss == pytest.approx(0.0, abs=1e-6)  # all teacher, and the teacher agrees
    else:
        assert loss == pytest.approx(epoch_loss(False))  # the plain cross-entropy, about ln 10
        assert loss > 1.0


def _tiny(epochs: int, **train) -> RunConfig:
    cfg = RunConfig()
    cfg.data.dataset, cfg.model.width, cfg.model.act = "synthetic", 0.25, "clipq"
    cfg.train.epochs, cfg.train.batch_size, cfg.train.device = epochs, 64, "cpu"
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_fit_distills_the_snn_from_the_cnn_it_converts_and_resumes_doing_so(tmp_path, monkeypatch):
    T.fit(validate(_tiny(2, lr=0.1)), str(tmp_path / "cnn"))
    init = str(tmp_path / "cnn" / "best.pt")
    teacher = load_teacher(init, 10, 32, torch.device("cpu"), channels_last=False)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())

    def snn(weight, epochs=2):
        cfg = _tiny(epochs, lr=0.01, distill=weight)
        cfg.spiking.enabled, cfg.spiking.init = True, init
        return validate(cfg)

    logs = []
    plain = T.fit(snn(0.0), str(tmp_path / "plain"), log=logs.append)
    whole = T.fit(snn(0.7), str(tmp_path / "whole"), log=logs.append)
    assert sum("distilling from" in m for m in logs) == 1  # only the run that asked
    assert "distill" not in plain and whole["distill"] == {"weight": 0.7, "temp": 4.0}
    rows = [(tmp_path / r / "metrics.csv").read_text().splitlines()[1].split(",")[1]
            for r in ("plain", "whole")]
    assert rows[0] != rows[1]  # the same seed and data: the loss is another one

    class Stop(Exception):
        pass

    def stop_after_first(epoch, metrics, probe):
        raise Stop

    with pytest.raises(Stop):
        T.fit(snn(0.7), str(tmp_path / "cut"), on_epoch=stop_after_first)
    logs.clear()
    resumed = T.fit(snn(0.7), str(tmp_path / "cut"), log=logs.append)
    assert any("resuming" in m for m in logs) and any("distilling from" in m for m in logs)
    assert resumed["acc"] == whole["acc"]
    spiking = str(tmp_path / "whole" / "best.pt")
    with pytest.raises(FirecutError, match="is a spiking net"):
        load_teacher(spiking, 10, 32, torch.device("cpu"), channels_last=False)
    with pytest.raises(FirecutError, match="--init"):
        load_teacher(init, 100, 32, torch.device("cpu"), channels_last=False)


def test_distillation_settings_are_checked():
    cnn = _tiny(1, distill=0.5)
    with pytest.raises(FirecutError, match="needs --init"):
        validate(cnn)
    for key, value, needle in (("distill", 1.5, "must be in"), ("distill_temp", 0.0, "> 0")):
        cfg = _tiny(1, **{key: value})
        cfg.spiking.enabled, cfg.spiking.init = True, "cnn.pt"
        with pytest.raises(FirecutError, match=needle):
            validate(cfg)
    assert_user_error(run_cli("train", "--dataset", "synthetic", "--cnn", "--quiet",
                              "--distill", "0.5"), "--distill (train.distill) needs --init")


def test_the_recipe_distils_every_converted_snn_from_its_own_cnn(tmp_path):
    from firecut.config import RecipeConfig
    from firecut.training.recipe import check_recipe, cnn_then_snn

    cfgs = []

    def fake_fit(cfg, out):
        cfgs.append(cfg)
        return {"acc": 0.5}

    recipe = RecipeConfig(dataset="synthetic", root="", preset="quick", distill=0.5)
    cnn_then_snn(recipe, tmp_path / "cnn", tmp_path / "snn", fake_fit, lambda m: None)
    assert [c.train.distill for c in cfgs] == [0.0, 0.5]  # the CNN has no teacher
    assert cfgs[1].spiking.init == str(tmp_path / "cnn" / "best.pt")
    with pytest.raises(FirecutError, match="--distill must be in"):
        check_recipe(RecipeConfig(distill=1.5))
    assert_user_error(run_cli("benchmark", "--dataset", "synthetic", "--distill", "2"),
                      "--distill must be in")


def test_distill_is_refused_where_no_snn_is_converted_from_a_cnn():
    from firecut.ablate import AblateConfig, check_values
    from firecut.search.run import SearchConfig, check_values as check_search

    from conftest import experiment

    for kw, needle in (({"retrain": "scratch"}, "--retrain scratch converts none"),
                       ({"retrain": "finetune", "base": "snn.pt"}, "with --base converts none")):
        with pytest.raises(FirecutError, match=needle):
            check_values(experiment(AblateConfig, dataset="synthetic", distill=0.5, **kw))
    check_values(experiment(AblateConfig, dataset="synthetic", distill=0.5, retrain="recipe"))
    check_values(experiment(AblateConfig, dataset="synthetic", distill=0.5))  # its base converts
    with pytest.raises(FirecutError, match="--base gives a trained one"):
        check_search(experiment(SearchConfig, dataset="synthetic", distill=0.5, base="snn.pt",
                                retrain="finetune"))
    check_search(experiment(SearchConfig, dataset="synthetic", distill=0.5))  # recipe: each net converts
