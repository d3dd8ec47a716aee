"""Early exits: qute train keeps them, qute quantize --exits ships them, the generated C runs the
model stage by stage and can stop after any exit with that exit's bytes equal to TFLite Micro's."""

import json
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
