"""Early exits: qute train keeps them, qute quantize --exits ships them, the generated C runs the
model stage by stage and can stop after any exit with that exit's bytes equal to TFLite Micro's."""

import json
import re
import shutil

import numpy as np
import pytest
from cliutil import assert_user_error, qute
from tiny import tiny_qute_run

from codegen import stages
from codegen.fold import fold
from codegen.ir import CodegenError, Graph, Op, Tensor

K = 3


def _chain_graph(names):
    """input -> a -> b -> c (a backbone of three ops); an exit on a and one on b, each two ops,
    written at the end of the file as the converter tends to; a head on c. Output tensor names
    from `names` (exit, exit, head)."""
    t = [Tensor(i, f"t{i}", (1, 4), "int8", np.float32([1.0]), np.int64([0])) for i in range(10)]
    for i, n in zip((6, 8, 4), names):
        t[i].name = n
    ops = [
        Op(0, "RELU", 1, [0], [1]),  # a
        Op(1, "RELU", 1, [1], [2]),  # b
        Op(2, "RELU", 1, [2], [3]),  # c
        Op(3, "RELU", 1, [3], [4]),  # head
        Op(4, "RELU", 1, [1], [5]),  # exit on a
        Op(5, "RELU", 1, [5], [6]),
        Op(6, "RELU", 1, [2], [7]),  # exit on b
        Op(7, "RELU", 1, [7], [8]),
    ]
    return Graph(t, ops, inputs=[0], outputs=[4, 6, 8])


def test_each_exit_runs_right_after_what_it_needs():
    g = fold(_chain_graph(["exit_0", "exit_1", "head_0"]))
    order = [(op.inputs[0], op.outputs[0]) for op in g.ops]
    assert order == [(0, 1), (1, 5), (5, 6), (1, 2), (2, 7), (7, 8), (2, 3), (3, 4)]
    assert stages.stage_ends(g) == [3, 6, 8]
    assert [g.output_label(t) for t in stages.exit_outputs(g)] == ["exit_0", "exit_1"]
    again = fold(g)  # a staged order stays as it is
    assert [(op.inputs, op.outputs) for op in again.ops] == [(op.inputs, op.outputs) for op in g.ops]


def test_a_model_without_exits_keeps_its_order():
    g = fold(_chain_graph(["x", "y", "head_0"]))
    assert [op.outputs[0] for op in g.ops] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert stages.stage_ends(g) == [8]


