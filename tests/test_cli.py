"""The command line as a user meets it: help, one-line errors, and end-to-end runs on real data."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import assert_user_error, run_cli, run_cli_many, shared_file

COMMANDS = ["train", "evaluate", "models", "ablate", "search", "benchmark", "report", "saliency", "export",
            "predict",
            "schedules list", "schedules show", "schedules validate", "schedules generate"]


def test_the_command_list_covers_the_app():
    from firecut.cli import app, schedules_app

    top = {c.name or c.callback.__name__ for c in app.registered_commands}
    sub = {"schedules " + (c.name or c.callback.__name__) for c in schedules_app.registered_commands}
    assert top | sub == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_ending_with_an_example(command):
    proc = run_cli(*command.split(), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Example: firecut " + command in " ".join(proc.stdout.split())



@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_shows_its_default(command):
    """Rich reads '[default: ...]' inside a help text as markup and drops it; every visible option's
    row must still end with its default (Typer's own, or one the help text spells out)."""
    import re

    import typer
    from typer.testing import CliRunner

    from firecut.cli import app

    cmd = typer.main.get_command(app)
    for part in command.split():
        cmd = cmd.commands[part]
    out = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "400"}).output
    rows = [line for line in out.splitlines() if re.match(r"│\s+(\*\s+)?-", line)]
    options = [p for p in cmd.params if p.param_type_name == "option" and p.name != "help" and not p.hidden]
    for p in options:
        names = "|".join(re.escape(o) for o in p.opts + p.secondary_opts)
        row = [r for r in rows if re.match(rf"│\s+(\*\s+)?(\S+\s+)*?({names})[\s,]", r)]
        assert row, f"{command}: no help row for {p.opts}"
        assert "[default: " in row[0] or "[required]" in row[0], f"{command} {p.opts[0]}: {row[0].strip()}"
        assert not re.search(r"\s\.\s*│?$", row[0]), f"{command} {p.opts[0]} lost text: {row[0].strip()}"



def test_a_flag_means_one_thing_in_every_command():
    """--out is a folder, -o a file, -f a --file, --keep a module list, wherever they appear; the
    energy model can be set wherever energy is reported."""
    import typer

    from firecut.cli import app

    def commands(cmd, path=()):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from commands(sub, (*path, name))
        else:
            yield " ".join(path), cmd

    meaning: dict[str, set[str]] = {}
    table = dict(commands(typer.main.get_command(app)))
    for cmd in table.values():
        for p in cmd.params:
            if p.param_type_name == "option" and not p.hidden:
                for opt in p.opts + p.secondary_opts:
                    meaning.setdefault(opt, set()).add(p.name)
    assert {k: v for k, v in meaning.items() if len(v) > 1} == {}
    assert meaning["-o"] == {"output"} and meaning["-f"] == {"file"} and meaning["--out"] == {"out"}
    for name in ("train", "evaluate", "ablate", "search", "benchmark", "report"):
        opts = {o for p in table[name].params for o in p.opts}
        assert {"--energy-preset", "--e-ac-pj", "--e-mac-pj"} <= opts, name
    for name in ("train", "ablate", "search", "benchmark"):  # one default recipe everywhere
        preset = next(p for p in table[name].params if p.name == "preset")
        assert preset.default == "quick" or "default: quick" in preset.help, name


@pytest.mark.parametrize("command, config, shared", [
    ("search", "firecut.search.run:SearchConfig", {"trials", "seed", "saliency_masks"}),
    ("ablate", "firecut.ablate:AblateConfig", {"seeds", "schedules", "retrain"}),
    ("benchmark", "firecut.benchmark:BenchmarkConfig", {"seeds"}),
])
def test_options_default_to_the_library_config(command, config, shared):
    """The CLI repeats each config's defaults (it must not import the library for --help): they agree."""
    import dataclasses
    import importlib
    import inspect

    from firecut.cli.app import COMMANDS

    module, name = config.split(":")
    lib = {f.name: f.default for f in dataclasses.fields(getattr(importlib.import_module(module), name))
           if f.default is not dataclasses.MISSING}
    params = inspect.signature(next(fn for fn in COMMANDS if fn.__name__ == command)).parameters
    cli = {n: p.default.default for n, p in params.items() if n in lib and hasattr(p.default, "default")}
    assert shared <= set(cli)
    assert cli == {n: lib[n] for n in cli}


