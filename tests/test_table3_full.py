"""benchmarks/table3_full.py: Table 3 assembled from ablation and benchmark folders."""

import json
import subprocess
import sys
from pathlib import Path

from firecut.pruning.schedules import FIRE_NAMES

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "table3_full.py"
REF1 = ["fire4", "fire6", "fire8", "fire9"]


def run_row(acc, mj, seed, keep, **kw):
    return {"acc": acc, "f1": acc, "ac": 1.0, "mac": 1.0, "energy_mj": mj, "firing_rate": 0.1,
            "train_seconds": 1.0, "params": 10, "epochs": 8, "timesteps": 4, "seed": seed,
            "keep": keep, **kw}


def test_runs_from_a_benchmark_and_an_ablation_merge_by_mask_and_seed(tmp_path):
    bench, abl = tmp_path / "bench", tmp_path / "abl"
    bench.mkdir(), abl.mkdir()
    (bench / "benchmark.json").write_text(json.dumps({"runs": [
        run_row(0.86, 0.108, 0, FIRE_NAMES, model="squeezenet", mode="cnn"),
        run_row(0.80, 0.020, 0, FIRE_NAMES, model="squeezenet", mode="snn"),
        run_row(0.83, 0.057, 0, REF1, model="squeezenet_p", mode="cnn"),
        run_row(0.81, 0.014, 0, REF1, model="squeezenet_p", mode="snn")]}))
    (abl / "table.json").write_text(json.dumps({"runs": [
        run_row(0.70, 0.020, 0, FIRE_NAMES, schedule="Baseline"),  # seed 0 again: the benchmark's wins
        run_row(0.78, 0.021, 1, FIRE_NAMES, schedule="Baseline", cnn_acc=0.85),
        run_row(0.75, 0.016, 0, ["fire3", "fire5", "fire7", "fire9"], schedule="Alt-2"),
        run_row(0.74, 0.017, 0, ["fire2", "fire4", "fire6", "fire8"], schedule="Alt-1", twin_of="Alt-2")]}))
    out = subprocess.run([sys.executable, str(SCRIPT), f"recipe={bench},{abl}"], capture_output=True,
                         text=True, check=True).stdout
    rows = {line.split(" | ")[0][2:]: line.rstrip(" |").split(" | ") for line in out.splitlines()[2:]}
    assert rows["Baseline"][9] == "0.7900 ± 0.0141 (2)"  # seeds 0 (benchmark) and 1 (ablation)
    assert rows["Baseline"][10] == "0.8550"  # the benchmark's CNN for seed 0, the ablation's for 1
    assert rows["Ref-1"][9] == "0.8100 (1) ★" and rows["Ref-1"][12:14] == ["0.81", "0.0295"]
    assert rows["Alt-2"][9] == "0.7500 (1)"  # dominated by Ref-1: cheaper and more accurate
    assert rows["Alt-1"][9] == "0.7400 (1) (= Alt-2)"  # a twin's row says whose run it is
    assert rows["Head-1"][9:12] == ["–", "–", "–"]  # not run yet


def test_an_ablation_still_running_gives_its_finished_schedules(tmp_path):
    abl = tmp_path / "abl" / "schedules"
    head1 = ["fire2", "fire3", "fire4", "fire5", "fire9"]
    for name, row in (("Head-1-s0-cnn", run_row(0.86, 0.1, 0, head1, spiking=False)),
                      ("Head-1-s0", run_row(0.83, 0.0207, 0, head1, spiking=True)),
                      ("Head-2-s0-cnn", run_row(0.85, 0.1, 0, ["fire2"], spiking=False))):
        (abl / name).mkdir(parents=True)
        (abl / name / "summary.json").write_text(json.dumps(row))
    (abl / "Head-2-s0").mkdir()  # its SNN is training: no summary yet
    proc = subprocess.run([sys.executable, str(SCRIPT), f"recipe={abl.parent}"], capture_output=True,
                          text=True, check=True)
    rows = {line.split(" | ")[0][2:]: line.rstrip(" |").split(" | ") for line in proc.stdout.splitlines()[2:]}
    assert rows["Head-1"][9:12] == ["0.8300 (1) ★", "0.8600", "0.0207"]
    assert rows["Head-2"][9] == "–" and rows["Baseline"][9] == "–"
    assert "no table.json yet; 1 finished SNN run" in proc.stderr


def test_a_single_train_run_adds_one_seed_of_its_schedule(tmp_path):
    head1 = ["fire2", "fire3", "fire4", "fire5", "fire9"]
    (tmp_path / "cnn").mkdir()
    (tmp_path / "cnn" / "summary.json").write_text(json.dumps(run_row(0.87, 0.1, 1, head1, spiking=False)))
    (tmp_path / "snn").mkdir()
    (tmp_path / "snn" / "summary.json").write_text(json.dumps(
        run_row(0.84, 0.02, 1, head1, spiking=True, init=str(tmp_path / "cnn" / "best.pt"))))
    out = subprocess.run([sys.executable, str(SCRIPT), f"recipe={tmp_path / 'snn'}"],
                         capture_output=True, text=True, check=True).stdout
    rows = {line.split(" | ")[0][2:]: line.rstrip(" |").split(" | ") for line in out.splitlines()[2:]}
    assert rows["Head-1"][9:12] == ["0.8400 (1) ★", "0.8700", "0.0200"]
    bad = subprocess.run([sys.executable, str(SCRIPT), f"recipe={tmp_path / 'cnn'}"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "not an SNN converted from a CNN" in bad.stderr