def test_exit_numbers_with_a_gap_are_refused():
    with pytest.raises(CodegenError, match="exit_0, exit_2: exits must be numbered"):
        fold(_chain_graph(["exit_0", "exit_2", "head_0"]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_qute_run(tmp_path_factory.mktemp("runs"), K)


@pytest.fixture(scope="module")
def quantized(trained):
    from qute.quantize import quantize_run
    from qute.run import load_run

    run_dir, data, _ = trained
    return quantize_run(load_run(run_dir), dataset=data, exits=True)


@pytest.mark.slow
def test_train_keeps_the_exits_with_the_same_heads(trained):
    from qute.models import predict_heads
    from qute.run import load_run

    run_dir, data, model = trained
    config = json.loads((run_dir / "config.json").read_text())
    assert config["exits"] == ["exit_0", "exit_1", "exit_2"]
    assert [e["exit"] for e in config["temperature"]["exits"]] == config["exits"]
    with_exits = load_run(run_dir).load_model(exits=True)
    both = predict_heads(with_exits, data.x_test[:64])
    assert both.shape[0] == 2 * K
    np.testing.assert_array_equal(both[:K], predict_heads(model, data.x_test[:64]))
    # each exit is a classifier of its own, better than chance on digits
    assert all(np.mean(e.argmax(1) == data.y_test[:64]) > 0.3 for e in both[K:])


@pytest.mark.slow
def test_quantized_exits_equal_tflm_in_the_generated_c(quantized):
    from qute.int8_model import signature_outputs

    report = quantized.report
    names = signature_outputs(quantized.tflite)
    assert sorted(names) == ["exit_0", "exit_1", "exit_2", "head_0", "head_1", "head_2"]
    assert [e["exit"] for e in report["exits"]] == ["exit_0", "exit_1", "exit_2"]
    assert all(e["dtype"] == "int16" for e in report["exits"])  # 16-bit softmax, as the heads
    c = report["stages"]["c"]
    # every output, exits included: 6 outputs x 10 classes x 2 bytes per test image
    assert c["bytes_compared"] == report["test_samples"] * 6 * 10 * 2
    assert c["bytes_differing_from_int8_tflm"] == 0
    # the heads' report is the one a model without exits gets
    assert report["heads"] == ["head_0", "head_1", "head_2"]


@pytest.mark.slow
def test_staged_run_stops_at_each_exit_with_its_bytes(quantized, trained):
    from codegen.host import build_host
    from codegen.reader import read_model
    from qute.int8_model import input_params, quantize
    from qute.oracle import run_tflm

    data = trained[1]
    graph = read_model(quantized.tflite)
    host = build_host(graph, sanitize=True)
    x = quantize(data.x_test[:40], input_params(quantized.tflite))
    full = host.run([x])
    tflm = run_tflm(quantized.tflite, [x])  # flatbuffer output order
    by_tensor = dict(zip(graph.outputs, tflm))
    for k, t in enumerate(host.output_tensors):
        np.testing.assert_array_equal(full[k], by_tensor[t])
    assert [host.output_tensors[i] for i in host.exits] == [graph.output_names[f"exit_{k}"] for k in range(K)]
    assert host.exits == [3, 4, 5]  # heads first, then the exits
    for stop in range(K):
        outs, taken = host.run_staged([x], stop)
        assert set(taken.tolist()) == {stop}
        for k in range(stop + 1):  # every exit up to the one taken is complete
            np.testing.assert_array_equal(outs[host.exits[k]], full[host.exits[k]])
    outs, taken = host.run_staged([x], -1)
    assert set(taken.tolist()) == {K}
    for a, b in zip(outs, full):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_quantize_exits_on_a_run_without_them_is_one_line(trained, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(trained[0], old)
    (old / "exits.keras").unlink()
    assert_user_error(qute("quantize", old, "--exits"), "has no early exits", "trained before qute kept them")
    assert not (old / "model.int8.tflite").exists()


# --------------------------------------------------------------------------- on the device (QEMU)

needs_qemu = pytest.mark.skipif(not all(shutil.which(t) for t in ("arm-none-eabi-gcc", "make", "qemu-system-arm")),
                                reason="qemu-system-arm or arm-none-eabi-gcc not installed")


@pytest.fixture(scope="module")
def shipped(trained, quantized):
    """The run with its exits model written and calibrated (window 10), as a user makes it."""
    from qute.quantize import write_result

    run_dir = trained[0]
    write_result(run_dir, quantized)
    p = qute("calibrate", run_dir, "--window", "10")
    assert p.returncode == 0, p.stderr + p.stdout
    return run_dir


def _build_and_run(run_dir, out, board, policy, *extra):
    p = qute("build", "--board", board, run_dir, "--emulator", "--samples", "40", "--exit-policy", policy,
             "-o", out, *extra)
    assert p.returncode == 0, p.stderr + p.stdout
    r = qute("run", out)
    assert r.returncode == 0, r.stderr + r.stdout
    return r.stdout


def _exit_line(stdout):
    line = next(ln for ln in stdout.splitlines() if ln.startswith("early exits"))
    counts = dict((name, int(n)) for name, n in
                  (part.strip().split(" ") for part in line.split(": ", 1)[1].split(";")[0].split(",")))
    return line, counts


@needs_qemu
@pytest.mark.slow
@pytest.mark.parametrize("board, policy", [("mps2-an500", "confidence:0.6"), ("mps2-an385", "entropy:1.0,1.1,1.2"),
                                           ("mps2-an500", "mean-margin:0.5"), ("mps2-an385", "mean-confidence:0.7"),
                                           ("mps2-an500", "window-confidence:0.4/0.8"),
                                           ("mps2-an385", "window-mean-entropy:1.6/0.9")])
def test_device_exits_scores_and_decisions_equal_the_host(shipped, tmp_path, board, policy):
    from qute import transcript

    out = _build_and_run(shipped, tmp_path / "b", board, policy)
    line, counts = _exit_line(out)
    assert "0 of 40 exit decisions differ from the host" in line
    assert sum(counts.values()) == 40 and sum(1 for n in counts.values() if n) >= 2, line  # a mix of exits
    assert "bit-exact: yes" in out
    # the calibrated decisions run on whatever each sample reported
    assert re.search(r"abstain \(confidence\):.* 0 flag\(s\) and 0 (integer )?score value\(s\) differ", out), out
    assert re.search(r"monitor \(m=10.*0 window (mean|sum)\(s\) and 0 alarm state\(s\) differ", out), out
    # outputs a run did not compute are left empty on its line
    t = transcript.parse((tmp_path / "b" / "transcript.txt").read_text())
    for s in t.samples:
        assert [len(h) > 0 for h in s.heads] == [s.exit == K] * K + [j <= s.exit for j in range(K)]


@needs_qemu
@pytest.mark.slow
def test_stopping_at_exit_0_costs_what_stage_0_costs(shipped, tmp_path):
    from codegen.reader import read_model
    from codegen.stages import stage_ends
    from qute.emulate import check
    from qute.build.manifest import load_build
    from qute import transcript

    full = _build_and_run(shipped, tmp_path / "full", "mps2-an500", "never", "--profile")
    profile = json.loads((tmp_path / "full" / "profile.json").read_text())
    first = stage_ends(fold(read_model((tmp_path / "full" / "model.int8.tflite").read_bytes())))[0]
    stage0 = sum(o["count"] for o in profile["ops"] if o["index"] < first)
    whole = profile["invoke"]
    out = _build_and_run(shipped, tmp_path / "stop0", "mps2-an500", "confidence:0")
    line, counts = _exit_line(out)
    assert counts["exit_0"] == 40, line
    mean = float(re.search(r"mean ([\d,]+), min", out).group(1).replace(",", ""))
    # stage 0's ops plus scoring one exit (a few thousand instructions), far below the whole model
    assert 0.95 * stage0 < mean < stage0 + 4000, (mean, stage0)
    assert mean < 0.6 * whole
    assert "bit-exact: yes" in full
    # a transcript whose exit= disagrees with its outputs is caught
    b = load_build(tmp_path / "stop0")
    text = (tmp_path / "stop0" / "transcript.txt").read_text().replace("exit=0 ", "exit=1 ", 1)
    from qute.boards import load_board
    assert not check(b, transcript.parse(text), load_board("mps2-an500")).bit_exact


def test_never_stops_one_exit_and_reads_back():
    from qute.exits import ExitPolicy, never_threshold

    p = ExitPolicy.parse("confidence:never,0.9")
    assert p.thresholds == (never_threshold("confidence"), 0.9) and p.thresholds[0] > 1
    assert ExitPolicy.parse(p.spec()) == p and p.spec() == "confidence:never,0.9"
    assert ExitPolicy.parse("mean-entropy:never,0.2").thresholds[0] < 0  # lower is surer: never reached
    assert "(never, 0.9)" in p.describe()


@pytest.mark.parametrize("policy, fragments", [
    ("sometimes", ["exit policy 'sometimes'", "[mean-]SCORE:T"]),
    ("confidence:high", ["thresholds must be numbers"]),
    ("confidence:0.5,0.6", ["has no early exits"]),
    ("window-confidence:0.9/0.3", ["reject threshold must lie on the uncertain side"]),
    ("confidence:0.3/0.9", ["REJECT/ACCEPT pairs need window-"]),
    ("confidence:95", ["confidence thresholds must lie in [0, 1]", "not 95"]),
    ("entropy:-0.1", ["entropy thresholds must lie in [0, inf)"]),
    ("window-margin:never/0.9", ["thresholds must be numbers"]),
])
def test_bad_exit_policies_are_one_line(tmp_path, policy, fragments):
    # the embedded default has no exits: a policy for it is refused before anything is compiled
    p = qute("build", "--board", "mps2-an500", "--emulator", "--exit-policy", policy, "-o", tmp_path / "b")
    assert_user_error(p, *fragments)
    assert not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- policies against compute


def _synthetic_outputs(n=400, seed=0):
    """ExitOutputs of three exits and an ensemble on n samples: deeper is more often right and
    more confident, as in a trained model."""
    from qute.dynamic import ExitOutputs
    from qute.expectation import FloatPath, HeadLayout
    from qute.uncertainty import summarize

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    probs = []
    for sharp in (1.0, 2.0, 3.0, 4.0):
        logits = rng.normal(0, 1, (n, 10)).astype(np.float32)
        logits[np.arange(n), y] += sharp * rng.random(n).astype(np.float32) * 3
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs.append((e / e.sum(1, keepdims=True)).astype(np.float32))
    outputs = [{"name": f"head_{k}", "size": 10, "dtype": "int16", "scale": 1 / 65536, "zero_point": -32768} for k in range(1)]
    outputs += [{"name": f"exit_{k}", "size": 10, "dtype": "int16", "scale": 1 / 65536, "zero_point": -32768} for k in range(3)]
    layout = HeadLayout(outputs, True, 10, (1, 2, 3))
    alone = [summarize(p[None]) for p in probs[:3]]
    cumulative = [summarize(np.stack(probs[: k + 1])) for k in range(3)]
    means = [np.mean(probs[: k + 1], axis=0, dtype=np.float32) for k in range(3)]
    return ExitOutputs(layout, FloatPath(), alone, cumulative, summarize(probs[3][None]), probs, means + [probs[3]]), y


def test_budget_thresholds_meet_the_budget_and_beat_every_shared_threshold():
    from qute import dynamic

    o, y = _synthetic_outputs()
    costs = [100.0, 160.0, 220.0, 300.0]
    for budget in (0.4, 0.6, 0.8):
        ts = dynamic.choose(o, y, costs, "confidence", budget=budget)
        got = dynamic.outcome(o, y, costs, dynamic.with_thresholds("confidence", ts, o))
        assert got["mean_cost"] <= budget * costs[-1]
        for row in dynamic.sweep(o, y, costs, "confidence"):
            if row["mean_cost"] <= budget * costs[-1]:
                assert got["accuracy"] >= row["accuracy"]
    target = dynamic.outcome(o, y, costs, None)["accuracy"] - 0.02
    ts = dynamic.choose(o, y, costs, "entropy", target=target)
    got = dynamic.outcome(o, y, costs, dynamic.with_thresholds("entropy", ts, o))
    assert got["accuracy"] >= target and got["mean_cost"] < costs[-1]
    with pytest.raises(Exception, match="no confidence thresholds reach"):
        dynamic.choose(o, y, costs, "confidence", budget=0.2)  # below the cost of exit 0


def test_the_budget_search_also_tries_the_mean_of_the_exits_so_far():
    from qute import dynamic

    o, y = _synthetic_outputs()
    costs = [100.0, 160.0, 220.0, 300.0]
    for budget in (0.4, 0.6, 0.8):
        policy = dynamic.choose_policy(o, y, costs, "confidence", budget=budget)
        got = dynamic.outcome(o, y, costs, dynamic.policy_dict(policy, o))
        assert got["mean_cost"] <= budget * costs[-1]
        for cumulative in (False, True):  # at least as accurate as the best of either kind
            ts = dynamic.choose(o, y, costs, "confidence", budget=budget, cumulative=cumulative)
            other = dynamic.outcome(o, y, costs, dynamic.with_thresholds("confidence", ts, o, cumulative))
            assert got["accuracy"] >= other["accuracy"]
    # on these outputs the exits' mean is the more accurate at some budget: the search finds it
    assert any(dynamic.choose_policy(o, y, costs, "confidence", budget=b).cumulative for b in (0.4, 0.5, 0.6))
    with pytest.raises(Exception, match="no confidence thresholds reach"):
        dynamic.choose_policy(o, y, costs, "confidence", budget=0.2)


def test_policy_outcomes_weigh_each_exit_by_how_often_it_is_taken():
    from qute import dynamic

    o, y = _synthetic_outputs()
    costs = [100.0, 160.0, 220.0, 300.0]
    always0 = dynamic.outcome(o, y, costs, dynamic.with_thresholds("confidence", [0, 2, 2], o))
    assert always0["histogram"] == [len(y), 0, 0, 0] and always0["mean_cost"] == 100.0
    assert always0["accuracy"] == pytest.approx(np.mean(o.probs_alone[0].argmax(1) == y))
    # the mean of the exits so far: at exit 0 that is exit 0 alone; stopping at exit 1 reports the mean of two
    mean1 = dynamic.outcome(o, y, costs, dynamic.with_thresholds("confidence", [2, 0, 2], o, cumulative=True))
    assert mean1["accuracy"] == pytest.approx(np.mean((o.probs_alone[0] + o.probs_alone[1]).argmax(1) == y))
    never = dynamic.outcome(o, y, costs, None)
    assert never["histogram"] == [0, 0, 0, len(y)] and never["cost_fraction"] == 1.0
    rows = dynamic.sweep(o, y, costs, "confidence")
    assert [r["mean_cost"] for r in rows] == sorted(r["mean_cost"] for r in rows)  # stricter: never cheaper


@pytest.mark.parametrize("spec, fragment", [("budget:0", "budget must be a number in (0, 1]"),
                                            ("accuracy:x", "accuracy must be a number"),
                                            ("fast", "exit policy 'fast'")])
def test_bad_dynamic_specs_are_one_line(tmp_path, spec, fragment):
    assert_user_error(qute("eval", tmp_path / "nope", "--dynamic", spec), fragment)


@needs_qemu
@pytest.mark.slow
def test_eval_dynamic_measures_costs_and_writes_the_curve(shipped):
    p = qute("eval", shipped, "--dynamic", "budget:0.7", "--board", "mps2-an500")
    assert p.returncode == 0, p.stderr + p.stdout
    assert "chosen on the validation split" in p.stdout and "threshold sweep (confidence" in p.stdout
    doc = json.loads((shipped / "dynamic.json").read_text())
    costs = doc["costs"]
    assert len(costs) == K + 1 and costs == sorted(costs)  # stopping later costs more
    assert doc["chosen"]["mean_cost"] < doc["full"]["mean_cost"] == pytest.approx(costs[-1])
    assert (shipped / "dynamic.png").stat().st_size > 10_000
    cached = json.loads((shipped / "exit_costs.json").read_text())
    assert cached["boards"]["mps2-an500"]["costs"] == costs
    # qute report shows the policy, the sweep and the curve
    r = qute("report", shipped, "--no-eval", "-o", shipped / "report.html")
    assert r.returncode == 0, r.stderr + r.stdout
    html = (shipped / "report.html").read_text()
    assert "Early exits: accuracy against instructions" in html and html.count("data:image/png") >= 1


# --------------------------------------------------------------------------- one model for every board


def _too_big_with_an_early_exit() -> bytes:
    """64 int8 inputs -> FC 32 -> exit_0 (FC 10, int16 softmax) and, much deeper and wider,
    FC 8192 -> FC 10 -> head_0: 330 KB of weights, more than nucleo-l432kc's 256 KB of flash,
    while everything up to exit_0 takes 2.5 KB."""
    from fbmodels import ModelBuilder

    rng = np.random.default_rng(5)
    b = ModelBuilder("an early exit and a deep head")
    x = b.input((1, 64), scale=0.05, zero_point=0)

    def fc(src, n_in, n_out, name):
        w = b.const(rng.integers(-127, 128, (n_out, n_in)), scale=0.01, dtype="int8")
        bias = b.const(rng.integers(-500, 500, n_out), scale=0.05 * 0.01, dtype="int32")
        out = b.tensor((1, n_out), scale=0.2, zero_point=0, name=name)
        b.op("FULLY_CONNECTED", [src, w, bias], [out])
        return out

    def softmax(src, name):
        o = b.output(b.tensor((1, 10), "int16", scale=1 / 65536, zero_point=-32768, name=name))
        b.op("SOFTMAX", [src], [o], beta=1.0)

    h = fc(x, 64, 32, "backbone")
    softmax(fc(fc(h, 32, 8192, "wide"), 8192, 10, "head_logits"), "head_0")
    softmax(fc(h, 32, 10, "exit_logits"), "exit_0")
    return b.build()


@needs_qemu
def test_fit_deepest_exit_ships_the_exit_that_fits(tmp_path):
    model = tmp_path / "big.tflite"
    model.write_bytes(_too_big_with_an_early_exit())
    whole = qute("build", "--board", "nucleo-l432kc", model, "--emulator", "-o", tmp_path / "whole")
    assert_user_error(whole, "does not fit nucleo-l432kc", "flash")
    p = qute("build", "--board", "nucleo-l432kc", model, "--emulator", "--samples", "8", "--fit", "deepest-exit",
             "-o", tmp_path / "cut")
    assert p.returncode == 0, p.stderr + p.stdout
    assert "cut after exit_0 of 1, the deepest exit that fits" in p.stdout and "does not fit nucleo-l432kc" in p.stdout
    m = json.loads((tmp_path / "cut" / "build.json").read_text())
    assert m["cut"]["exit"] == "exit_0" and [o["name"] for o in m["outputs"]] == ["head_0"]
    r = qute("run", tmp_path / "cut")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "bit-exact: yes" in r.stdout and "0 of 160 differ" in r.stdout  # 8 inputs x 10 int16 values
    # the cut model's bytes are TFLite Micro's on the cut model, and equal exit_0 of the whole one
    from qute.exits import cut_at_exit
    from qute.oracle import run_tflm

    x = np.random.default_rng(1).integers(-128, 128, (6, 64)).astype(np.int8)
    whole_out = run_tflm(model.read_bytes(), [x])
    np.testing.assert_array_equal(run_tflm(cut_at_exit(model.read_bytes(), 0), [x])[0], whole_out[1])


@needs_qemu
@pytest.mark.slow
def test_a_trained_model_too_big_for_the_board_ships_its_deepest_exit(tmp_path):
    # A user's path end to end: a backbone widened until its last stage alone outweighs
    # nucleo-l432kc's 256 KB of flash (3 x 3 x 64 x 640 int8 weights = 369 KB), trained briefly on
    # digits, quantized with its exits; the exits after the second stage fit.
    run = tmp_path / "wide"
    p = qute("train", "--dataset", "digits", "--filters", "8,64,640", "--epochs", "2", "--batch-size", "64",
             "--lr", "1e-2", "--limit", "640", "-o", run)
    assert p.returncode == 0, p.stderr + p.stdout
    p = qute("quantize", run, "--exits")
    assert p.returncode == 0, p.stderr + p.stdout
    whole = qute("build", "--board", "nucleo-l432kc", run, "--emulator", "-o", tmp_path / "whole")
    assert_user_error(whole, "does not fit nucleo-l432kc", "flash")
    p = qute("build", "--board", "nucleo-l432kc", run, "--emulator", "--samples", "8", "--fit", "deepest-exit",
             "-o", tmp_path / "cut")
    assert p.returncode == 0, p.stderr + p.stdout
    # exits 1 and 2 both hang on the second stage (K=3 on three stages): exit_2 is the deepest
    assert "cut after exit_2 of 3, the deepest exit that fits" in p.stdout
    evaluation = json.loads((run / "quantization.json").read_text())
    exit_2 = next(e for e in evaluation["exits"] if e["exit"] == "exit_2")
    assert f"exit_2 alone on the {evaluation['test_samples']:,} test images" in p.stdout
    assert f"accuracy {exit_2['int8_tflm']['accuracy']:.4f}" in p.stdout
    r = qute("run", tmp_path / "cut")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "bit-exact: yes" in r.stdout and "0 of 160 differ" in r.stdout  # 8 inputs x 10 int16 values


@needs_qemu
@pytest.mark.slow
def test_calibrated_exit_thresholds_meet_the_budget_and_build(shipped, tmp_path):
    p = qute("calibrate", shipped, "--window", "10", "--exits", "budget:0.7", "--board", "mps2-an500")
    assert p.returncode == 0, p.stderr + p.stdout
    doc = json.loads((shipped / "exit_policy.json").read_text())
    assert doc["validation"]["cost_fraction"] <= 0.7 and doc["board"] == "mps2-an500"
    assert "build with: qute build --exit-policy calibrated" in p.stdout
    out = _build_and_run(shipped, tmp_path / "b", "mps2-an500", "calibrated")
    line, _ = _exit_line(out)
    assert f"(confidence >= {','.join(f'{t:g}' for t in doc['policy']['thresholds'])})" in line
    assert "0 of 40 exit decisions differ from the host" in line and "bit-exact: yes" in out
    # without the file, or for another model, the build says what to run
    other = tmp_path / "other"
    shutil.copytree(shipped, other)
    (other / "exit_policy.json").unlink()
    assert_user_error(qute("build", "--board", "mps2-an500", other, "--emulator", "--exit-policy", "calibrated",
                           "-o", tmp_path / "x"), "has no exit_policy.json", "qute calibrate")
    assert not (tmp_path / "x").exists()
