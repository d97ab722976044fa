"""NIR consumers firecut does not control, running a graph firecut wrote: each gives the scores
(N, K) of images (N, 3, H, W) as `to_nir.runner` does (T steps, the output averaged over them),
so a file can be checked in a toolchain other than firecut's own.

    snntorch   snntorch.import_nir.import_from_nir (tested with snntorch 1.0.0). It assumes a
               step of 1e-4 s (to_nir.DT), takes one threshold per layer, and rescales the
               threshold by r dt / tau (printing a warning per layer, silenced here). It maps
               nir.IF to a leaky neuron (beta 0.9, subtract reset): firecut writes LIF nodes.
               Its neurons keep their membrane inside the module: reset before each batch
    norse      norse.torch.from_nir(graph, dt) (tested with norse 1.1.0), dt from the graph's
               metadata. It ignores a LIF node's r (firecut writes r = 1), has no AvgPool2d
               (firecut writes pools as Conv2d nodes), and executes a graph with fan-in (two
               edges into one node) wrongly: firecut's graphs are chains

`pip install -e '.[nir]'` installs both.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any, Callable

import numpy as np
import torch

from firecut.errors import FirecutError


def _steps(module: torch.nn.Module, timesteps: int, stateful: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Scores of `module` run `timesteps` times on the same input: its output averaged."""
    def run(x: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        state, total = None, 0.0
        with torch.no_grad():
            for _ in range(timesteps):
                out = module(xt, state) if stateful else module(xt)
                out, state = out if isinstance(out, tuple) else (out, None)
                total = total + out
        return (total / timesteps).reshape(len(x), -1).numpy()

    return run


def snntorch_runner(graph, timesteps: int) -> Callable[[np.ndarray], np.ndarray]:
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):  # one "[warning] scaling weights" per layer
        module = import_from_nir(graph).eval()
    step = _steps(module, timesteps, stateful=False)

    def run(x: np.ndarray) -> np.ndarray:
        snntorch.utils.reset(module)  # membranes live in the Leaky modules (init_hidden)
        return step(x)

    return run


def norse_runner(graph, timesteps: int) -> Callable[[np.ndarray], np.ndarray]:
    import norse.torch

    from firecut.export.to_nir import graph_dt

    logging.getLogger().disabled, was = True, logging.getLogger().disabled  # "r is expected to be 1"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nirtorch.load's deprecation
            module = norse.torch.from_nir(graph, dt=graph_dt(graph)).eval()
    finally:
        logging.getLogger().disabled = was
    return _steps(module, timesteps, stateful=True)


CONSUMERS: dict[str, tuple[str, Callable[[Any, int], Callable[[np.ndarray], np.ndarray]]]] = {
    "snntorch": ("snntorch", snntorch_runner),
    "norse": ("norse", norse_runner),
}


def installed() -> list[str]:
    """The consumers whose package imports here."""
    import importlib.util

    return [name for name, (package, _) in CONSUMERS.items() if importlib.util.find_spec(package)]


def consumer_runner(name: str, graph, timesteps: int) -> Callable[[np.ndarray], np.ndarray]:
    """Scores (N, K) of `graph` run by consumer `name` (CONSUMERS)."""
    if name not in CONSUMERS:
        raise FirecutError(f"unknown NIR consumer '{name}'; choose one of: {', '.join(CONSUMERS)}")
    package, make = CONSUMERS[name]
    if name not in installed():
        raise FirecutError(f"the NIR consumer {name} is not installed: pip install -e '.[nir]' "
                           f"(or pip install {package})")
    return make(graph, timesteps)


def check_consumers(graph, timesteps: int, x: torch.Tensor, source: torch.Tensor,
                    labels: torch.Tensor | None, batch: int = 100) -> list[dict[str, Any]]:
    """Each installed consumer run on images `x` (N, 3, H, W) against the source's scores (N, K):
    agreement (same predicted class), max |Δ| of the scores and, with labels, accuracy. A consumer
    that cannot run the graph gets its error instead (a --pool avg net has nodes neither maps)."""
    from importlib.metadata import version

    rows = []
    for name in installed():
        row: dict[str, Any] = {"consumer": name, "version": version(CONSUMERS[name][0])}
        try:
            run = consumer_runner(name, graph, timesteps)
            out = np.concatenate([run(x[i:i + batch].numpy()) for i in range(0, len(x), batch)])
        except Exception as e:  # a third party's failure, reported, not raised: the file is still valid NIR
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            rows.append(row)
            continue
        src = source.numpy()
        row["agreement"] = float((out.argmax(1) == src.argmax(1)).mean())
        row["max_abs_diff"] = float(np.abs(out - src).max())
        if labels is not None:
            row["acc"] = float((out.argmax(1) == labels.numpy()).mean())
        rows.append(row)
    return rows


def format_consumer(row: dict[str, Any]) -> str:
    head = f"consumer  {row['consumer']} {row['version']}: "
    if "error" in row:
        return head + f"cannot run this graph ({row['error']}); train with --pool avg2 for one it can"
    acc = f", accuracy {row['acc']:.1%}" if "acc" in row else ""
    return head + f"agree {row['agreement']:.1%}, max |Δ| {row['max_abs_diff']:.3g}{acc}"
