"""Never delete what the user did not ask to delete; check before long work; exit codes (issue 9).

Every command that writes a folder (qute train, qute build, qute monitor, qute-codegen generate)
follows codegen.outdir's rule: new or empty folders are written, its own folders are replaced only
with --force, and everything else (., the current folder's parents, /, the home folder, files,
other folders, unwritable places) is refused in one line, exit 2, with nothing touched.
Commands run as a user runs them, in a subprocess, with HOME pointing into tmp_path.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cliutil import assert_user_error, qute

from codegen import outdir

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TFLITE = ROOT / "firmware" / "default" / "model.int8.tflite"
FAST = 10  # seconds: a refusal or a bad flag must come before any training, quantizing or compiling

have_gcc = shutil.which("arm-none-eabi-gcc") is not None and shutil.which("make") is not None
needs_gcc = pytest.mark.skipif(not have_gcc, reason="arm-none-eabi-gcc not installed")

MARKERS = {"train": ".qute-run", "build": ".qute-build", "generate": ".qute-codegen", "monitor": ".qute-monitor"}


def _fake_build(folder: Path) -> Path:
    """Just enough of a build for qute monitor to read (no calibration: it stops before QEMU)."""
    folder.mkdir(parents=True)
    (folder / "firmware.elf").write_bytes(b"\x7fELF")
    from qute.build.manifest import InputsInfo, Manifest, ModelInfo, Variant

    (folder / "build.json").write_text(Manifest(
        board="mps2-an500", variants={"emulator": Variant("firmware.elf", "mps2-an500", True, [])},
        model=ModelInfo("a fake", "model.int8.tflite", "0" * 64, 0, 0, 0), inputs=InputsInfo("inputs.npz", 0, "nowhere"),
        outputs=[], ensemble=False, classes=0, expected_done_line="QUTE done samples=0 crc32=00000000").to_json())
    (folder / ".qute-build").write_text("")
    return folder


def command(name: str, out, tmp_path: Path, *extra) -> tuple[str, list]:
    """(module, arguments) of `name` writing `out`: the cheapest invocation that writes a real folder."""
    if name == "train":
        return "qute", ["train", "--dataset", "digits", "--limit", "64", "--epochs", "1", "--no-temperature", "-o", out, *extra]
    if name == "build":
        return "qute", ["build", "--board", "mps2-an500", "--emulator", "--samples", "2", "-o", out, *extra]
    if name == "generate":
        return "codegen", ["generate", DEFAULT_TFLITE, "-o", out, *extra]
    return "qute", ["monitor", tmp_path / "fake-build", "-o", out, *extra]


def run(name, out, tmp_path, *extra, cwd=None, env=None):
    module, args = command(name, out, tmp_path, *extra)
    t0 = time.monotonic()
    proc = qute(*args, module=module, cwd=cwd, env=env)
    return proc, time.monotonic() - t0


def snapshot(folder: Path) -> dict:
    """Every file's bytes and every folder under `folder`, to show nothing was touched."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def place(tmp_path):
    """tmp_path/home (HOME), tmp_path/home/work (cwd) holding a file, a foreign folder and an own one."""
    home = tmp_path / "home"
    work = home / "work"
    (work / "sub").mkdir(parents=True)
    (work / "keep.txt").write_text("mine")
    (work / "foreign").mkdir()
    (work / "foreign" / "notes.txt").write_text("do not delete")
    _fake_build(tmp_path / "fake-build")
    return home, work


REFUSED = [
    # (-o, cwd below work, --force, fragments)
    (".", ".", True, ["is the current folder"]),
    ("..", "sub", True, ["is a parent of the current folder"]),
    ("{work}", "sub", True, ["is a parent of the current folder"]),
    ("{home}", ".", True, ["is the home folder"]),
    ("/", ".", False, ["is the root folder"]),
    ("keep.txt", ".", True, ["keep.txt is a file, not a folder"]),
    ("foreign", ".", True, ["foreign exists and was not made by", "choose another output folder"]),
    ("own", ".", False, ["own already exists", "pass --force"]),
    ("keep.txt/out", ".", True, ["cannot create keep.txt/out: keep.txt is a file, not a folder"]),
    ("/proc/qute-nope/out", ".", True, ["cannot create /proc/qute-nope/out", "not writable"]),
]