def test_help_does_not_import_torch():
    code = ("import sys; from typer.testing import CliRunner; from firecut.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); "
            "assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'torchvision', 'optuna', 'snntorch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


BAD_INPUT = [
    (["train", "--model", "resnet50", "--dataset", "synthetic"], ["unknown model 'resnet50'", "squeezenet"]),
    (["train", "--epochs", "abc"], ["invalid value for '--epochs'", "firecut train --help"]),
    (["models", "--bogus"], ["no such option: --bogus", "firecut models --help"]),
    (["search", "--dataset", "synthetic", "--trials", "0"], ["--trials must be >= 1"]),
    (["benchmark", "--dataset", "synthetic", "--models", "vgg16"], ["unknown model(s) vgg16"]),
    (["report", "nowhere"], ["nowhere: no such folder"]),
    (["saliency", "nothing.pt", "--dataset", "synthetic"], ["nothing.pt", "does not exist"]),
    (["export", "nothing.pt"], ["nothing.pt", "does not exist"]),
    (["predict", "nothing.onnx", "x.png"], ["x.png", "does not exist"]),
    (["schedules", "list", "--file", "missing.yaml"], ["missing.yaml", "does not exist"]),
    (["schedules", "show", "Nope-9"], ["Nope-9"]),
    (["schedules", "validate", "missing.yaml"], ["missing.yaml", "does not exist"]),
    (["schedules", "generate", "--family", "ref"], ["--family ref needs --from"]),
    (["train", "--dataset", "imagenet"], ["unknown dataset 'imagenet'", ".npz"]),
    (["train", "--dataset", "synthetic", "--preset", "fast"], ["unknown preset 'fast'", "quick"]),
    (["train", "--dataset", "synthetic", "--snn", "--timesteps", "0"], ["--timesteps must be >= 1"]),
    (["train", "--dataset", "synthetic", "--keep", "fire2,fire12"], ["fire12"]),
    (["train", "--dataset", "synthetic", "--act", "gelu"], ["unknown activation 'gelu'"]),
    (["train", "--dataset", "synthetic", "--pool", "min"], ["unknown pool 'min'", "avg"]),
    (["train", "--dataset", "synthetic", "--model", "mnasnet", "--pool", "avg"], ["has no pool option"]),
    (["ablate", "--dataset", "synthetic", "--retrain", "prune"], ["unknown --retrain 'prune'", "recipe"]),
    (["train", "--dataset", "synthetic", "--snn", "--reset", "hard"], ["unknown reset 'hard'"]),
    (["train", "--dataset", "synthetic", "--snn", "--surrogate", "relu"], ["unknown surrogate 'relu'"]),
    (["train", "--dataset", "synthetic", "--snn", "--beta", "1.5"], ["--beta must be in [0, 1]"]),
    (["train", "--dataset", "synthetic", "--e-mac-pj", "-1"], ["--e-mac-pj must be >= 0"]),
    (["train", "--dataset", "synthetic", "--energy-preset", "7nm"], ["unknown energy preset '7nm'"]),
    (["train", "--dataset", "missing/file.npz"], ["does not exist"]),
    (["train", "--dataset", "synthetic", "--cnn", "--init", "x.pt"], ["drop --cnn"]),
    (["evaluate", "nothing.pt", "--dataset", "synthetic"], ["nothing.pt", "does not exist"]),
    (["train", "--dataset", "synthetic", "--target", "loihi"], ["unknown --target 'loihi'", "nir"]),
    (["search", "--dataset", "synthetic", "--base", "x.pt"],
     ["--base is where --retrain finetune prunes from"]),
    (["search", "--dataset", "missing/file.npz"], ["does not exist"]),
    (["ablate", "--dataset", "missing/file.npz"], ["does not exist"]),
    (["benchmark", "--dataset", "missing/file.npz"], ["does not exist"]),
]


def test_every_command_has_a_bad_input_case():
    named = {" ".join(args[:2]) if args[0] == "schedules" else args[0] for args, _ in BAD_INPUT}
    assert named == set(COMMANDS)


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory):
    """Every BAD_INPUT case through firecut's real entry point, in one subprocess; `train` and
    `ablate` each with an --out of their own."""
    root = tmp_path_factory.mktemp("bad-input")
    argvs = [[*args, "--out", root / str(i)] if args[0] in ("train", "ablate") else args
             for i, (args, _) in enumerate(BAD_INPUT)]
    return root, run_cli_many(*argvs)


