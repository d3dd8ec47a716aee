"""DEPTHWISE_CONV_2D kernel variants (firmware/kernels/qute_depthwise_conv.h) against TFLite Micro.

The code generator picks qute_depthwise_conv2d_3x3_s8 for 3x3 filters with depth multiplier 1
(any stride, padding, dilation) and qute_depthwise_conv2d_s8 for the rest. The 3x3 kernel reads a
weight stream laid out at compile time (codegen/ops/depthwise.py: pack_3x3), has three
requantization modes (fast with saturation, fast with a clamp, exact) and three code paths: the
Thumb-2 DSP assembly (Cortex-M4/M7), the SIMD operations in C (-DQUTE_SIMD_EMULATE on the host)
and plain C. Every path is checked byte for byte against TFLM: the host paths here on hand-built
models (tests/fbmodels.py) with one independent op per configuration, plain and SIMD-emulated,
and under ASan/UBSan; the assembly under QEMU on mps2-an500 and mps2-an386 (test_device_*):

- 3x3 stride 1 and 2, SAME and VALID, dilation, batch > 1;
- inputs so small that every window touches the padding, and windows wholly in the padding;
- channel counts below 4 and not a multiple of 4 (the overlapping last group, interior pixels at
  odd addresses), and above 256 (the zero-point row in chunks);
- depth multiplier 2, 5x5 and non-square filters (the generic kernel);
- every requantization mode: RELU/NONE at full range (saturation), RELU6 and RELU_N1_TO_1
  (clamp), multipliers >= 1 (shift >= 0) and accumulators that may pass 2^30 (exact);
- inputs at the extremes (all -128, all 127, alternating) besides random ones, weights over
  the whole int8 range (-128 included) and large biases.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from cliutil import qute
from fbmodels import ACTS, ModelBuilder, padding

from codegen.emit import generate
from codegen.host import build_host
from codegen.ops.depthwise import (
    KERNELS_3X3,
    GROUP_WORDS,
    LONE_TAP,
    RQ_EXACT,
    RQ_FAST_CLAMP,
    RQ_FAST_SAT,
    TAP_PAIRS,
    group_channels,
    pack_3x3,
    requant_mode,
)
from codegen.quant import multiply_by_quantized_multiplier
from codegen.reader import read_model
from qute import oracle

SIMD = ("-DQUTE_SIMD_EMULATE",)


def _out_size(pad: str, size: int, k: int, s: int, d: int) -> int:
    eff = (k - 1) * d + 1
    return (size + s - 1) // s if pad == "SAME" else (size + s - eff) // s


def cfg(h, w, c, kernel=(3, 3), stride=(1, 1), pad="SAME", dilation=(1, 1), mult=1, act="RELU", in_zp=-128,
        out_zp=-128, bias=True, per_channel=True, weights="normal", gain=1.0, big_bias=False, batch=1,
        big_multiplier=False, seed=0) -> dict:
    return dict(h=h, w=w, c=c, kernel=list(kernel), stride=list(stride), pad=pad, dilation=list(dilation), mult=mult,
                act=act, in_zp=in_zp, out_zp=out_zp, bias=bias, per_channel=per_channel, weights=weights, gain=gain,
                big_bias=big_bias, batch=batch, big_multiplier=big_multiplier, seed=seed)


def _tensors(c: dict, in_scale=None):
    r = np.random.default_rng(c["seed"])
    kh, kw = c["kernel"]
    oc = c["c"] * c["mult"]
    if c["weights"] == "full":  # the whole int8 range, -128 included
        w = r.integers(-128, 128, (1, kh, kw, oc))
    elif c["weights"] == "extreme":  # only -128 and 127
        w = np.where(r.random((1, kh, kw, oc)) < 0.5, -128, 127)
    else:
        w = r.integers(-127, 128, (1, kh, kw, oc))
    if c["big_multiplier"]:
        w = r.integers(-3, 4, (1, kh, kw, oc))
    w = w.astype(np.int8)
    n_scales = oc if c["per_channel"] else 1
    w_scale = (10 ** r.uniform(-3, -1, n_scales)).astype(np.float32)
    drawn = np.float32(10 ** r.uniform(-2.5, -0.5))
    in_scale = drawn if in_scale is None else np.float32(in_scale)
    typical = np.sqrt(kh * kw) * 74.0 * 73.0
    if c["big_multiplier"]:
        out_scale = np.float32(in_scale * float(np.median(w_scale)) * r.uniform(0.3, 0.9))
    else:
        out_scale = np.float32(in_scale * float(np.median(w_scale)) * typical / 25.0 * c["gain"])
    bias = None
    if c["bias"]:
        spread = 2**27 if c["big_bias"] else typical
        bias = np.round(r.normal(0, spread, oc)).clip(-(2**31), 2**31 - 1).astype(np.int32)
    return w, w_scale, bias, in_scale, out_scale


def dw_model(configs: list[dict]) -> bytes:
    """One independent DEPTHWISE_CONV_2D (own input, own output) per configuration."""
    b = ModelBuilder("qute depthwise variants")
    for i, c in enumerate(configs):
        w, w_scale, bias, in_scale, out_scale = _tensors(c)
        kh, kw = c["kernel"]
        oc = c["c"] * c["mult"]
        oh = _out_size(c["pad"], c["h"], kh, c["stride"][0], c["dilation"][0])
        ow = _out_size(c["pad"], c["w"], kw, c["stride"][1], c["dilation"][1])
        assert oh >= 1 and ow >= 1, c
        x = b.input((c["batch"], c["h"], c["w"], c["c"]), in_scale, c["in_zp"], name=f"in{i}")
        ins = [x, b.const(w, w_scale, 0, name=f"w{i}", quantized_dimension=3)]
        if bias is not None:
            ins.append(b.const(bias, (in_scale * w_scale).astype(np.float32), 0, name=f"b{i}"))
        y = b.output(b.tensor((c["batch"], oh, ow, oc), "int8", out_scale, c["out_zp"], name=f"out{i}"))
        b.op("DEPTHWISE_CONV_2D", ins, [y], version=3, depthMultiplier=c["mult"], padding=padding(c["pad"]),
             strideH=c["stride"][0], strideW=c["stride"][1], dilationHFactor=c["dilation"][0],
             dilationWFactor=c["dilation"][1], fusedActivationFunction=ACTS[c["act"]])
    return b.build()


def samples(tflite: bytes, n_random: int, seed: int) -> list[list[np.ndarray]]:
    """Per sample one array per model input: all -128, all 127, alternating -128/127, then random."""
    specs, _ = oracle.model_io(tflite)
    r = np.random.default_rng(seed)
    out = [[np.full(s, v, np.int8) for s, _ in specs] for v in (-128, 127)]
    out.append([np.where(np.indices(s).sum(axis=0) % 2 == 0, -128, 127).astype(np.int8) for s, _ in specs])
    out += [[r.integers(-128, 128, s, dtype=np.int8) for s, _ in specs] for _ in range(n_random)]
    return out


def mismatches(tflite: bytes, cflags=(), sanitize=False, n_random=3, seed=0) -> list[str]:
    """Per output that differs from TFLM: its index and how many bytes differ."""
    g = read_model(tflite)
    host = build_host(g, sanitize=sanitize, opt="-O2", cflags=tuple(cflags))
    xs = samples(tflite, n_random, seed)
    got = host.run([np.stack([s[i] for s in xs]) for i in range(len(xs[0]))])
    bad = []
    for j, sample in enumerate(xs):
        ref = oracle.run_tflm(tflite, sample)
        for k, (want, have) in enumerate(zip(ref, got)):
            d = int(np.count_nonzero(np.asarray(want).reshape(-1) != np.asarray(have[j]).reshape(-1)))
            if d:
                bad.append(f"sample {j} output {k}: {d} bytes")
    return bad


def _kernels(tflite: bytes) -> list[str]:
    gen = generate(read_model(tflite))
    return [gen.kernels[k] for k in sorted(gen.kernels)]


# ---------------------------------------------------------------------------------------------
# The configurations


def random_3x3(r: np.random.Generator, seed: int) -> dict:
    pick = lambda seq: seq[int(r.integers(len(seq)))]  # noqa: E731
    s = pick((1, 1, 2))
    d = pick((1, 1, 1, 2))
    pad = pick(("SAME", "VALID"))
    h, w = int(r.integers(1, 12)), int(r.integers(1, 12))
    if pad == "VALID":
        h, w = max(h, 2 * d + 1), max(w, 2 * d + 1)
    return cfg(h, w, pick((1, 2, 3, 4, 5, 7, 8, 12, 13, 16, 30, 32, 36, 37, 64)), stride=(s, pick((s, 1, 2))),
               pad=pad, dilation=(d, d), act=pick(("NONE", "RELU", "RELU", "RELU6", "RELU_N1_TO_1")),
               in_zp=int(pick((-128, 0, 127, r.integers(-128, 128)))),
               out_zp=int(pick((-128, 0, 127, r.integers(-128, 128)))), bias=bool(r.random() < 0.85),
               per_channel=bool(r.random() < 0.85), weights=pick(("normal", "normal", "full", "extreme")),
               gain=float(10 ** r.uniform(-0.7, 0.7)), batch=pick((1, 1, 1, 2)), seed=seed)


def mobilenet_like() -> list[dict]:
    """The shapes of the MLPerf Tiny models: KWS's 25x5x64, VWW's stride 1/2 ladders down to 3x3."""
    return [
        cfg(25, 5, 64, seed=1),
        cfg(12, 12, 16, stride=(2, 2), seed=2),
        cfg(6, 6, 32, seed=3),
        cfg(6, 6, 64, stride=(2, 2), seed=4),
        cfg(3, 3, 128, seed=5),
        cfg(3, 3, 40, seed=6, act="RELU6", out_zp=-128),
    ]


def corner_cases() -> list[dict]:
    return [
        # every window touches the padding
        cfg(1, 1, 5, seed=10), cfg(2, 2, 8, seed=11), cfg(1, 3, 4, seed=12), cfg(2, 1, 3, stride=(2, 2), seed=13),
        cfg(2, 2, 1, stride=(2, 2), act="NONE", in_zp=0, out_zp=3, seed=14),
        # windows wholly in the padding (dilation larger than the input)
        cfg(2, 2, 6, dilation=(3, 3), seed=15), cfg(1, 1, 2, dilation=(2, 2), act="RELU6", seed=16),
        # channel counts: < 4, not a multiple of 4, more than one window copy (32), odd large
        cfg(5, 4, 1, seed=17), cfg(5, 4, 2, seed=18), cfg(4, 5, 3, pad="VALID", seed=19), cfg(4, 4, 6, seed=20),
        cfg(5, 5, 33, seed=21), cfg(4, 4, 70, stride=(2, 2), seed=22), cfg(3, 4, 45, pad="VALID", seed=23),
        # more than 256 channels: the zero-point row serves 64 groups at a time
        cfg(3, 4, 262, seed=41), cfg(2, 3, 516, act="RELU6", seed=42), cfg(4, 3, 300, pad="VALID", seed=43),
        # strides differing per axis, stride larger than the window, VALID with stride 2
        cfg(7, 9, 8, stride=(1, 2), seed=24), cfg(9, 7, 12, stride=(3, 3), seed=25),
        cfg(8, 8, 16, stride=(2, 2), pad="VALID", seed=26), cfg(6, 9, 20, stride=(2, 1), dilation=(1, 2), seed=27),
        # batch 3
        cfg(4, 4, 8, batch=3, seed=28),
        # extremes: weights of -128 and 127 only, large biases, zero points at both ends
        cfg(5, 5, 8, weights="extreme", big_bias=True, in_zp=127, out_zp=127, act="NONE", seed=29),
        cfg(5, 5, 12, weights="full", in_zp=-128, out_zp=-128, act="NONE", gain=0.2, seed=30),
        cfg(4, 6, 7, weights="full", big_bias=True, in_zp=0, out_zp=0, act="RELU_N1_TO_1", seed=31),
        # requantization: multipliers >= 1 (shift >= 0: exact mode), per-tensor scale
        cfg(5, 5, 8, big_multiplier=True, act="NONE", out_zp=0, seed=32),
        cfg(4, 4, 9, big_multiplier=True, per_channel=False, act="RELU6", seed=33),
        cfg(6, 5, 16, per_channel=False, act="RELU6", in_zp=5, out_zp=-7, seed=34),
        # the generic kernel: depth multiplier 2, 5x5, non-square, 1x1
        cfg(6, 6, 3, mult=2, seed=35), cfg(5, 7, 4, mult=2, stride=(2, 2), pad="VALID", seed=36),
        cfg(7, 7, 6, kernel=(5, 5), seed=37), cfg(6, 8, 5, kernel=(5, 5), stride=(2, 2), act="RELU6", seed=38),
        cfg(5, 6, 7, kernel=(3, 1), seed=39), cfg(4, 4, 9, kernel=(1, 1), seed=40),
    ]


def random_configs(n: int, seed: int) -> list[dict]:
    r = np.random.default_rng(seed)
    return [random_3x3(r, seed * 1000 + i) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# The requantization arithmetic and the weight stream


def test_fast_requantization_equals_tflm():
    """pack_3x3's fast form (SMMLAR on twice the accumulator, then a shift by e) equals TFLM's
    MultiplyByQuantizedMultiplier plus the output zero point, for accumulators up to 2^30."""
    r = np.random.default_rng(0)
    cases = [(x, m, e, zp) for x in (0, 1, -1, 2**30 - 1, -(2**30) + 1, 12345, -12345)
             for m in (0, 2**30, 2**31 - 1) for e in (1, 2, 7, 22) for zp in (-128, 0, 127)]
    for _ in range(20000):
        e = int(r.integers(1, 23))
        m = int(r.integers(2**30, 2**31))
        x = int(r.integers(-(2**30) + 1, 2**30)) if r.random() < 0.3 else int(r.integers(-(2**20), 2**20))
        if r.random() < 0.3:  # exact ties of the first or second rounding
            x = int(r.integers(-(2**14), 2**14)) * (1 << int(r.integers(0, 16)))
        cases.append((x, m, e, int(r.integers(-128, 128))))
    for x, m, e, zp in cases:
        k = (1 << (e - 1)) + zp * (1 << e)
        x2 = 2 * x
        ra = k + (-1 if x2 < 0 else 0)
        high = (ra * 2**32 + x2 * m + 2**31) >> 32
        assert -(2**31) <= high < 2**31
        want = multiply_by_quantized_multiplier(x, m, -e) + zp if m else zp
        assert high >> e == want, (x, m, e, zp)


def _s16(v: int) -> int:
    return v - 65536 if v >= 32768 else v


def test_weight_stream_layout():
    r = np.random.default_rng(3)
    for channels in (1, 2, 3, 4, 5, 8, 13):
        filt = r.integers(-128, 128, (3, 3, channels)).astype(np.int8)
        acc = r.integers(-1000, 1000, channels)
        mults = r.integers(2**30, 2**31, channels)
        shifts = r.integers(-10, -1, channels)
        for mode in (RQ_FAST_SAT, RQ_EXACT):
            words = pack_3x3(filt, acc, mults, shifts, -5, mode).reshape(-1, GROUP_WORDS).astype(np.int64)
            groups = group_channels(channels)
            assert len(words) == len(groups) == -(-channels // 4)
            scale = 1 if mode == RQ_EXACT else 2
            for gw, lanes in zip(words, groups):
                for lane, c in enumerate(lanes):
                    want = filt.reshape(9, channels)[:, c].astype(np.int64) * scale if c >= 0 else np.zeros(9)
                    got = np.zeros(9, np.int64)
                    for j, (a, b) in enumerate(TAP_PAIRS):
                        word = int(gw[4 + 4 * j + lane]) & 0xFFFFFFFF
                        got[a], got[b] = _s16(word & 0xFFFF), _s16(word >> 16)
                    lone = int(gw[20 + (lane & 1)]) & 0xFFFFFFFF
                    got[LONE_TAP] = _s16((lone >> (16 if lane >= 2 else 0)) & 0xFFFF)
                    assert np.array_equal(got, want), (channels, mode, lane)
                    assert gw[lane] == (acc[c] * scale if c >= 0 else 0)
                    assert gw[22 + 2 * lane] == (mults[c] if c >= 0 else 0)
    # the modes
    filt = np.full((3, 3, 4), 127, np.int8)
    assert requant_mode(filt, np.zeros(4), [2**30] * 4, [-5] * 4, -128, 127) == RQ_FAST_SAT
    assert requant_mode(filt, np.zeros(4), [2**30] * 4, [-5] * 4, -128, 100) == RQ_FAST_CLAMP
    assert requant_mode(filt, np.zeros(4), [2**30] * 4, [0, -5, -5, -5], -128, 127) == RQ_EXACT
    assert requant_mode(filt, np.zeros(4), [2**30] * 4, [-23, -5, -5, -5], -128, 127) == RQ_EXACT
    assert requant_mode(filt, np.zeros(4), [0] * 4, [0, 0, 0, 0], -128, 127) == RQ_FAST_SAT
    assert requant_mode(filt, np.full(4, 2**30 - 9 * 127 * 128), [2**30] * 4, [-5] * 4, -128, 127) == RQ_EXACT
    assert requant_mode(filt, np.full(4, 2**30 - 9 * 127 * 128 - 1), [2**30] * 4, [-5] * 4, -128, 127) == RQ_FAST_SAT


def test_kernel_choice():
    tfl = dw_model([cfg(5, 5, 8, seed=1), cfg(5, 5, 8, stride=(2, 2), pad="VALID", dilation=(2, 2), seed=2),
                    cfg(5, 5, 3, mult=2, seed=3), cfg(7, 7, 4, kernel=(5, 5), seed=4)])
    assert _kernels(tfl) == ["qute_depthwise_conv2d_3x3_s8"] * 2 + ["qute_depthwise_conv2d_s8"] * 2


# ---------------------------------------------------------------------------------------------
# Against TFLM


GROUPS = {
    "mobilenet": mobilenet_like(),
    "corners": corner_cases(),
    "random-a": random_configs(16, 1),
    "random-b": random_configs(16, 2),
}


@pytest.mark.parametrize("path", ["plain", "simd"])
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_matches_tflm(group, path):
    configs = GROUPS[group]
    bad = mismatches(dw_model(configs), cflags=SIMD if path == "simd" else (), seed=len(group))
    assert not bad, f"{bad[:10]}; configs: {json.dumps(configs)}"


def test_sanitizer_simd_path():
    configs = corner_cases() + mobilenet_like()[:2]
    bad = mismatches(dw_model(configs), cflags=SIMD, sanitize=True, n_random=1)
    assert not bad, bad


def test_sanitizer_plain_path():
    configs = corner_cases()[:12] + random_configs(4, 9)
    bad = mismatches(dw_model(configs), sanitize=True, n_random=1)
    assert not bad, bad


def test_every_requant_mode_is_reached():
    """The corner cases reach all three modes of the 3x3 kernel (else the tests above miss one)."""
    gen = generate(read_model(dw_model(corner_cases() + mobilenet_like())))
    modes = {mode for mode, kernel in KERNELS_3X3.items() if kernel in set(gen.kernels.values())}
    assert modes == {RQ_FAST_SAT, RQ_FAST_CLAMP, RQ_EXACT}, modes


# ---------------------------------------------------------------------------------------------
# Under QEMU: the assembly group loop (Cortex-M4 and M7), byte for byte

needs_qemu = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("arm-none-eabi-gcc", "make", "qemu-system-arm")),
    reason="qemu-system-arm or arm-none-eabi-gcc not installed")


def device_model(h: int, w: int, c: int, in_zp: int, variants: list[dict], seed: int) -> bytes:
    """One input (1, h, w, c) read by one DEPTHWISE_CONV_2D per variant (cfg() fields), each with
    its own output: qute build takes single-input models."""
    b = ModelBuilder("qute depthwise variants on the device")
    in_scale = np.float32(0.02)
    x = b.input((1, h, w, c), in_scale, in_zp, name="in")
    for i, v in enumerate(variants):
        conf = cfg(h, w, c, in_zp=in_zp, seed=seed * 100 + i, **v)
        wt, w_scale, bias, _, out_scale = _tensors(conf, in_scale)
        kh, kw = conf["kernel"]
        oh = _out_size(conf["pad"], h, kh, conf["stride"][0], conf["dilation"][0])
        ow = _out_size(conf["pad"], w, kw, conf["stride"][1], conf["dilation"][1])
        ins = [x, b.const(wt, w_scale, 0, name=f"w{i}", quantized_dimension=3)]
        if bias is not None:
            ins.append(b.const(bias, (in_scale * w_scale).astype(np.float32), 0, name=f"b{i}"))
        y = b.output(b.tensor((1, oh, ow, c * conf["mult"]), "int8", out_scale, conf["out_zp"], name=f"out{i}"))
        b.op("DEPTHWISE_CONV_2D", ins, [y], version=3, depthMultiplier=conf["mult"], padding=padding(conf["pad"]),
             strideH=conf["stride"][0], strideW=conf["stride"][1], dilationHFactor=conf["dilation"][0],
             dilationWFactor=conf["dilation"][1], fusedActivationFunction=ACTS[conf["act"]])
    return b.build()


S2 = {"stride": (2, 2)}
DEVICE_MODELS = {
    # channels a multiple of 4 that fit one window chunk: edge pixels copy spans
    "span": (7, 6, 8, -128, [
        {}, {"act": "RELU6", **S2}, {"pad": "VALID", "act": "NONE", "out_zp": 5}, {"dilation": (2, 2)},
        {"big_multiplier": True, "act": "NONE", "out_zp": 0}, {"pad": "VALID", "act": "RELU_N1_TO_1", **S2},
        {"weights": "extreme", "big_bias": True, "act": "NONE"}, {"kernel": (5, 5)}, {"mult": 2, **S2}]),
    # 70 channels: two window chunks and the overlapping last group
    "chunked": (5, 5, 70, 3, [
        {}, {"act": "RELU6", **S2}, {"dilation": (1, 2), "act": "NONE", "out_zp": -3},
        {"big_multiplier": True, "act": "RELU"}, {"weights": "full", "pad": "VALID"}]),
    # channels not a multiple of 4 with an even number of whole groups: interior pixels at odd
    # addresses (the two-group loop must not take them)
    "odd": (5, 6, 10, -128, [{}, {"act": "RELU6", "out_zp": -90}, {"pad": "VALID"}]),
    # fewer channels than a word
    "few": (6, 5, 3, 0, [{}, {"act": "RELU6", "pad": "VALID", **S2}, {"big_multiplier": True, "act": "NONE"}]),
    # every window touches the padding; 132 channels: chunks of 16 groups and one of 1
    "tiny": (2, 2, 132, -128, [{}, {"act": "RELU6", **S2}, {"weights": "extreme", "act": "NONE", "out_zp": 127}]),
    # more than 256 channels, not a multiple of 4
    "wide": (3, 3, 262, -128, [{}, {"act": "RELU6", "out_zp": -100}]),
    # MLPerf-like: many interior pixels per row, runs of pixels
    "rows": (9, 11, 16, -128, [{}, {"act": "RELU6"}, S2, {"pad": "VALID", "act": "NONE", "gain": 0.3}]),
}


def _device_inputs(shape, n):
    """All -128, all 127, alternating, then random: n samples in all."""
    r = np.random.default_rng(1)
    fixed = [np.full(shape, -128), np.full(shape, 127), np.where(np.indices(shape).sum(axis=0) % 2, 127, -128)]
    rand = [r.integers(-128, 128, shape) for _ in range(max(0, n - len(fixed)))]
    return np.stack(fixed + rand)[:n].astype(np.int8)


@needs_qemu
@pytest.mark.parametrize("board", ["mps2-an500", "mps2-an386"])
def test_device_matches_tflm(board, tmp_path, monkeypatch):
    from qute import cli

    monkeypatch.setattr(oracle, "random_inputs",
                        lambda tflite, n, seed: [_device_inputs(oracle.model_io(tflite)[0][0][0][1:], n)])
    for name, (h, w, c, zp, variants) in DEVICE_MODELS.items():
        model = tmp_path / f"{name}.tflite"
        model.write_bytes(device_model(h, w, c, zp, variants, seed=len(name)))
        kernels = set(_kernels(model.read_bytes()))
        assert kernels & set(KERNELS_3X3.values()), (name, kernels)
        out = tmp_path / f"build-{name}"
        assert cli.main(["build", "--board", board, "--emulator", "--samples", "6", "-o", str(out), str(model)]) == 0
        p = qute("run", "--board", board, out)
        assert p.returncode == 0 and "bit-exact: yes" in p.stdout, f"{name}: {p.stdout}{p.stderr}"
