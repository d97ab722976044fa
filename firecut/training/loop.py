"""fit: one CNN or SNN trained into a resumable run folder, evaluated and energy-counted.

The CNN -> SNN pipeline: `spiking.init` names a trained CNN checkpoint; its weights are kept,
thresholds are balanced on training batches (ClipQuant: its learned clip), the activations become
LIF neurons, and the SNN is fine-tuned with surrogate gradients. Without `init` the SNN trains
from scratch. Each epoch ends with a test pass and an atomic last.pt; the last epoch's test pass
also counts AC/MAC, and summary.json is written last.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import torch
from torch import nn

import firecut
from firecut.checkpoint import (configs_of, load_checkpoint, make_checkpoint, model_from_checkpoint,
                                portable_path, require_fits, save_checkpoint, shareable_config)
from firecut.config import RunConfig
from firecut.data import DeviceLoader, ImageData, dataset_name, load_data
from firecut.energy import EnergyModel, make_energy
from firecut.errors import FirecutError
from firecut.network import build_network, count_params, to_spiking
from firecut.pruning.inherit import inherit
from firecut.runs import RunFolder, folder_lock
from firecut.spiking import SpikingNet, balance_thresholds
from firecut.training import device as D
from firecut.training import steps as S
from firecut.training.distill import load_teacher
from firecut.training.metrics import evaluate


def _seed(seed: int) -> None:
    torch.manual_seed(seed)


def _init_from_cnn(cfg: RunConfig, data: ImageData, device: torch.device, log: Callable[[str], None]):
    """Loads the CNN of `spiking.init`, balances thresholds on training batches, converts it."""
    ckpt = load_checkpoint(cfg.spiking.init)
    mc, sc = configs_of(ckpt)
    if sc.enabled:
        raise FirecutError(f"--init {cfg.spiking.init} is already a spiking net; "
                           "give the checkpoint of a CNN")
    require_fits(ckpt, data.num_classes, data.image_size, f"--init {cfg.spiking.init}")
    if mc.name != cfg.model.name:
        raise FirecutError(f"--init {cfg.spiking.init} is a '{mc.name}', not a '{cfg.model.name}'; "
                           f"pass --model {mc.name}")
    cnn = model_from_checkpoint(ckpt).to(device)
    if cfg.model.keep is not None and sorted(cfg.model.keep) != sorted(model_keep(cnn)):
        raise FirecutError(f"--init {cfg.spiking.init} has its own Fire modules "
                           f"({', '.join(model_keep(cnn))}); drop --keep, or train a CNN with "
                           "that --keep first")
    mean, std = ckpt["norm"]["mean"], ckpt["norm"]["std"]
    loader = DeviceLoader(data.x_train, data.y_train, cfg.train.batch_size, mean, std, device,
                          train=True, augment=False, seed=cfg.train.seed)
    batches = (x for _, (x, _) in zip(range(cfg.spiking.balance_batches), loader, strict=False))
    thresholds = balance_thresholds(cnn, batches, cfg.spiking.percentile)
    log(f"converted {cfg.spiking.init}: {len(thresholds)} activations -> LIF, thresholds "
        f"{min(thresholds.values()):.2f}..{max(thresholds.values()):.2f}")
    return mc, to_spiking(cnn, cfg.spiking, data.image_size, thresholds), (mean, std)


def _from_parent(cfg: RunConfig, data: ImageData, device: torch.device, log: Callable[[str], None]):
    """Builds the (pruned) network of `cfg` and inherits every fitting tensor of `model.parent`."""
    ckpt = load_checkpoint(cfg.model.parent)
    require_fits(ckpt, data.num_classes, data.image_size, f"--parent {cfg.model.parent}")
    pmc, psc = configs_of(ckpt)
    problems = [f"{what}: parent {p!r}, asked {a!r}" for what, p, a in (
        ("model", pmc.name, cfg.model.name), ("act", pmc.act, cfg.model.act),
        ("width", pmc.width, cfg.model.width), ("spiking", psc.enabled, cfg.spiking.enabled))
        if p != a]
    if problems:
        raise FirecutError(f"--parent {cfg.model.parent} does not fit this run ({'; '.join(problems)})")
    model = build_network(cfg.model, cfg.spiking, data.num_classes, data.image_size)
    remade = inherit(model, ckpt["state_dict"])
    convs = sorted({n.rsplit(".", 1)[0] for n in remade})
    log(f"inherited {len(model.state_dict()) - len(remade)} tensors from "
        f"{cfg.model.parent}; re-made {', '.join(convs) or 'none'}")
    return model.to(device), (ckpt["norm"]["mean"], ckpt["norm"]["std"])


EpochHook = Callable[[int, dict[str, Any], Callable[[], dict[str, Any]]], None]
StepHook = Callable[[int, int, int, Callable[[], str]], None]


def fit(cfg: RunConfig, out: str, restart: bool = False, *, log: Callable[[str], None] | None = None,
        on_step: StepHook | None = None, on_epoch: EpochHook | None = None) -> dict[str, Any]:
    """Trains per `cfg` into run folder `out`; resumes from its last.pt; returns the summary.
    Silent unless given hooks (the command line passes its progress bar through them):

    `log(msg)` gets what ran and each epoch's figures, one line each.
    `on_step(epoch, step, steps, info)` runs after every training step (0-based); `info()`
    formats the loss and images/s so far, and waits for the device: call it only to show it.
    `on_epoch(epoch, metrics, probe)` runs after each epoch's checkpoint is saved (so it may raise
    to stop the run, e.g. a search's pruner): `metrics` are the epoch's test metrics (with AC/MAC
    and energy after the last epoch) and `probe()` counts AC/MAC/energy on 256 test images.
    One process per run folder: another one training into `out` is refused.
    """
    with folder_lock(out):
        return _fit(cfg, out, restart, log or (lambda m: None), on_step, on_epoch)


def _fit(cfg: RunConfig, out: str, restart: bool, log: Callable[[str], None], on_step: StepHook | None,
         on_epoch: EpochHook | None) -> dict[str, Any]:
    run = RunFolder(out)
    state = run.open(cfg, restart)
    if state == "done":
        log(f"{out} is already complete; showing its summary (--restart to train again)")
        return run.read_summary()
    _seed(cfg.train.seed)
    device = D.resolve_device(cfg.train.device)
    data = load_data(cfg.data.dataset, cfg.data.root, cfg.data.train_subset, cfg.data.test_subset,
                     cfg.train.seed)
    mc = cfg.model
    if state == "resume":
        ckpt = load_checkpoint(run.file("last.pt"))
        mc, _ = configs_of(ckpt)
        model = model_from_checkpoint(ckpt).to(device)
        mean, std = ckpt["norm"]["mean"], ckpt["norm"]["std"]
    elif cfg.model.parent:
        model, (mean, std) = _from_parent(cfg, data, device, log)
    elif cfg.spiking.enabled and cfg.spiking.init:
        mc, model, (mean, std) = _init_from_cnn(cfg, data, device, log)
    else:
        model = build_network(mc, cfg.spiking, data.num_classes, data.image_size).to(device)
        mean, std = data.norm()
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)

    train_loader = DeviceLoader(data.x_train, data.y_train, cfg.train.batch_size, mean, std,
                                device, train=True, augment=cfg.data.augment, seed=cfg.train.seed,
                                channels_last=cfg.train.channels_last)
    test_loader = DeviceLoader(data.x_test, data.y_test, cfg.train.eval_batch_size, mean, std,
                               device)  # NCHW: evaluate() runs the model in NCHW
    if len(train_loader) == 0:
        raise FirecutError(f"{len(data.x_train)} training images is fewer than one batch of "
                           f"{cfg.train.batch_size}; lower --batch-size")
    opt = S.make_optimizer(model, cfg)
    sched = S.make_scheduler(opt, len(train_loader), cfg)
    start, best_acc, best_epoch, train_seconds = 0, -1.0, 0, 0.0
    if state == "resume":
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start, best_acc, best_epoch = ckpt["epoch"], ckpt["best_acc"], ckpt["best_epoch"]
        train_seconds = ckpt.get("train_seconds", 0.0)
        run.truncate_log(start)
        log(f"resuming {out} after epoch {start}/{cfg.train.epochs}")

    energy = make_energy(cfg.energy.preset, cfg.energy.e_ac_pj, cfg.energy.e_mac_pj, cfg.energy.model)
    meta = dict(classes=data.classes, image_size=data.image_size,
                dataset=dataset_name(cfg.data.dataset), mean=mean, std=std)
    mode = cfg.mode()
    T = cfg.spiking.timesteps if cfg.spiking.enabled else 1
    log(f"{mode} {mc.name} on {meta['dataset']}: {len(data.x_train)} train / "
                 f"{len(data.x_test)} test images, {count_params(model):,} params, "
                 f"{'T=' + str(T) + ', ' if cfg.spiking.enabled else ''}{device}")

    shared_mc = dataclasses.replace(mc, parent=portable_path(cfg.model.parent, out))  # no absolute paths
    shared_sc = dataclasses.replace(cfg.spiking, init=portable_path(cfg.spiking.init, out))

    def checkpoint(epoch: int, metrics: dict[str, Any], **resume_state: Any) -> dict[str, Any]:
        return make_checkpoint(model, shared_mc, shared_sc, epoch=epoch, best_acc=best_acc,
                               best_epoch=best_epoch, config=shareable_config(cfg.to_dict(), out),
                               metrics={k: metrics[k] for k in ("acc", "f1", "loss")},
                               train_images=len(data.x_train), **meta, **resume_state)

    teacher = None
    if cfg.train.distill > 0:
        teacher = load_teacher(cfg.spiking.init, data.num_classes, data.image_size, device,
                               cfg.train.channels_last)
        log(f"distilling from {cfg.spiking.init}: weight {cfg.train.distill}, "
            f"temperature {cfg.train.distill_temp}")
    metrics: dict[str, Any] = {}
    step_model = D.compiled(model) if cfg.train.compile else model  # shares the parameters
    for epoch in range(start, cfg.train.epochs):
        train_loader.epoch = epoch
        step_hook = functools.partial(on_step, epoch) if on_step is not None else None
        with D.compile_errors(cfg.train.compile):
            tr = S.train_epoch(step_model, train_loader, opt, sched, cfg, step_hook, teacher)
        train_seconds += tr["seconds"]
        last = epoch == cfg.train.epochs - 1
        metrics = evaluate(model, test_loader, data.num_classes,
                           energy=energy if last else None, amp=cfg.train.amp)
        if not math.isfinite(tr["train_loss"]):
            raise FirecutError(f"training diverged at epoch {epoch + 1} (loss {tr['train_loss']}); "
                               "lower --lr")
        row = {"epoch": epoch + 1, **{k: round(v, 6) for k, v in tr.items()},
               "test_acc": round(metrics["acc"], 6), "test_f1": round(metrics["f1"], 6),
               "test_loss": round(metrics["loss"], 6), "lr": opt.param_groups[0]["lr"]}
        log(f"epoch {epoch + 1}/{cfg.train.epochs}  loss {tr['train_loss']:.3f}  "
                     f"train acc {tr['train_acc']:.3f}  test acc {metrics['acc']:.3f}  "
                     f"f1 {metrics['f1']:.3f}  {tr['img_s']:.0f} img/s  {tr['seconds']:.0f}s")
        improved = metrics["acc"] > best_acc
        if improved:
            best_acc, best_epoch = metrics["acc"], epoch + 1
        ckpt = checkpoint(epoch + 1, metrics, optimizer=opt.state_dict(),
                          scheduler=sched.state_dict(), train_seconds=train_seconds)
        if improved:
            save_checkpoint({k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler")},
                            run.file("best.pt"))
        save_checkpoint(ckpt, run.file("last.pt"))
        run.log_epoch(row)
        if on_epoch is not None:
            on_epoch(epoch + 1, metrics, lambda: evaluate(model, test_loader.head(256), data.num_classes,
                                                          energy=energy, amp=cfg.train.amp))

    if "ac" not in metrics:  # --epochs 0, or resumed after the last checkpoint: count now
        metrics = evaluate(model, test_loader, data.num_classes, energy=energy, amp=cfg.train.amp)
        if cfg.train.epochs == 0:  # the converted net, as it is
            best_acc = metrics["acc"]
            save_checkpoint(checkpoint(0, metrics), run.file("best.pt"))
    summary = summarise(model, metrics, mc=mc, cfg_spiking=cfg.spiking, dataset=meta["dataset"],
                        train_images=len(data.x_train), epochs=cfg.train.epochs)
    summary.update({"mode": mode, "init": cfg.spiking.init, "best_acc": best_acc,
                    "best_epoch": best_epoch, "train_seconds": round(train_seconds, 1),
                    "seed": cfg.train.seed, "device": str(device)})
    if cfg.train.distill > 0:  # a distilled SNN is told apart from a plain one
        summary["distill"] = {"weight": cfg.train.distill, "temp": cfg.train.distill_temp}
    run.write_summary(summary)
    return summary


def summarise(model: nn.Module, metrics: dict[str, Any], *, mc, cfg_spiking, dataset: str,
              train_images: int | None, epochs: int | None) -> dict[str, Any]:
    """The summary.json layout shared by `train` and `evaluate` (acc/f1 in 0..1, per image)."""
    spiking = isinstance(model, SpikingNet)
    return {
        "model": mc.name,
        "dataset": dataset,
        "spiking": spiking,
        "timesteps": model.timesteps if spiking else 1,
        "epochs": epochs,
        "train_images": train_images,
        "test_images": metrics["test_images"],
        "acc": metrics["acc"],
        "f1": metrics["f1"],
        "ac": metrics["ac"],
        "mac": metrics["mac"],
        "params": count_params(model),
        "energy_mj": metrics["energy_mj"],
        "firing_rate": metrics["firing_rate"],
        "neuron_updates": metrics["neuron_updates"],
        "energy_preset": metrics["energy_preset"],
        "e_ac_pj": metrics["e_ac_pj"],
        "e_mac_pj": metrics["e_mac_pj"],
        # the hardware-aware model (energy.hardware) adds its terms and the paper's figure
        **{k: metrics[k] for k in ("paper_energy_mj", "energy_terms_mj", "energy_model") if k in metrics},
        "test_loss": metrics["loss"],
        "act": mc.act,
        "pool": mc.pool,
        "keep": list(model_keep(model)),
        "neuron": {"beta": float(model.neurons()[0].beta), "surrogate": cfg_spiking.surrogate,
                   "reset": cfg_spiking.reset, "v_init": cfg_spiking.v_init,
                   "learn_threshold": cfg_spiking.learn_threshold} if spiking else None,
        "firecut_version": firecut.__version__,
        "layers": metrics["layers"],
    }


def model_keep(model: nn.Module) -> tuple[str, ...]:
    net = model.net if isinstance(model, SpikingNet) else model
    return tuple(getattr(net, "keep", ()))


def open_checkpoint(path: str, dataset: str, root: str, device: str = "auto", *,
                    train_subset: int | None = None, test_subset: int | None = None):
    """A checkpoint, a dataset it fits, and its model on the device: (ckpt, data, model, dev)."""
    ckpt = load_checkpoint(path)
    dev = D.resolve_device(device)
    data = load_data(dataset, root, train_subset=train_subset, test_subset=test_subset)
    require_fits(ckpt, data.num_classes, data.image_size, str(path))
    return ckpt, data, model_from_checkpoint(ckpt).to(dev), dev


def evaluate_checkpoint(path: str, dataset: str, root: str, *, timesteps: int | None = None,
                        test_subset: int | None = None, batch_size: int = 256,
                        device: str = "auto", energy: EnergyModel | None = None) -> dict[str, Any]:
    """`firecut evaluate`: the summary.json layout for a checkpoint on `dataset`'s test split."""
    ckpt, data, model, dev = open_checkpoint(path, dataset, root, device, train_subset=1,
                                             test_subset=test_subset)
    if timesteps is not None:
        if not isinstance(model, SpikingNet):
            raise FirecutError(f"--timesteps applies to spiking nets; {path} is a CNN")
        model.set_timesteps(timesteps)
    loader = DeviceLoader(data.x_test, data.y_test, batch_size, ckpt["norm"]["mean"],
                          ckpt["norm"]["std"], dev)
    metrics = evaluate(model, loader, data.num_classes, energy=energy or EnergyModel())
    mc, sc = configs_of(ckpt)
    return summarise(model, metrics, mc=mc, cfg_spiking=sc, dataset=dataset_name(dataset),
                     train_images=ckpt.get("train_images"), epochs=ckpt.get("epoch"))
