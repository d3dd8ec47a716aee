"""The command line, end to end, as a user runs it (a subprocess per command)."""

import json

import numpy as np
import pytest
from cliutil import assert_user_error, qute






@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    proc = qute("train", "--dataset", "digits", "-K", "2", "--epochs", "3", "--batch-size", "64", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout
    return out


@pytest.mark.slow
def test_train_writes_a_complete_run(run_dir):
    for name in ("model.keras", "config.json", "normalisation.json", "history.json"):
        assert (run_dir / name).is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["spec"]["method"] == "qute" and config["spec"]["k"] == 2
    assert config["heads"] == ["head_0", "head_1"]
    assert len(json.loads((run_dir / "history.json").read_text())) == 3
    norm = json.loads((run_dir / "normalisation.json").read_text())
    assert norm["scale"] == pytest.approx(1 / 16)
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.slow
def test_eval_prints_the_table_and_writes_metrics(run_dir):
    proc = qute("eval", run_dir, "--corruptions", "gaussian_noise,rotate", "--window", "50")
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0].split()
    assert header[:8] == ["method", "F1", "NLL", "Brier", "ECE", "AUROC", "fail", "AUROC"]
    assert proc.stdout.splitlines()[2].startswith("qute")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["corruptions"]) == {"gaussian_noise", "rotate"}
    for key in ("f1", "nll", "brier", "ece", "auroc_failure", "auroc_ood", "auprc_drop"):
        assert key in metrics["summary"]
    assert 0 <= metrics["summary"]["ece"] <= 1
    assert (run_dir / "reliability.png").stat().st_size > 1000
    assert (run_dir / "confidence_hist.png").stat().st_size > 1000


@pytest.mark.slow
def test_config_file_and_flags(tmp_path):
    (tmp_path / "qute.toml").write_text('[train]\nmethod = "base"\nepochs = 1\nbatch_size = 128\nlimit = 300\nfilters = [4, 8, 8]\n')
    proc = qute("train", "--epochs", "2", "-o", "r", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["train"]["method"] == "base"  # from the file
    assert config["train"]["epochs"] == 2  # the flag wins
    assert config["train"]["filters"] == config["spec"]["filters"] == [4, 8, 8]
    assert config["dataset"]["train_samples"] == 300


def test_help_shows_an_example():
    proc = qute("train", "--help")
    assert proc.returncode == 0
    assert "Example:" in proc.stdout and "qute train --dataset" in proc.stdout


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["train", "--dataset", "imagenet"], ["imagenet", "digits", "npz:PATH"]),
        (["train", "--arch", "vgg"], ["vgg", "mnist-cnn"]),
        (["train", "--method", "bagging"], ["bagging", "deep-ensemble"]),
        (["train", "--epochs", "0"], ["epochs must be positive"]),
        (["train", "--filters", "16,96"], ["filters must be 3 channel counts", "its own: 6,12,24"]),
        (["train", "--filters", "wide"], ["comma-separated integers"]),
        (["train", "--dataset", "npz:/nonexistent/file.npz"], ["/nonexistent/file.npz"]),
        (["train", "--config", "/nonexistent/qute.toml"], ["does not exist"]),
        (["eval", "/nonexistent/run"], ["does not exist"]),
        (["train", "--bogus"], ["--bogus"]),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, fragments):
    out = tmp_path / "run"
    proc = qute(*args, *(["-o", out] if args[0] == "train" else []))
    assert_user_error(proc, *fragments)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "toml, fragment",
    [
        ("[train\nmethod = 1", "not valid TOML"),
        ('[train]\nmethd = "qute"', "unknown key 'methd'"),
        ('[train]\nepochs = "ten"', "epochs must be an integer"),
        ('[train]\nfilters = "wide"', "filters must be 3 channel counts"),
        ('[deploy]\nboard = "x"', "unknown table [deploy]"),
    ],
)
def test_malformed_config_exits_2(tmp_path, toml, fragment):
    (tmp_path / "qute.toml").write_text(toml)
    proc = qute("train", "-o", "run", cwd=tmp_path)
    assert_user_error(proc, fragment)
    assert not (tmp_path / "run").exists()


def test_bad_npz_files_exit_2(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    assert_user_error(qute("train", "--dataset", f"npz:{bad}", "-o", tmp_path / "r1"), str(bad))
    shapes = tmp_path / "shapes.npz"
    np.savez(shapes, x_train=np.zeros((10, 8, 8)), y_train=np.zeros(9, int), x_test=np.zeros((4, 8, 8)), y_test=np.zeros(4, int))
    assert_user_error(qute("train", "--dataset", f"npz:{shapes}", "-o", tmp_path / "r2"))
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_existing_run_dir_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_user_error(qute("train", "--epochs", "1", "-o", out, "--force"), "was not made by qute train")
    assert (out / "keep.txt").read_text() == "mine"


def test_incomplete_run_dir_exits_2(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert_user_error(qute("eval", tmp_path), "not a complete qute run")


@pytest.mark.slow
def test_eval_rejects_unknown_corruption(run_dir):
    assert_user_error(qute("eval", run_dir, "--corruptions", "lava"), "lava", "gaussian_noise")