@pytest.mark.parametrize("name", ["train", "build", "generate", "monitor"])
@pytest.mark.parametrize("out, cwd, force, fragments", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_outputs_touch_nothing(name, out, cwd, force, fragments, place, tmp_path):
    if name == "build" and not have_gcc:
        pytest.skip("qute build needs arm-none-eabi-gcc before it looks at -o")
    home, work = place
    own = work / "own"
    own.mkdir()
    (own / MARKERS[name]).write_text("")
    (own / "old.txt").write_text("previous output")
    before = snapshot(tmp_path)
    out = out.format(work=work, home=home)
    proc, seconds = run(name, out, tmp_path, *(["--force"] if force else []), cwd=work / cwd, env={"HOME": str(home)})
    assert_user_error(proc, *fragments)
    assert snapshot(tmp_path) == before
    assert seconds < FAST


@pytest.mark.parametrize("name", ["train", "build", "generate", "monitor"])
def test_another_commands_folder_is_foreign(name, place, tmp_path):
    if name == "build" and not have_gcc:
        pytest.skip("qute build needs arm-none-eabi-gcc before it looks at -o")
    home, work = place
    other = work / "other"
    other.mkdir()
    (other / next(m for n, m in MARKERS.items() if n != name)).write_text("")
    before = snapshot(tmp_path)
    proc, _ = run(name, other, tmp_path, "--force", cwd=work, env={"HOME": str(home)})
    assert_user_error(proc, "was not made by")
    assert snapshot(tmp_path) == before


def _fake_run(folder: Path) -> Path:
    """A run qute can read (its model is never loaded by the checks under test)."""
    _older("train", folder)
    (folder / "config.json").write_text(json.dumps({
        "train": {}, "dataset": {"name": "digits"},
        "spec": {"arch": "mnist-cnn", "method": "qute", "input_shape": [8, 8, 1], "num_classes": 10}}))
    (folder / "normalisation.json").write_text(json.dumps({"scale": 0.0625, "offset": 0.0, "raw_min": 0.0, "raw_max": 16.0}))
    (folder / "history.json").write_text("[]")
    return folder


def _older(name: str, folder: Path) -> None:
    """A folder the command wrote before folders carried markers."""
    folder.mkdir()
    files = {"train": ["model.keras", "config.json", "normalisation.json", "history.json"],
             "generate": ["qute_model.h", "qute_model.c", "report.json"],
             "monitor": ["monitor.json", "monitor.png", "transcript.txt"]}.get(name)
    if name == "build":
        (folder / "build.json").write_text(json.dumps({"kind": "qute-firmware"}))
    else:
        for f in files:
            (folder / f).write_text("{}")


@pytest.mark.parametrize("name", ["train", "build", "generate", "monitor"])
def test_folders_from_before_markers_are_still_recognised(name, place, tmp_path):
    if name == "build" and not have_gcc:
        pytest.skip("qute build needs arm-none-eabi-gcc before it looks at -o")
    home, work = place
    _older(name, work / "older")
    proc, _ = run(name, "older", tmp_path, cwd=work, env={"HOME": str(home)})
    assert_user_error(proc, "already exists", "--force")
    # generated C and monitor output are known by their exact files: one more makes the folder
    # someone else's (runs and builds gather the later stages' files, and are known by their own)
    if name in ("generate", "monitor"):
        (work / "older" / "mine.txt").write_text("x")
        proc, _ = run(name, "older", tmp_path, "--force", cwd=work, env={"HOME": str(home)})
        assert_user_error(proc, "was not made by")
        assert (work / "older" / "mine.txt").read_text() == "x"


def _written(name: str, folder: Path) -> None:
    assert (folder / MARKERS[name]).is_file()
    expect = {"train": "model.keras", "build": "firmware.elf", "generate": "qute_model.c"}[name]
    assert (folder / expect).is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "a staging folder was left"


def _writes_new_empty_and_forced(name, tmp_path):
    work = tmp_path / "work"
    (work / "empty").mkdir(parents=True)
    for out in ("new/deeper/out", "empty"):
        proc, _ = run(name, out, tmp_path, cwd=work)
        assert proc.returncode == 0, proc.stderr
        _written(name, work / out)
    (work / "empty" / "sentinel").write_text("from the previous output")
    proc, _ = run(name, "empty", tmp_path, cwd=work)
    assert_user_error(proc, "already exists", "--force")
    assert (work / "empty" / "sentinel").is_file()
    proc, _ = run(name, "empty", tmp_path, "--force", cwd=work)
    assert proc.returncode == 0, proc.stderr
    _written(name, work / "empty")
    assert not (work / "empty" / "sentinel").exists()


def test_generate_writes_new_empty_and_its_own_with_force(tmp_path):
    _writes_new_empty_and_forced("generate", tmp_path)


@needs_gcc
def test_build_writes_new_empty_and_its_own_with_force(tmp_path):
    _writes_new_empty_and_forced("build", tmp_path)


@pytest.mark.slow
def test_train_writes_new_empty_and_its_own_with_force(tmp_path):
    _writes_new_empty_and_forced("train", tmp_path)


def test_a_failing_monitor_leaves_its_previous_folder_as_it_was(place, tmp_path):
    """--force gets past the check; the command then fails (the fake build has no monitor) and the
    old folder is still there, whole, with no staging folder beside it."""
    home, work = place
    old = work / "mon"
    old.mkdir()
    (old / ".qute-monitor").write_text("")
    (old / "monitor.json").write_text("{}")
    before = snapshot(tmp_path)
    proc, _ = run("monitor", old, tmp_path, "--force", cwd=work, env={"HOME": str(home)})
    assert_user_error(proc, "has no accuracy-drop monitor")
    assert snapshot(tmp_path) == before


def test_check_and_missing_directly(tmp_path, monkeypatch):
    kind = outdir.Kind("test", ".qute-test")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert outdir.check("a/b/../c", kind) == Path("a/c")
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    with pytest.raises(outdir.OutputError, match="symbolic link"):
        outdir.check("link", kind, force=True)
    (tmp_path / "f").write_text("")
    assert outdir.missing(tmp_path / "f") == "is a file, not a folder"
    assert outdir.missing(tmp_path, "file") == "is a folder, not a file"
    assert outdir.missing(tmp_path / "nothing") == "does not exist"


def test_staging_is_removed_with_the_parents_it_made_on_any_exception(tmp_path, monkeypatch):
    kind = outdir.Kind("test", ".qute-test")
    monkeypatch.chdir(tmp_path)
    for exc in (ValueError, KeyboardInterrupt):
        with pytest.raises(exc):
            with outdir.staging("x/y/out", kind) as tmp:
                (tmp / "half").write_text("written")
                raise exc()
        assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- checked before long work


@pytest.mark.parametrize("flags, fragment", [
    (["--lr", "nan"], "lr must be in (0, 1], got nan"),
    (["--lr", "inf"], "lr must be in (0, 1], got inf"),
    (["--lr", "0"], "lr must be in (0, 1], got 0.0"),
    (["--lr", "-0.001"], "lr must be in (0, 1]"),
    (["--lr-decay", "nan"], "lr_decay must be in (0, 1]"),
    (["--lr-decay", "1.5"], "lr_decay must be in (0, 1]"),
    (["-K", "17"], "-K must be between 1 and 16 for method qute, got 17"),
    (["-K", "0"], "-K must be between 1 and 16"),
    (["--method", "deep-ensemble", "-K", "40"], "for method deep-ensemble"),
    (["--epochs", "-1"], "epochs must be positive"),
    (["--batch-size", "0"], "batch_size must be positive"),
    (["--limit", "0"], "limit must be positive"),
])
def test_bad_training_settings_fail_before_training(tmp_path, flags, fragment):
    t0 = time.monotonic()
    proc = qute("train", "--dataset", "digits", *flags, "-o", tmp_path / "run")
    assert_user_error(proc, fragment)
    assert time.monotonic() - t0 < FAST
    assert list(tmp_path.iterdir()) == []


def test_nan_in_qute_toml_is_caught_too(tmp_path):
    (tmp_path / "qute.toml").write_text("[train]\nlr = nan\n")
    assert_user_error(qute("train", "-o", "run", cwd=tmp_path), "lr must be in (0, 1], got nan")


@pytest.mark.parametrize("value", ["nan", "0", "-5", "inf"])
@pytest.mark.parametrize("cmd", [["run", "somewhere"], ["monitor", "somewhere"], ["flash", "somewhere"]])
def test_bad_timeouts_are_usage_errors(tmp_path, cmd, value):
    assert_user_error(qute(*cmd, "--timeout", value, cwd=tmp_path), "--timeout", "positive number of seconds")


def test_build_refuses_its_output_before_quantizing_the_run(tmp_path):
    """A run with no int8 model would be quantized first (most of a minute): the output comes first."""
    run = tmp_path / "run"
    _older("train", run)
    own = tmp_path / "b"
    own.mkdir()
    (own / ".qute-build").write_text("")
    (own / "x").write_text("")
    t0 = time.monotonic()
    proc = qute("build", "--board", "mps2-an500", run, "-o", own)
    if "arm-none-eabi-gcc not found" in proc.stderr:
        pytest.skip("arm-none-eabi-gcc not installed")
    assert_user_error(proc, "already exists", "--force")
    assert time.monotonic() - t0 < FAST
    assert not (run / "model.int8.tflite").exists()


def test_bad_stream_is_refused_before_quantizing(tmp_path):
    run = tmp_path / "run"
    _older("train", run)
    proc = qute("build", "--board", "mps2-an500", run, "--stream", "id,corrupt:lava", "-o", tmp_path / "b")
    if "arm-none-eabi-gcc not found" in proc.stderr:
        pytest.skip("arm-none-eabi-gcc not installed")
    assert_user_error(proc, "unknown corruption 'lava'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# --------------------------------------------------------------------------- messages


def test_a_file_where_a_folder_is_read_is_named_as_such(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    run = _fake_run(tmp_path / "run")
    for args in (["eval", f], ["run", f], ["monitor", f], ["report", run, "--build", f]):
        proc = qute(*args)
        assert proc.returncode == 2 and "is a file" in proc.stderr and "does not exist" not in proc.stderr, (args, proc.stderr)
    assert_user_error(qute("train", "--dataset", f"npz:{tmp_path}", "-o", tmp_path / "r"), "is a folder, not a file")


def test_report_output_that_cannot_be_written_is_one_line(tmp_path):
    run = _fake_run(tmp_path / "run")
    (tmp_path / "f").write_text("")
    for out, fragment in ((tmp_path / "f" / "r.html", "is a file, not a folder"), ("/proc/qute-nope/r.html", "not writable")):
        assert_user_error(qute("report", run, "-o", out), fragment)


def test_fewer_samples_hint_only_when_fewer_samples_would_fit():
    from types import SimpleNamespace

    import numpy as np

    from qute.build import check_fit_before_link
    from qute.errors import QuteError

    def fails(weights, samples, flash=10_000):
        board = SimpleNamespace(name="b", stack_size=0, ram_region=SimpleNamespace(length=1 << 30),
                                flash_region=SimpleNamespace(length=flash))
        gen = SimpleNamespace(arena_size=0, weights_bytes=weights, params_bytes=0)
        facts = SimpleNamespace(gen=gen, outputs=[], ensemble=False, classes=10)
        source = SimpleNamespace(inputs=np.zeros((samples, 98), np.int8))  # 100 bytes each with the label
        with pytest.raises(QuteError) as e:
            check_fit_before_link(board, facts, source)
        return str(e.value)

    assert "room for at most 50" in fails(5_000, 60)
    assert "--samples" not in fails(9_950, 60)  # not even one input fits beside the weights
    assert "--samples" not in fails(12_000, 60)  # the weights alone overflow
    assert "--samples" not in fails(9_950, 1, flash=10_000)


def test_gdb_reason_is_passed_on():
    from qute.flash import _failed

    assert _failed("gdb", 0, "localhost:1: Connection timed out.\nYou can't do that when your target is `exec'\n", 5) \
        == "no connection to the GDB server: Connection timed out"
    assert _failed("gdb", 0, "localhost:1: Connection refused.\n", 5).endswith("Connection refused")
    assert "Name or service not known" in _failed("gdb", 0, "nohost:3333: cannot resolve name: Name or service not known\n", 5)


# --------------------------------------------------------------------------- Ctrl-C and SIGTERM


@pytest.mark.slow
@pytest.mark.parametrize("sig, status, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signals_exit_with_128_plus_the_signal_and_leave_no_staging(tmp_path, sig, status, word):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "qute", "train", "--dataset", "digits", "--limit", "64",
                             "--epochs", "200", "-o", "run"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            # a background job may inherit SIGINT ignored; a user's shell would not
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".run.*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(1.0)  # into the training loop
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert err.strip().splitlines()[-1] == f"qute: {word}", err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
