"""`qute sweep`: a grid of runs as Ray tasks on a local Ray (issue 11)."""

from __future__ import annotations

import json
import textwrap

import pytest

pytest.importorskip("ray")

from qute.cli import main  # noqa: E402
from qute.errors import QuteError  # noqa: E402
from qute.run import load_run  # noqa: E402
from qute.sweep import load_sweep  # noqa: E402

TINY = """
[sweep]
out = "out"
[train]
dataset = "digits"
method = ["base", "qute"]
seed = [0, 1]
epochs = 2
[eval]
corruptions = "gaussian_noise"
"""


def _sweep(tmp_path, capsys, text=TINY, *extra):
    f = tmp_path / "sweep.toml"
    f.write_text(textwrap.dedent(text))
    try:
        code = main(["sweep", str(f), "--cpus", "2", *extra])
    except SystemExit as e:  # exit 1: a trial failed
        code = e.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_a_tiny_sweep_runs_on_ray_and_gathers_its_table(tmp_path, capsys):
    code, out, err = _sweep(tmp_path, capsys)
    assert code == 0, err
    assert "4 trial(s) sent to Ray (2 CPUs)" in err
    rows = [line for line in out.splitlines() if line.startswith("| method=")]
    assert [r.split(" |")[0] for r in rows] == ["| method=base", "| method=qute"]
    for r in rows:
        cells = r.split(" | ")
        # Acc .. AUROC OOD; accuracy-drop AUPRC is n/a when a 2-epoch model's stream has no drop
        assert cells[-1].strip(" |") == "2 of 2" and all("±" in c for c in cells[1:8])
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [t["name"] for t in saved["trials"]] == ["method-base_seed-0", "method-base_seed-1",
                                                     "method-qute_seed-0", "method-qute_seed-1"]
    for t in saved["trials"]:
        assert t["failed"] is None and t["record"]["summary"]["f1"] > 0
        run = load_run(tmp_path / "out" / "runs" / t["name"])  # an ordinary run directory
        assert run.train.method == t["train"]["method"] and run.train.seed == t["train"]["seed"]
        metrics = json.loads((run.path / "metrics.json").read_text())
        assert metrics["summary"] == t["record"]["summary"]
    # means over the two seeds, as the table prints them
    base = [t["record"]["summary"]["f1"] for t in saved["trials"] if t["train"]["method"] == "base"]
    assert f"{sum(base) / 2:.3f} ±" in rows[0]
    table = (tmp_path / "out" / "results.md").read_text()

    # again: every trial is finished, nothing runs, the same table
    code, out, err = _sweep(tmp_path, capsys)
    assert code == 0 and "4 of 4 trials already finished: kept" in err and "sent to Ray" not in err
    assert (tmp_path / "out" / "results.md").read_text() == table