@pytest.mark.parametrize("case", range(len(BAD_INPUT)), ids=[" ".join(a[:3]) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(case, bad_input_results):
    root, results = bad_input_results
    assert_user_error(results[case], *BAD_INPUT[case][1])
    assert not (root / str(case) / "summary.json").exists()


def test_missing_data_is_found_before_any_work_is_announced(bad_input_results):
    """An experiment checks that its data loads before it says what it will train: the one error
    line is all the user reads."""
    root, results = bad_input_results
    cases = [i for i, (args, _) in enumerate(BAD_INPUT) if args[1:] == ["--dataset", "missing/file.npz"]]
    assert {BAD_INPUT[i][0][0] for i in cases} == {"train", "search", "ablate", "benchmark"}
    for i in cases:
        assert results[i].stderr.strip().splitlines() == [
            l for l in results[i].stderr.splitlines() if l.startswith("firecut: error:")]


def test_run_cli_many_shows_what_separate_runs_show():
    """The batch runner above is only a cheaper run_cli: same code, output and stderr."""
    argv = ["train", "--dataset", "synthetic", "--act", "gelu"]
    (batched,) = run_cli_many(argv)
    alone = run_cli(*argv)
    assert (batched.returncode, batched.stdout, batched.stderr) == (alone.returncode, alone.stdout,
                                                                    alone.stderr)


def test_cpu_preset_end_to_end_on_real_cifar10(tmp_path):
    # --preset cpu on a few hundred real images: the clip-quant CNN at batch 128 (here with
    # --pool avg, which the converted net keeps), converted to T=4 and fine-tuned at batch 64,
    # trained channels_last (bf16 where the CPU has it); its figures are what `firecut evaluate`
    # gives for the checkpoint (NCHW, fp32)
    import yaml

    data = shared_file("cifar10-sub.npz")
    common = ["--dataset", data, "--train-subset", 300, "--test-subset", 200, "--epochs", 1, "--quiet"]
    cnn = run_cli("train", "--preset", "cpu", "--cnn", "--pool", "avg", *common, "--out", tmp_path / "cnn")
    assert cnn.returncode == 0, cnn.stderr
    c = json.loads(cnn.stdout)
    assert (c["act"], c["pool"], c["spiking"], c["mac"]) == ("clipq", "avg", False, 23_511_040)
    cfg = yaml.safe_load((tmp_path / "cnn" / "config.yaml").read_text())
    assert (cfg["train"]["batch_size"], cfg["train"]["lr"], cfg["model"]["levels"]) == (128, 0.1, 4)
    assert cfg["train"]["channels_last"] and cfg["train"]["amp"]

    snn = run_cli("train", "--preset", "cpu", "--init", tmp_path / "cnn" / "best.pt", *common,
                  "--out", tmp_path / "snn")
    assert snn.returncode == 0, snn.stderr
    s = json.loads(snn.stdout)
    assert (s["spiking"], s["timesteps"], s["pool"], s["params"]) == (True, 4, "avg", 736_458)
    assert s["ac"] > 0 and s["mac"] == STEM_MACS_32  # only the encoding layer multiplies
    assert sum(l.get("input") == "spike" for l in s["layers"]) == 3 * 8 + 1
    cfg = yaml.safe_load((tmp_path / "snn" / "config.yaml").read_text())
    assert (cfg["train"]["batch_size"], cfg["train"]["lr"]) == (64, 0.005)
    again = run_cli("evaluate", tmp_path / "snn" / "last.pt", "--dataset", data, "--test-subset", 200)
    assert again.returncode == 0, again.stderr
    e = json.loads(again.stdout)
    assert (e["acc"], e["ac"], e["pool"]) == (s["acc"], s["ac"], "avg")


def test_bad_files_are_refused(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"junk")
    import numpy as np

    np.savez(tmp_path / "nokeys.npz", x_train=np.zeros((2, 8, 8, 3), np.uint8))
    (tmp_path / "corrupt.pt").write_bytes(b"\x00\x01 not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    (tmp_path / "afile").write_text("")
    cases = [
        (["train", "--dataset", tmp_path / "bad.npz", "--out", tmp_path / "o"], ["not a readable .npz"]),
        (["train", "--dataset", tmp_path / "nokeys.npz", "--out", tmp_path / "o"],
         ["missing key(s)", "y_train"]),
        (["evaluate", tmp_path / "corrupt.pt", "--dataset", "synthetic"], ["corrupt"]),
        (["evaluate", tmp_path / "foreign.pt", "--dataset", "synthetic"], ["not a firecut checkpoint"]),
        (["train", "--dataset", "synthetic", "--snn", "--init", tmp_path / "foreign.pt", "--out",
          tmp_path / "o"], ["not a firecut checkpoint"]),
        (["train", "--dataset", "synthetic", "--out", tmp_path / "afile" / "run"], ["cannot write to --out"]),
    ]
    for proc, (_, needles) in zip(run_cli_many(*(argv for argv, _ in cases)), cases, strict=True):
        assert_user_error(proc, *needles)
    assert not list(tmp_path.rglob("summary.json"))


def test_models_lists_the_registry_with_counts():
    proc = run_cli("models", "--dataset", "cifar100")
    assert proc.returncode == 0, proc.stderr
    row = next(l for l in proc.stdout.splitlines() if l.startswith("squeezenet"))
    assert "779,684" in row and "782,628" in row  # CNN and SNN parameters for 100 classes


SUMMARY_KEYS = {"model", "dataset", "spiking", "timesteps", "epochs", "train_images", "test_images",
                "acc", "f1", "ac", "mac", "params", "energy_mj", "firing_rate", "layers"}
STEM_MACS_32 = 32 * 32 * 64 * 27  # the encoding layer: 3x3x3 fan-in, 64 channels, 32x32 outputs


def test_cnn_then_snn_end_to_end_on_real_cifar10(tmp_path):
    data = shared_file("cifar10-sub.npz")
    common = ["--dataset", data, "--train-subset", 400, "--test-subset", 200, "--epochs", 1,
              "--batch-size", 50, "--quiet"]
    cnn = run_cli("train", "--preset", "quick", "--cnn", *common, "--out", tmp_path / "cnn")
    assert cnn.returncode == 0, cnn.stderr
    c = json.loads(cnn.stdout)
    assert SUMMARY_KEYS <= set(c)
    assert (c["spiking"], c["train_images"], c["test_images"], c["ac"]) == (False, 400, 200, 0)
    assert c["mac"] == 23_511_040  # every conv, dense, at 32x32
    assert c["energy_mj"] == pytest.approx(c["mac"] * 4.6e-9)

    snn = run_cli("train", "--preset", "quick", "--init", tmp_path / "cnn" / "best.pt", *common,
                  "--out", tmp_path / "snn")
    assert snn.returncode == 0, snn.stderr
    s = json.loads(snn.stdout)
    assert SUMMARY_KEYS <= set(s)
    assert s["spiking"] and s["timesteps"] == 4 and s["params"] == 736_458
    assert 0 <= s["acc"] <= 1 and 0 <= s["f1"] <= 1
    assert s["ac"] > 0 and s["mac"] == STEM_MACS_32  # only the encoding layer multiplies
    assert 0 < s["firing_rate"] < 1
    assert s["energy_mj"] == pytest.approx((s["ac"] * 0.9 + s["mac"] * 4.6) * 1e-9)
    assert s["energy_mj"] < c["energy_mj"]
    spike_layers = [l for l in s["layers"] if l.get("input") == "spike"]
    assert len(spike_layers) == 3 * 8 + 1  # every Fire conv and the classifier take spikes
    assert (tmp_path / "snn" / "summary.json").is_file()

    again = run_cli("evaluate", tmp_path / "snn" / "last.pt", "--dataset", data, "--test-subset", 200,
                    "--e-ac-pj", 0.03, "--e-mac-pj", 0.23)
    assert again.returncode == 0, again.stderr
    e = json.loads(again.stdout)
    assert SUMMARY_KEYS <= set(e)
    assert e["acc"] == pytest.approx(s["acc"]) and e["ac"] == pytest.approx(s["ac"], rel=1e-6)
    assert e["energy_mj"] == pytest.approx((e["ac"] * 0.03 + e["mac"] * 0.23) * 1e-9)  # user's pJ

    rerun = run_cli("train", "--preset", "quick", "--init", tmp_path / "cnn" / "best.pt", *common,
                    "--out", tmp_path / "snn")
    assert rerun.returncode == 0 and "already complete" in rerun.stderr
    assert json.loads(rerun.stdout)["acc"] == s["acc"]

    sal = run_cli("saliency", tmp_path / "snn" / "best.pt", "--dataset", data, "--batches", 2,
                  "--batch-size", 32)
    assert sal.returncode == 0, sal.stderr
    assert sal.stdout.splitlines()[0].split()[:3] == ["module", "saliency", "share"]
    ranking = json.loads((tmp_path / "snn" / "saliency.json").read_text())
    assert ranking["spiking"] and ranking["images"] == 64
    assert sorted(ranking["scores"]) == [f"fire{i}" for i in range(2, 10)]
    assert sum(r["share"] for r in ranking["modules"]) == pytest.approx(1.0)
    assert all(0 <= r["ac_share"] <= 1 for r in ranking["modules"])
    assert sum(r["ac_share"] for r in ranking["modules"]) <= 1 + 1e-9
    assert all(r["mac_share"] == 0 for r in ranking["modules"])  # only the encoding layer multiplies
    assert -1.0 <= ranking["spearman"] <= 1.0
    gen = run_cli("schedules", "generate", "--family", "ref", "--from", tmp_path / "snn" / "saliency.json",
                  "--keep-top", 4)
    top4 = sorted(ranking["scores"], key=lambda m: -ranking["scores"][m])[:4]
    assert gen.returncode == 0 and all(m in gen.stdout for m in top4)


def test_tiny_imagenet_runs_at_64px_with_four_times_the_encoding_macs(tmp_path):
    data = shared_file("tinyimagenet-sub.npz")
    proc = run_cli("train", "--dataset", data, "--snn", "--train-subset", 200, "--test-subset", 100,
                   "--epochs", 1, "--batch-size", 50, "--timesteps", 2, "--quiet", "--out", tmp_path / "t")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["mac"] == 4 * STEM_MACS_32 and s["ac"] > 0
    assert s["params"] == 833_928 and s["test_images"] == 100


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])  # Ctrl-C, and a scheduler's preemption
def test_ctrl_c_says_how_to_resume_and_the_rerun_resumes(tmp_path, signame):
    import os
    import signal
    import time

    out = tmp_path / "run"
    args = ["train", "--dataset", "synthetic", "--train-subset", "128", "--test-subset", "64",
            "--epochs", "8", "--quiet", "--out", str(out)]  # epochs of ~0.5 s: the kill lands mid-run
    cmd = [sys.executable, "-m", "firecut", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out / "metrics.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; finished work is saved in" in err and "Traceback" not in err
    assert not (out / "summary.json").exists()
    done = len((out / "metrics.csv").read_text().splitlines()) - 1
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert 1 <= done < 8 and f"resuming {out} after epoch {done}/8" in again.stderr
    assert json.loads(again.stdout)["epochs"] == 8