def test_int8_results_are_added_to_finished_trials_without_training_again(tmp_path, capsys):
    text = TINY.replace('method = ["base", "qute"]', 'method = "qute"')
    code, out, err = _sweep(tmp_path, capsys, text)
    assert code == 0 and "ΔNLL" not in out
    runs = tmp_path / "out" / "runs"
    trained = {p: p.stat().st_mtime_ns for p in runs.glob("*/model.keras")}
    assert len(trained) == 2
    code, out, err = _sweep(tmp_path, capsys, text.replace('out = "out"', 'out = "out"\nint8 = true'))
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/model.keras")} == trained  # not retrained
    header = next(line for line in out.splitlines() if line.startswith("| setting"))
    assert header.split(" | ")[-5:-2] == ["int8 ΔNLL", "int8 ΔECE", "int8 ΔOOD"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    for t in saved["trials"]:
        rec = t["record"]
        assert (runs / t["name"] / "model.int8.tflite").is_file()
        metrics = json.loads((runs / t["name"] / "quantization.json").read_text())
        assert metrics["stages"]["int8_tflm"]["accuracy"] > 0
        assert set(rec["int8"]) == set(rec["summary"]) - {"auprc_drop"} and rec["int8"]["nll"] != rec["summary"]["nll"]
    row = saved["rows"][0]
    deltas = [t["record"]["int8"]["nll"] - t["record"]["summary"]["nll"] for t in saved["trials"]]
    assert row["int8_nll"][0] == pytest.approx(sum(deltas) / 2)
    # a third run has nothing left to do
    code, out, err = _sweep(tmp_path, capsys, text.replace('out = "out"', 'out = "out"\nint8 = true'))
    assert code == 0 and "2 of 2 trials already finished: kept" in err


def test_a_failing_trial_is_retried_then_reported_not_dropped(tmp_path, capsys):
    text = TINY.replace('method = ["base", "qute"]', 'method = "base"')
    blocked = tmp_path / "out" / "runs" / "seed-0"
    blocked.mkdir(parents=True)  # a folder qute did not make: the trial may not replace it
    (blocked / "notes.txt").write_text("the user's")
    code, out, err = _sweep(tmp_path, capsys, text)
    assert code == 1
    assert "seed-0: FAILED twice" in err and "seed-1: F1" in err
    assert "| 1 of 2, 1 failed |" in out and "- seed-0: " in out
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["trials"][0]["failed"] and saved["trials"][1]["record"] is not None
    assert (blocked / "notes.txt").read_text() == "the user's"  # untouched


@pytest.mark.parametrize("text, message", [
    ('[sweep]\nout = "o"\n[train]\nmethod = ["qute", "nope"]\n', "unknown method 'nope'; choose one of"),
    ('[sweep]\nout = "o"\n[train]\nseed = []\n', "[train] seed is an empty list"),
    ('[sweep]\nout = "o"\n[train]\nseed = [1, 1]\n', "lists a value twice"),
    ('[sweep]\nout = "o"\n[train]\nepochs = ["2"]\n', "epochs must be an integer"),
    ('[sweep]\nout = "o"\n[train]\nbatchsize = 3\n', "unknown key 'batchsize' in [train]"),
    ('[sweep]\n[train]\nseed = 1\n', '[sweep] takes out = "FOLDER"'),
    ('[sweep]\nout = "o"\nint8 = "yes"\n', "[sweep] int8 must be true or false"),
    ('[sweeps]\nout = "o"\n', "unknown table [sweeps]"),
    ('[sweep\n', "is not valid TOML"),
    ('[sweep]\nout = "o"\n[train]\ndataset = ["npz:a/b.npz", "npz:a_b.npz"]\n', "two trials would share the folder"),
])
def test_bad_sweep_files_fail_before_any_work(tmp_path, capsys, text, message):
    code, out, err = _sweep(tmp_path, capsys, text)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_the_grid_is_every_combination_in_file_order(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[sweep]\nout = "o"\n[train]\nmethod = ["base", "qute"]\nk = [2, 3]\nseed = [0, 1, 2]\nepochs = 1\n'
                 '[eval]\nwindow = [50, 100]\n')
    sw = load_sweep(f)
    assert sw.varying == ["train.method", "train.k", "train.seed", "eval.window"]
    assert len(sw.trials) == 24 and len({t.name for t in sw.trials}) == 24
    assert sw.trials[0].name == "method-base_k-2_seed-0_window-50"
    assert all(t.eval.seed == t.train.seed for t in sw.trials)  # eval follows the training seed
    assert sw.out == (tmp_path / "o").resolve()


def test_a_list_setting_is_one_value_of_a_sweep_axis(tmp_path):
    # filters is itself a list: a sweep over it lists lists, and each trial's folder names its widths;
    # a plain list of numbers is one value
    f = tmp_path / "s.toml"
    f.write_text('[sweep]\nout = "o"\n[train]\nfilters = [[6, 12, 24], [8, 16, 16]]\n')
    sw = load_sweep(f)
    assert [t.train.filters for t in sw.trials] == [(6, 12, 24), (8, 16, 16)]
    assert [t.name for t in sw.trials] == ["filters-6-12-24", "filters-8-16-16"]
    f.write_text('[sweep]\nout = "o"\n[train]\nfilters = [6, 12, 24]\nseed = [0, 1]\n')  # one value, not an axis
    sw = load_sweep(f)
    assert [t.train.filters for t in sw.trials] == [(6, 12, 24)] * 2 and sw.varying == ["train.seed"]
    f.write_text('[sweep]\nout = "o"\n[train]\nfilters = [[6, 12]]\n')
    with pytest.raises(QuteError, match="filters must be 3 channel counts"):
        load_sweep(f)


def test_a_trial_is_finished_only_for_the_network_it_builds_now(tmp_path):
    """Its record and its run's built channels are compared: a run of the former default backbone
    does not count for a sweep that leaves `filters` to today's default; a setting added since
    the trial ran counts as its default."""
    from qute.config import FILTERS, NetSpec
    from qute.data import Normalisation
    from qute.sweep import finished

    f = tmp_path / "s.toml"
    f.write_text('[sweep]\nout = "o"\n[train]\ndataset = "digits"\nseed = [0, 1]\n')
    trial = load_sweep(f).trials[0]
    runs = tmp_path / "o" / "runs"
    (runs / trial.name).mkdir(parents=True)
    settings = json.loads(json.dumps(trial.settings()))
    del settings["train"]["exit_schedule"]  # a record from before this setting existed
    (runs / trial.name / "trial.json").write_text(json.dumps({"settings": settings, "summary": {}}))

    run = runs / trial.name
    (run / "model.keras").write_bytes(b"")  # a run's files; only config.json's spec matters here
    (run / "history.json").write_text("[]")
    (run / "normalisation.json").write_text(json.dumps(Normalisation.from_range(0, 16).to_dict()))

    def built(filters):
        spec = NetSpec("mnist-cnn-mp", "qute", (8, 8, 1), 10, filters=filters).to_dict()
        if filters is None:
            del spec["filters"]  # runs saved before they recorded their channels
        (run / "config.json").write_text(json.dumps({"train": settings["train"], "spec": spec, "dataset": {}}))

    built(FILTERS["mnist-cnn-mp"])
    assert finished(trial, runs) is not None
    built(None)  # built with the former default, 8,16,16
    assert finished(trial, runs) is None
    f.write_text('[sweep]\nout = "o"\n[train]\ndataset = "digits"\nfilters = [8, 16, 16]\nseed = [0, 1]\n')
    pinned = load_sweep(f).trials[0]
    assert finished(pinned, runs) is not None
    (run / "config.json").write_text("{")
    assert finished(pinned, runs) is None


def test_the_committed_sweeps_are_valid():
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "bench" / "sweeps").glob("*.toml"))
    assert files
    for f in files:
        sw = load_sweep(f)
        assert sw.trials and len({t.name for t in sw.trials}) == len(sw.trials)
