"""Seeded, randomised int8 models that reach every shape class the kernel variants specialise on.

The conv, depthwise and fully-connected kernels come in compile-time variants (1x1, im2col, 3x3
depthwise, SIMD blocking over 4 channels, ...), chosen by the code generator per op from its
shape. ``draw(seed)`` draws one configuration per *shape class* (``CLASSES``: 1x1 convolutions
with input channels a multiple of 4 or not, KWS's 10x4 stride-2 first layer on one channel, RGB's
3x3 first layer, 5x5, depthwise with multiplier 1 and 2, windows that are all border windows, fully
connected with odd units and batch > 1, a residual ADD, AVERAGE_POOL, MLPerf-Tiny-like chains...);
the class fixes what the variants key on, the seed draws the rest (sizes, channel counts, padding,
quantization, weights).

``build(seed)`` packs all of one seed's classes into ONE single-input model, each class a branch
from the model input to its own model output, so one firmware build and one QEMU run cover them
all (``qute build`` takes single-input models). A branch whose input shape differs from the
model's starts with an *adapter*: a CONV_2D whose weights are one-hot at tap (0, 0) (weight 1,
weight scale 1.0, output quantization = input quantization, no bias), so its multiplier is exactly
1.0 and it copies input values unchanged (extremes -128/127 included) into the branch's shape:
VALID padding and a stride pick rows and columns, a second (zero) tap dilated across the rest
crops, the one-hot rows pick channels. The model input has as many channels as the widest branch
input, so a branch never sees a channel twice (only a fully-connected input whose length does not
factor into the model's shape repeats some). Adapters are not ops under test; ``VariantModel.ops``
names the ops under test by their output tensor's name. A fault in the adapters' own kernel shows
in every branch behind them: after a mismatch, ``adapter_report`` tells the two cases apart.

The models are written as flatbuffers (tests/fbmodels.py): no TensorFlow, a model in milliseconds,
and quantizations the converter never emits (per-tensor conv filters, weights of -128, zero points
at the ends of the range, batch > 1).

    m = build(0)                     # VariantModel: tflite, branches (JSON configs), ops
    x = sample_inputs(m, 8, seed=0)  # (N, H, W, C) int8: 8 random + all -128, all 127, checkerboards
    ref = reference(m, x)            # TFLite Micro, one (N, size) array per branch
    total, diffs = compare(m, ref, run_host(m, x, folder, simd=True, sanitize=True))
    run_firmware(m, x, "mps2-an386", folder)   # qute build --emulator --inputs uart, under QEMU
    declared_variants(), kernels_used(m)       # the kernel headers' variants; which ones m reaches

A failing branch replays from its configuration (``describe``): ``build(seed, [config])``.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from fbmodels import ACTS, ModelBuilder, padding

# Activation cycle: every seed gives each of NONE, RELU, RELU6 to some conv class.
_ACT_CYCLE = ("NONE", "RELU", "RELU6")

# Op versions as the converter writes them for int8 (the generator and TFLM accept any).
_VERSION = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "ADD": 2, "AVERAGE_POOL_2D": 2, "MAX_POOL_2D": 2,
            "RESHAPE": 1}


# ---------------------------------------------------------------------------------------------
# Sampling helpers


def _rng(seed: int, name: str) -> np.random.Generator:
    """Each class draws from its own stream: adding a class leaves the others' draws unchanged."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _pick(r, seq):
    return seq[int(r.integers(len(seq)))]


def _int(r, lo: int, hi: int) -> int:
    return int(r.integers(lo, hi + 1))


def _mul4(r, lo: int, hi: int) -> int:
    return 4 * _int(r, max(1, (lo + 3) // 4), hi // 4)


def _not4(r, lo: int, hi: int) -> int:
    return _pick(r, [v for v in range(lo, hi + 1) if v % 4])


def _odd(r, lo: int, hi: int) -> int:
    return _pick(r, [v for v in range(lo, hi + 1) if v % 2])


def _quant(r, act: str | None = None, per_channel: bool | None = None) -> dict:
    """The quantization side of one weighted op's configuration."""
    return {
        "activation": act or _pick(r, ("NONE", "RELU", "RELU6")),
        "per_channel": bool(r.random() < 0.8) if per_channel is None else per_channel,
        "bias": bool(r.random() < 0.85),
        "out_zp": int(_pick(r, (-128, 0, _int(r, -128, 127), _int(r, -128, 127)))),
        # output scale relative to the typical accumulator: < 1 saturates more, > 1 squeezes
        "gain": round(float(10 ** r.uniform(-0.6, 0.6)), 4),
        "wseed": int(r.integers(2**31)),
        "w_min128": bool(r.random() < 0.3),  # a few weights of -128 (the converter writes -127..127)
        "zero_channel": bool(r.random() < 0.1),
    }


def _fit(size: int, k: int, pad: str, dil: int = 1) -> int:
    """A spatial size for a window of k taps (dilation dil): VALID needs the window to fit."""
    need = (k - 1) * dil + 1
    return max(size, need) if pad == "VALID" else size


# ---------------------------------------------------------------------------------------------
# The shape classes. Each sampler returns one branch configuration (plain JSON).


def _conv(r, in_shape, kernel, stride=(1, 1), pad="SAME", dilation=(1, 1), out_c=None, groups=1, **q) -> dict:
    h, w, c = in_shape
    h = _fit(h, kernel[0], pad, dilation[0])
    w = _fit(w, kernel[1], pad, dilation[1])
    return {"kind": "conv", "in_shape": [h, w, c], "kernel": list(kernel), "stride": list(stride), "padding": pad,
            "dilation": list(dilation), "groups": groups,
            "out_c": out_c if out_c is not None else _int(r, 1, 24), **_quant(r, **q)}


def _dw(r, in_shape, kernel, stride=(1, 1), pad="SAME", dilation=(1, 1), mult=1, **q) -> dict:
    h, w, c = in_shape
    h = _fit(h, kernel[0], pad, dilation[0])
    w = _fit(w, kernel[1], pad, dilation[1])
    return {"kind": "depthwise", "in_shape": [h, w, c], "kernel": list(kernel), "stride": list(stride),
            "padding": pad, "dilation": list(dilation), "mult": mult, **_quant(r, **q)}


def _fc(r, batch, depth, units, **q) -> dict:
    q.setdefault("per_channel", False)  # the converter's Dense weights are per tensor
    return {"kind": "fc", "batch": batch, "depth": depth, "units": units, **_quant(r, **q)}


def _hw(r, lo=3, hi=10):
    return _int(r, lo, hi), _int(r, lo, hi)


def _pad(r):
    return _pick(r, ("SAME", "VALID"))


# name -> (family, sampler(r, act)); act is the class's activation from the cycle (conv classes)
CLASSES: dict[str, tuple[str, Callable]] = {}


def _cls(name: str, family: str):
    def deco(fn):
        CLASSES[name] = (family, fn)
        return fn
    return deco


# --- CONV_2D 1x1 ----------------------------------------------------------------------------
@_cls("conv1x1_s1_ic4", "conv")
def _(r, act):
    return _conv(r, (*_hw(r, 1, 8), _mul4(r, 4, 32)), (1, 1), pad=_pad(r), out_c=_odd(r, 1, 31), act=act,
                 per_channel=True)


@_cls("conv1x1_s1_icodd", "conv")
def _(r, act):
    return _conv(r, (*_hw(r, 1, 8), _not4(r, 1, 30)), (1, 1), pad=_pad(r), out_c=_odd(r, 1, 31), act=act)


@_cls("conv1x1_s2_ic4", "conv")
def _(r, act):
    return _conv(r, (*_hw(r, 2, 9), _mul4(r, 4, 32)), (1, 1), stride=(2, 2), pad=_pad(r), out_c=_int(r, 1, 24),
                 act=act, per_channel=True)


@_cls("conv1x1_s2_icodd", "conv")
def _(r, act):
    return _conv(r, (*_hw(r, 2, 9), _not4(r, 1, 30)), (1, 1), stride=(2, 2), pad=_pad(r), out_c=_odd(r, 1, 31),
                 act=act)


@_cls("conv1x1_pertensor", "conv")
def _(r, act):
    return _conv(r, (*_hw(r, 1, 6), _int(r, 1, 24)), (1, 1), pad="SAME", out_c=_int(r, 1, 16), act=act,
                 per_channel=False)


# --- CONV_2D KxK ----------------------------------------------------------------------------
@_cls("conv3x3_same_s1", "conv")
def _(r, act):
    return _conv(r, (*_hw(r), _int(r, 8, 40)), (3, 3), pad="SAME", act=act)


@_cls("conv3x3_valid_s1", "conv")
def _(r, act):
    return _conv(r, (*_hw(r), _int(r, 8, 40)), (3, 3), pad="VALID", act=act)


@_cls("conv3x3_same_s2", "conv")
def _(r, act):
    return _conv(r, (*_hw(r, 3, 11), _int(r, 8, 40)), (3, 3), stride=(2, 2), pad="SAME", act=act)


@_cls("conv3x3_valid_s2", "conv")
def _(r, act):
    return _conv(r, (*_hw(r, 3, 11), _int(r, 8, 40)), (3, 3), stride=(2, 2), pad="VALID", act=act)


@_cls("conv10x4_s2_ic1_kws", "conv")  # MLPerf Tiny KWS (DS-CNN) first layer: 49x10x1, 10x4, stride 2
def _(r, act):
    return _conv(r, (_int(r, 10, 22), _int(r, 4, 10), 1), (10, 4), stride=(2, 2), pad="SAME",
                 out_c=_int(r, 4, 16), act=act)


@_cls("conv3x3_ic3_rgb", "conv")  # MLPerf Tiny ResNet-8 / VWW first layer on RGB
def _(r, act):
    s = _pick(r, (1, 2))
    return _conv(r, (*_hw(r, 4, 12), 3), (3, 3), stride=(s, s), pad="SAME", out_c=_int(r, 4, 16), act=act)


@_cls("conv5x5", "conv")
def _(r, act):
    return _conv(r, (*_hw(r, 3, 9), _int(r, 1, 12)), (5, 5), stride=(_pick(r, (1, 2)),) * 2, pad=_pad(r), act=act)


@_cls("conv1x3", "conv")
def _(r, act):
    k = _pick(r, ((1, 3), (3, 1)))
    return _conv(r, (*_hw(r, 2, 9), _int(r, 2, 20)), k, pad=_pad(r), act=act)


@_cls("conv10x4_icN", "conv")
def _(r, act):
    return _conv(r, (_int(r, 6, 14), _int(r, 3, 8), _int(r, 2, 9)), (10, 4), stride=(_pick(r, (1, 2)),) * 2,
                 pad="SAME", act=act)


@_cls("conv3x3_border_only", "conv")  # 1x1 or 2x2 input: every window reaches into the padding
def _(r, act):
    s = _pick(r, (1, 2))
    return _conv(r, (_int(r, 1, 2), _int(r, 1, 2), _int(r, 1, 20)), (3, 3), stride=(s, s), pad="SAME", act=act)


@_cls("conv3x3_dilated", "conv")
def _(r, act):
    return _conv(r, (*_hw(r, 3, 9), _int(r, 1, 16)), (3, 3), dilation=(2, 2), pad=_pad(r), act=act)


@_cls("conv3x3_grouped", "conv")
def _(r, act):
    g = _pick(r, (2, 3))
    fc = _int(r, 2, 8)
    return _conv(r, (*_hw(r, 3, 8), fc * g), (3, 3), pad=_pad(r), groups=g, out_c=g * _int(r, 1, 5), act=act)


@_cls("conv3x3_batch2", "conv")  # batch 2, reshaped from one image of twice the height
def _(r, act):
    c = _conv(r, (*_hw(r, 2, 6), _int(r, 4, 16)), (3, 3), stride=(_pick(r, (1, 2)),) * 2, pad=_pad(r), act=act)
    c["batch"] = 2
    return c


# --- DEPTHWISE_CONV_2D ----------------------------------------------------------------------
@_cls("dw3x3_s1_same_c4", "depthwise")
def _(r, act):
    return _dw(r, (*_hw(r), _mul4(r, 4, 48)), (3, 3), pad="SAME", act=act)


@_cls("dw3x3_s1_valid_codd", "depthwise")
def _(r, act):
    return _dw(r, (*_hw(r), _not4(r, 1, 45)), (3, 3), pad="VALID", act=act)


@_cls("dw3x3_exact_requant", "depthwise")  # requantization factor >= 0.5 (shift >= 0): the exact entry point
def _(r, act):
    c = _dw(r, (*_hw(r), _int(r, 1, 24)), (3, 3), pad=_pad(r), act=act)
    c["gain"] = round(float(10 ** r.uniform(-3.3, -2.7)), 6)  # a tiny output scale: most outputs saturate
    return c


@_cls("dw3x3_few_channels", "depthwise")  # fewer channels than one SIMD word of 4
def _(r, act):
    s = _pick(r, (1, 2))
    return _dw(r, (*_hw(r, 2, 9), _int(r, 1, 3)), (3, 3), stride=(s, s), pad=_pad(r), act=act)


@_cls("dw3x3_s2_same", "depthwise")
def _(r, act):
    return _dw(r, (*_hw(r, 3, 11), _int(r, 1, 40)), (3, 3), stride=(2, 2), pad="SAME", act=act)


@_cls("dw3x3_s2_valid", "depthwise")
def _(r, act):
    return _dw(r, (*_hw(r, 3, 11), _int(r, 1, 40)), (3, 3), stride=(2, 2), pad="VALID", act=act)


@_cls("dw3x3_mult2", "depthwise")
def _(r, act):
    s = _pick(r, (1, 2))
    return _dw(r, (*_hw(r), _int(r, 1, 16)), (3, 3), stride=(s, s), pad=_pad(r), mult=2, act=act)


@_cls("dw5x5", "depthwise")
def _(r, act):
    return _dw(r, (*_hw(r, 3, 10), _int(r, 1, 24)), (5, 5), stride=(_pick(r, (1, 2)),) * 2, pad=_pad(r), act=act)


@_cls("dw3x3_1x1_input", "depthwise")  # every window is a border window
def _(r, act):
    return _dw(r, (1, 1, _int(r, 1, 40)), (3, 3), stride=(_pick(r, (1, 2)),) * 2, pad="SAME", act=act)


@_cls("dw3x3_2x2_input", "depthwise")
def _(r, act):
    return _dw(r, (2, 2, _int(r, 1, 40)), (3, 3), stride=(_pick(r, (1, 2)),) * 2, pad="SAME",
               mult=_pick(r, (1, 2)), act=act)


@_cls("dw3x3_dilated", "depthwise")
def _(r, act):
    return _dw(r, (*_hw(r, 3, 9), _int(r, 1, 20)), (3, 3), dilation=(2, 2), pad=_pad(r), act=act)


@_cls("dw_nonsquare", "depthwise")
def _(r, act):
    k = _pick(r, ((1, 3), (3, 1), (5, 3), (10, 4)))
    return _dw(r, (*_hw(r, 2, 10), _int(r, 1, 24)), k, stride=(_pick(r, (1, 2)),) * 2, pad=_pad(r), act=act)


@_cls("dw3x3_mult_many", "depthwise")  # one or two input channels, many outputs each
def _(r, act):
    return _dw(r, (*_hw(r, 2, 8), _int(r, 1, 2)), (3, 3), pad=_pad(r), mult=_int(r, 3, 9), act=act)


# --- FULLY_CONNECTED ------------------------------------------------------------------------
@_cls("fc_d4_b1", "fc")
def _(r, act):
    return _fc(r, 1, _mul4(r, 4, 128), _odd(r, 1, 33), act=act)


@_cls("fc_dodd_b1", "fc")
def _(r, act):
    return _fc(r, 1, _not4(r, 1, 130), _odd(r, 1, 33), act=act)


@_cls("fc_batch", "fc")
def _(r, act):
    return _fc(r, _int(r, 2, 4), _int(r, 1, 70), _int(r, 1, 20), act=act)


@_cls("fc_long", "fc")  # MLPerf Tiny anomaly-detection widths (640, 128)
def _(r, act):
    return _fc(r, 1, _int(r, 120, 640), _int(r, 2, 24), act=act)


@_cls("fc_perchannel", "fc")
def _(r, act):
    return _fc(r, _int(r, 1, 2), _int(r, 1, 100), _int(r, 1, 20), act=act, per_channel=True)


# --- ADD, AVERAGE_POOL_2D and MLPerf-Tiny-like chains ---------------------------------------
@_cls("add_residual", "add")  # x + conv3x3(x), ResNet's skip connection
def _(r, act):
    h, w = _hw(r, 2, 8)
    c = _int(r, 1, 24)
    return {"kind": "add", "in_shape": [h, w, c],
            "conv": _conv(r, (h, w, c), (3, 3), pad="SAME", out_c=c),
            "activation": act, "out_zp": _int(r, -128, 127), "gain": round(float(10 ** r.uniform(-0.3, 0.3)), 4)}


def _any_window(r, h, w):
    """A pooling window and stride of 1-3 each, any padding; the input grown to hold the window."""
    k = (_int(r, 1, 3), _int(r, 1, 3))
    s, pad = (_int(r, 1, 3), _int(r, 1, 3)), _pad(r)
    return k, s, pad, max(h, k[0]), max(w, k[1])


@_cls("avgpool", "avgpool")
def _(r, act):
    h, w = _hw(r, 1, 10)
    if r.random() < 0.5:  # global, as KWS and ResNet-8 end
        k, s, pad = (h, w), (1, 1), "VALID"
    else:
        k, s, pad, h, w = _any_window(r, h, w)
    return {"kind": "avgpool", "in_shape": [h, w, _int(r, 1, 32)], "kernel": list(k), "stride": list(s),
            "padding": pad, "activation": act}


@_cls("maxpool", "maxpool")  # 2x2/2 as QUTE's pooled backbone, global as its heads, or any window
def _(r, act):
    h, w = _hw(r, 1, 10)
    shape = r.random()
    if shape < 0.35:
        k, s, pad = (h, w), (1, 1), "VALID"
    elif shape < 0.7:
        k, s, pad = (2, 2), (2, 2), "VALID"
        h, w = max(h, 2), max(w, 2)
    else:
        k, s, pad, h, w = _any_window(r, h, w)
    # channels: whole words, and tails of 1-3
    return {"kind": "maxpool", "in_shape": [h, w, _int(r, 1, 40)], "kernel": list(k), "stride": list(s),
            "padding": pad, "activation": act}


@_cls("chain_dscnn", "chain")  # KWS DS-CNN: conv 10x4/2, [dw 3x3, conv 1x1] x2, global pool, FC
def _(r, act):
    h, w = _int(r, 12, 22), _int(r, 6, 10)
    f = _int(r, 4, 16)
    return {"kind": "chain", "in_shape": [h, w, 1], "steps": [
        _conv(r, (h, w, 1), (10, 4), stride=(2, 2), pad="SAME", out_c=f, act="RELU"),
        _dw(r, (0, 0, f), (3, 3), pad="SAME", act="RELU"),
        _conv(r, (0, 0, f), (1, 1), pad="SAME", out_c=f, act="RELU"),
        _dw(r, (0, 0, f), (3, 3), pad="SAME", act="RELU"),
        _conv(r, (0, 0, f), (1, 1), pad="SAME", out_c=f, act="RELU"),
        {"kind": "avgpool", "global": True, "activation": "NONE"},
        _fc(r, 1, f, _int(r, 2, 12), act="NONE"),
    ]}


@_cls("chain_resnet", "chain")  # ResNet-8 block: conv3x3, conv3x3, + x, ReLU, global pool, FC
def _(r, act):
    h, w = _hw(r, 3, 8)
    c = _int(r, 3, 16)
    return {"kind": "chain", "in_shape": [h, w, c], "steps": [
        _conv(r, (h, w, c), (3, 3), pad="SAME", out_c=c, act="RELU"),
        _conv(r, (h, w, c), (3, 3), pad="SAME", out_c=c, act="NONE"),
        {"kind": "add", "with": "input", "activation": "RELU", "out_zp": -128,
         "gain": round(float(10 ** r.uniform(-0.3, 0.3)), 4)},
        {"kind": "avgpool", "global": True, "activation": "NONE"},
        _fc(r, 1, c, _int(r, 2, 12), act="NONE"),
    ]}


FAMILY_OPCODES = {"conv": "CONV_2D", "depthwise": "DEPTHWISE_CONV_2D", "fc": "FULLY_CONNECTED", "add": "ADD",
                  "avgpool": "AVERAGE_POOL_2D", "maxpool": "MAX_POOL_2D"}


def draw(seed: int) -> list[dict]:
    """One configuration per shape class for this seed; each carries its class name."""
    out = []
    for i, (name, (family, sample)) in enumerate(CLASSES.items()):
        r = _rng(seed, name)
        act = _ACT_CYCLE[(i + seed) % len(_ACT_CYCLE)]
        c = sample(r, act)
        out.append({"name": name, "family": family, **c})
    return json.loads(json.dumps(out))  # plain JSON: replayable, comparable


# ---------------------------------------------------------------------------------------------
# Building the flatbuffer


@dataclass
class VariantModel:
    seed: int
    tflite: bytes = field(repr=False)
    input_shape: tuple  # (1, H, W, C)
    branches: list[dict]  # draw(seed), each with "output": its model output's tensor name
    ops: dict[str, dict] = field(default_factory=dict)  # output tensor name of each op under test -> about it
    adapters: list[dict] = field(default_factory=list)  # build(expose_adapters=True) only

    def branch(self, name: str) -> dict:
        return next(b for b in self.branches if b["name"] == name)


def _out_size(pad: str, size: int, k: int, s: int, d: int) -> int:
    eff = (k - 1) * d + 1
    return (size + s - 1) // s if pad == "SAME" else (size + s - eff) // s


class _Net:
    """A ModelBuilder that remembers each tensor's shape and quantization."""

    def __init__(self, description: str):
        self.b = ModelBuilder(description)
        self.shape: dict[int, tuple] = {}
        self.q: dict[int, tuple[float, int]] = {}
        # rough rms of (q - zero point) of each tensor, so a chain's later ops get output scales
        # that keep their values spread instead of saturated or squeezed onto a few codes
        self.dev: dict[int, float] = {}
        self.ops: dict[str, dict] = {}
        self.adapters: dict[int, tuple] = {}  # adapter output -> (stride h, stride w, channels picked)

    def act(self, shape, scale, zp, name, dev: float = 74.0) -> int:
        t = self.b.tensor(shape, "int8", np.float32(scale), int(zp), name=name)
        self.shape[t], self.q[t] = tuple(shape), (float(np.float32(scale)), int(zp))
        self.dev[t] = float(dev)
        return t

    def input(self, shape, scale, zp) -> int:
        # inputs uniform over int8: rms of (x - zp)
        t = self.act(shape, scale, zp, "input", dev=np.sqrt(74.0**2 + (0.5 + zp) ** 2))
        self.b.inputs.append(t)
        return t

    @staticmethod
    def _out_dev(c: dict) -> float:
        """The rms of (q - zp) an output scale of acc_rms / 40 * gain gives, after the activation."""
        d = 40.0 / c["gain"]
        return min(d / np.sqrt(2) if c["activation"] != "NONE" else d, 110.0)

    def note(self, t: int, branch: str, opcode: str, role: str, config: dict) -> None:
        self.ops[self.b.tensors[t].name] = {"branch": branch, "opcode": opcode, "role": role, "config": config}

    # --- adapter: copy values into another shape, unchanged
    def adapt(self, x: int, shape, r, name: str) -> int:
        _, H, W, C = self.shape[x]
        h, w, c = shape
        if (h, w, c) == (H, W, C):
            return x
        assert h <= H and w <= W, (shape, self.shape[x])

        def geo(size, want):
            """(stride, taps, dilation) whose VALID output has exactly `want` rows, starting at 0:
            the stride spreads the picked rows, a second (zero) tap dilated over the rest crops."""
            if want == 1:
                return size, 1, 1
            s = (size - 1) // (want - 1)
            rest = size - 1 - (want - 1) * s
            return (s, 1, 1) if rest == 0 else (s, 2, rest)
        sh, kh, dh = geo(H, h)
        sw, kw, dw = geo(W, w)
        perm = np.concatenate([r.permutation(C) for _ in range(-(-c // C))])[:c]
        wt = np.zeros((c, kh, kw, C), np.int8)
        wt[np.arange(c), 0, 0, perm] = 1
        scale, zp = self.q[x]
        wi = self.b.const(wt, np.ones(1, np.float32), 0, name=f"{name}/w")
        y = self.act((1, h, w, c), scale, zp, name, self.dev[x])
        self.b.op("CONV_2D", [x, wi], [y], version=_VERSION["CONV_2D"], padding=padding("VALID"), strideH=sh,
                  strideW=sw, dilationHFactor=dh, dilationWFactor=dw, fusedActivationFunction=ACTS["NONE"])
        self.adapters[y] = (sh, sw, [int(v) for v in perm])
        return y

    def reshape(self, x: int, shape, name: str) -> int:
        scale, zp = self.q[x]
        s = self.b.const(np.array(shape, np.int32), name=f"{name}/shape")
        y = self.act(shape, scale, zp, name, self.dev[x])
        self.b.op("RESHAPE", [x, s], [y], version=1, newShape=np.array(shape, np.int32))
        return y

    # --- weighted ops
    def _weights(self, c: dict, shape, chan_axis: int, taps: int, x: int):
        """int8 weights, their scales, the bias and the output scale for one op."""
        r = np.random.default_rng(c["wseed"])
        n = shape[chan_axis]
        w = r.integers(-127, 128, shape).astype(np.int8)
        if c["w_min128"]:
            flat = w.reshape(-1)
            flat[r.integers(0, flat.size, max(1, flat.size // 50))] = -128
        if c["zero_channel"]:
            idx = [slice(None)] * len(shape)
            idx[chan_axis] = int(r.integers(n))
            w[tuple(idx)] = 0
        base = 10 ** r.uniform(-3, -1)
        w_scale = (base * 10 ** r.uniform(-0.4, 0.4, n) if c["per_channel"] else np.array([base])).astype(np.float32)
        in_scale = self.q[x][0]
        w_rms = float(np.sqrt(np.mean(w.astype(np.float64) ** 2))) or 1.0
        acc_rms = np.sqrt(taps) * self.dev[x] * w_rms
        out_scale = np.float32(in_scale * float(np.median(w_scale)) * acc_rms / 40.0 * c["gain"])
        bias = None
        if c["bias"]:
            bias = np.clip(np.round(r.normal(0, acc_rms * 0.5, n)), -(2**31), 2**31 - 1).astype(np.int32)
        return w, w_scale, bias, out_scale

    def conv(self, x: int, c: dict, name: str) -> int:
        n, H, W, C = self.shape[x]
        kh, kw = c["kernel"]
        g = c.get("groups", 1)
        fc = C // g
        oc = c["out_c"]
        w, w_scale, bias, out_scale = self._weights(c, (oc, kh, kw, fc), 0, kh * kw * fc, x)
        oh = _out_size(c["padding"], H, kh, c["stride"][0], c["dilation"][0])
        ow = _out_size(c["padding"], W, kw, c["stride"][1], c["dilation"][1])
        in_scale = self.q[x][0]
        ins = [x, self.b.const(w, w_scale, 0, name=f"{name}/w", quantized_dimension=0)]
        if bias is not None:
            ins.append(self.b.const(bias, (np.float32(in_scale) * w_scale).astype(np.float32), 0, name=f"{name}/b"))
        y = self.act((n, oh, ow, oc), out_scale, c["out_zp"], name, self._out_dev(c))
        self.b.op("CONV_2D", ins, [y], version=6 if g > 1 else _VERSION["CONV_2D"], padding=padding(c["padding"]),
                  strideH=c["stride"][0], strideW=c["stride"][1], dilationHFactor=c["dilation"][0],
                  dilationWFactor=c["dilation"][1], fusedActivationFunction=ACTS[c["activation"]])
        return y

    def depthwise(self, x: int, c: dict, name: str) -> int:
        n, H, W, C = self.shape[x]
        kh, kw = c["kernel"]
        oc = C * c["mult"]
        w, w_scale, bias, out_scale = self._weights(c, (1, kh, kw, oc), 3, kh * kw, x)
        oh = _out_size(c["padding"], H, kh, c["stride"][0], c["dilation"][0])
        ow = _out_size(c["padding"], W, kw, c["stride"][1], c["dilation"][1])
        in_scale = self.q[x][0]
        ins = [x, self.b.const(w, w_scale, 0, name=f"{name}/w", quantized_dimension=3)]
        if bias is not None:
            ins.append(self.b.const(bias, (np.float32(in_scale) * w_scale).astype(np.float32), 0, name=f"{name}/b"))
        y = self.act((n, oh, ow, oc), out_scale, c["out_zp"], name, self._out_dev(c))
        self.b.op("DEPTHWISE_CONV_2D", ins, [y], version=_VERSION["DEPTHWISE_CONV_2D"],
                  padding=padding(c["padding"]), strideH=c["stride"][0], strideW=c["stride"][1],
                  dilationHFactor=c["dilation"][0], dilationWFactor=c["dilation"][1], depthMultiplier=c["mult"],
                  fusedActivationFunction=ACTS[c["activation"]])
        return y

    def fc(self, x: int, c: dict, name: str) -> int:
        size = int(np.prod(self.shape[x]))
        depth = c["depth"]
        batch = size // depth
        w, w_scale, bias, out_scale = self._weights(c, (c["units"], depth), 0, depth, x)
        in_scale = self.q[x][0]
        ins = [x, self.b.const(w, w_scale, 0, name=f"{name}/w", quantized_dimension=0)]
        if bias is not None:
            ins.append(self.b.const(bias, (np.float32(in_scale) * w_scale).astype(np.float32), 0, name=f"{name}/b"))
        y = self.act((batch, c["units"]), out_scale, c["out_zp"], name, self._out_dev(c))
        self.b.op("FULLY_CONNECTED", ins, [y], version=_VERSION["FULLY_CONNECTED"],
                  fusedActivationFunction=ACTS[c["activation"]])
        return y

    def add(self, a: int, b: int, c: dict, name: str) -> int:
        (sa, _), (sb, _) = self.q[a], self.q[b]
        real_rms = np.hypot(sa * self.dev[a], sb * self.dev[b])
        # never below TFLM's limit for ADD (output scale > 2 * max input scale / 2^20)
        out_scale = np.float32(max(real_rms / 40.0 * c["gain"], 4 * max(sa, sb) / 2**20))
        y = self.act(self.shape[a], out_scale, c["out_zp"], name, self._out_dev(c))
        self.b.op("ADD", [a, b], [y], version=_VERSION["ADD"], fusedActivationFunction=ACTS[c["activation"]])
        return y

    def pool(self, x: int, c: dict, name: str, opcode: str = "AVERAGE_POOL_2D") -> int:
        n, H, W, C = self.shape[x]
        if c.get("global"):
            k, s, pad = (H, W), (1, 1), "VALID"
        else:
            k, s, pad = c["kernel"], c["stride"], c["padding"]
        oh, ow = _out_size(pad, H, k[0], s[0], 1), _out_size(pad, W, k[1], s[1], 1)
        scale, zp = self.q[x]
        y = self.act((n, oh, ow, C), scale, zp, name, self.dev[x] * 0.7)
        self.b.op(opcode, [x], [y], version=_VERSION[opcode], padding=padding(pad),
                  strideH=s[0], strideW=s[1], filterHeight=k[0], filterWidth=k[1],
                  fusedActivationFunction=ACTS[c["activation"]])
        return y


def _branch_input_shape(c: dict) -> tuple[int, int, int]:
    """The (h, w, c) the adapter must deliver for this branch (before any reshape); a fully
    connected branch's rows are laid out by _rows_shape once the model input is known."""
    if c["kind"] == "fc":
        return 1, 1, 1
    h, w, ch = c["in_shape"]
    return (2 * h if c.get("batch") == 2 else h), w, ch


def _rows_shape(total: int, H: int, W: int, C: int) -> tuple[int, int, int]:
    """(h, w, c) holding `total` values with h <= H, w <= W and as few repeated input channels as
    possible (c <= C when `total` factors so), for the adapter in front of a FULLY_CONNECTED."""
    best = None
    for h in range(1, H + 1):
        for w in range(1, W + 1):
            if total % (h * w) == 0:
                c = total // (h * w)
                key = (c > C, -c if c <= C else c)  # fits without repeats first, then the most channels
                if best is None or key < best[0]:
                    best = (key, (h, w, c))
    return best[1]


def build(seed: int, branches: list[dict] | None = None, expose_adapters: bool = False) -> VariantModel:
    """All of draw(seed)'s classes (or the given branches) as parallel branches of one model.

    expose_adapters: the adapters' outputs become model outputs too (after the branches'), with
    VariantModel.adapters telling what each copies; for the generator's own test."""
    branches = json.loads(json.dumps(branches if branches is not None else draw(seed)))
    r = np.random.default_rng([seed, 0x9A7])
    need = [_branch_input_shape(c) for c in branches]
    H = max(max(s[0] for s in need), _int(r, 4, 12))
    W = max(max(s[1] for s in need), _int(r, 4, 12))
    # as many channels as the widest branch input, so no branch sees repeated input channels (a
    # kernel reading channel c + C for c would go unnoticed)
    C = max(max(s[2] for s in need), 8) + _int(r, 0, 3)
    in_scale = float(np.float32(10 ** r.uniform(-2.5, 0)))
    in_zp = int(_pick(r, (-128, 127, 0, _int(r, -128, 127), _int(r, -128, 127))))
    net = _Net(f"qute kernel-variant test model, seed {seed}")
    x = net.input((1, H, W, C), in_scale, in_zp)
    for c in branches:
        name = c["name"]
        ar = np.random.default_rng([seed, zlib.crc32(name.encode()), 1])
        kind = c["kind"]
        want = _rows_shape(c["batch"] * c["depth"], H, W, C) if kind == "fc" else _branch_input_shape(c)
        t = net.adapt(x, want, ar, f"{name}/adapt")
        if kind == "conv":
            if c.get("batch") == 2:
                h, w, ch = c["in_shape"]
                t = net.reshape(t, (2, h, w, ch), f"{name}/batch2")
            y = net.conv(t, c, f"{name}/conv")
            net.note(y, name, "CONV_2D", "op", c)
        elif kind == "depthwise":
            y = net.depthwise(t, c, f"{name}/dw")
            net.note(y, name, "DEPTHWISE_CONV_2D", "op", c)
        elif kind == "fc":
            t = net.reshape(t, (c["batch"], c["depth"]), f"{name}/rows")  # as the converter writes it
            y = net.fc(t, c, f"{name}/fc")
            net.note(y, name, "FULLY_CONNECTED", "op", c)
        elif kind == "add":
            z = net.conv(t, {**c["conv"], "activation": "NONE"}, f"{name}/conv")
            net.note(z, name, "CONV_2D", "residual conv", c["conv"])
            y = net.add(z, t, c, f"{name}/add")
            net.note(y, name, "ADD", "op", c)
        elif kind in ("avgpool", "maxpool"):
            y = net.pool(t, c, f"{name}/pool", FAMILY_OPCODES[kind])
            net.note(y, name, FAMILY_OPCODES[kind], "op", c)
        elif kind == "chain":
            y = t
            for k, step in enumerate(c["steps"]):
                sname = f"{name}/{k}.{step['kind']}"
                if step["kind"] == "conv":
                    y = net.conv(y, step, sname)
                elif step["kind"] == "depthwise":
                    y = net.depthwise(y, step, sname)
                elif step["kind"] == "add":
                    y = net.add(y, t, step, sname)
                elif step["kind"] == "avgpool":
                    y = net.pool(y, step, sname)
                elif step["kind"] == "fc":
                    y = net.reshape(y, (1, step["depth"]), f"{sname}/rows")
                    y = net.fc(y, step, sname)
                net.note(y, name, FAMILY_OPCODES[step["kind"]], f"step {k}", step)
        else:
            raise ValueError(f"unknown branch kind {kind!r}")
        net.b.outputs.append(y)
        c["output"] = net.b.tensors[y].name
    adapters = []
    if expose_adapters:
        for t, (sh, sw, perm) in net.adapters.items():
            net.b.outputs.append(t)
            adapters.append({"name": net.b.tensors[t].name, "shape": list(net.shape[t]), "stride": [sh, sw],
                             "channels": perm})
    return VariantModel(seed, net.b.build(), (1, H, W, C), branches, net.ops, adapters)


def models(seed: int) -> list[VariantModel]:
    """The models of one seed (one at present: every class as a branch of it)."""
    return [build(seed)]


def sample_inputs(m: VariantModel, n_random: int, seed: int) -> np.ndarray:
    """(N, H, W, C) int8: n_random uniform samples, then the extremes (all -128, all 127, the two
    -128/127 checkerboards) and one of random extremes only."""
    shape = m.input_shape[1:]
    r = np.random.default_rng([seed, m.seed, 0x1D])
    xs = [r.integers(-128, 128, shape, dtype=np.int8) for _ in range(n_random)]
    idx = np.indices(shape).sum(axis=0) % 2
    xs += [np.full(shape, -128, np.int8), np.full(shape, 127, np.int8),
           np.where(idx == 0, -128, 127).astype(np.int8), np.where(idx == 1, -128, 127).astype(np.int8),
           r.choice(np.array([-128, 127], np.int8), shape)]
    return np.stack(xs)


def describe(m: VariantModel, branch: str) -> str:
    """One line that replays a branch: its seed and configuration."""
    return f"seed {m.seed} branch {branch}: {json.dumps(m.branch(branch), sort_keys=True)}"


# ---------------------------------------------------------------------------------------------
# Running a model three ways and comparing with TFLite Micro (shared by the test and the soak)


def reference(m: VariantModel, x: np.ndarray) -> list[np.ndarray]:
    """TFLite Micro's outputs, one (N, size) array per model output in flatbuffer (= branch) order."""
    from qute import oracle

    outs, engine = oracle.reference(m.tflite, [x])
    if engine != "tflm":  # these models are well formed: TFLM must be the reference
        raise AssertionError(f"seed {m.seed}: the oracle fell back to {engine}")
    return [np.asarray(o).reshape(len(x), -1) for o in outs]


def run_host(m: VariantModel, x: np.ndarray, folder, simd: bool, sanitize: bool,
             weights16: bool = False) -> list[np.ndarray]:
    """The generated C compiled for the host (plain C99, or the SIMD path emulated in portable C
    with -DQUTE_SIMD_EMULATE; weights16: the matrix products' int16 filter layout), outputs as
    reference() orders them."""
    from codegen.host import build_host
    from codegen.reader import read_model

    g = read_model(m.tflite)
    host = build_host(g, folder=folder, sanitize=sanitize, cflags=("-DQUTE_SIMD_EMULATE",) if simd else (),
                      weights16=weights16)
    got = host.run([x])
    out: list[np.ndarray | None] = [None] * len(g.outputs)
    for k, t in enumerate(host.output_tensors):
        out[g.outputs.index(t)] = np.asarray(got[k]).reshape(len(x), -1)
    return out


def run_firmware(m: VariantModel, x: np.ndarray, board: str, folder, timeout: float = 180.0, weights: str = "auto"):
    """`qute build --board BOARD --emulator --inputs uart --weights WEIGHTS` of the model, run
    under QEMU on x.

    Returns (outputs as reference() orders them, instructions per inference, the build folder).
    Raises qute's RunFailure on a crash, a time-out or a malformed transcript.
    """
    from pathlib import Path

    from qute.boards import load_board
    from qute.build import build, load_build
    from qute.emulate import execute

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"variants-seed{m.seed}.tflite"
    path.write_bytes(m.tflite)
    out_dir = folder / f"build-{board}-seed{m.seed}"
    build(board, str(path), out_dir, samples=1, emulator=True, inputs="uart", force=True, weights=weights)
    b = load_build(out_dir)
    _, transcript = execute(b, load_board(board), x, None, timeout=timeout)
    n = len(x)
    outs = [np.zeros((n, o["size"]), np.int16) + 999 for o in sorted(b.manifest.outputs,
                                                                    key=lambda o: o["flatbuffer_index"])]
    for s in transcript.samples:
        if not 0 <= s.index < n:
            raise AssertionError(f"sample line {s.index} out of range")
        for head, o in zip(s.heads, b.manifest.outputs):
            outs[o["flatbuffer_index"]][s.index] = head
    cycles = [s.cycles for s in transcript.samples]
    return outs, cycles, out_dir


@dataclass
class Diff:
    branch: str
    differing: int  # bytes
    total: int
    samples: list[int]  # indices of the samples with a differing byte
    example: str  # the first differing position, the device's byte and TFLM's


def compare(m: VariantModel, ref: list[np.ndarray], got: list[np.ndarray]) -> tuple[int, list[Diff]]:
    """(bytes compared, one Diff per branch whose output differs anywhere)."""
    total, diffs = 0, []
    for j, (b, want) in enumerate(zip(m.branches, ref)):
        have = got[j]
        total += want.size
        if have is None or have.shape != want.shape:
            diffs.append(Diff(b["name"], want.size, want.size, list(range(len(want))),
                              f"output shape {None if have is None else have.shape} vs TFLM's {want.shape}"))
            continue
        bad = have != want
        if bad.any():
            s, i = (int(v[0]) for v in np.nonzero(bad))
            diffs.append(Diff(b["name"], int(bad.sum()), want.size, [int(v) for v in np.nonzero(bad.any(axis=1))[0]],
                              f"sample {s} byte {i}: {int(have[s, i])} vs TFLM {int(want[s, i])}"))
    return total, diffs


def format_diffs(m: VariantModel, what: str, diffs: list[Diff], n_random: int) -> str:
    lines = [f"{what}: {sum(d.differing for d in diffs)} differing bytes in {len(diffs)} branch(es) of seed {m.seed}"]
    for d in diffs:
        extremes = [s for s in d.samples if s >= n_random]
        lines.append(f"  {d.branch}: {d.differing} of {d.total} bytes, samples {d.samples}"
                     f"{' (extreme inputs among them)' if extremes else ''}; first: {d.example}")
        lines.append(f"    {describe(m, d.branch)}")
    return "\n".join(lines)


def adapter_report(m: VariantModel, x: np.ndarray, run: Callable[[VariantModel], list[np.ndarray]]) -> str:
    """After a mismatch: are the adapters in front of the branches exact? A fault in the kernel the
    adapters run (CONV_2D) shows in every branch behind them; this tells the two apart. `run`
    runs a model the same way the failing run did."""
    m2 = build(m.seed, m.branches, expose_adapters=True)
    k = len(m2.branches)
    ref, got = reference(m2, x)[k:], run(m2)[k:]
    bad = [a["name"] for a, r, g in zip(m2.adapters, ref, got) if g is None or not np.array_equal(r, g)]
    from codegen.emit import generate
    from codegen.fold import fold
    from codegen.reader import read_model

    g = fold(read_model(m.tflite))
    gen = generate(g)
    used = sorted({gen.kernels[op.index] for op in g.ops
                   if op.index in gen.kernels and g.tensor(op.outputs[0]).name.endswith("/adapt")})
    if not bad:
        return f"the {len(m2.adapters)} adapters (kernels {', '.join(used)}) copy exactly: the branches' own ops differ"
    return (f"{len(bad)} of {len(m2.adapters)} adapters differ too (kernels {', '.join(used)}; e.g. {bad[:4]}): "
            f"the fault may be in the adapters' kernel, and the branches behind them inherit it")


# ---------------------------------------------------------------------------------------------
# Which kernel variants exist, and which the models reach

# The families whose variants these models are built to reach, by kernel name and by the type of
# the params struct a kernel takes (either identifies a family).
FAMILIES = {
    "conv": (r"^qute_conv", r"^qute_conv\w*_params$"),
    "depthwise": (r"^qute_(depthwise|dw)", r"^qute_(depthwise|dw)\w*_params$"),
    "fully_connected": (r"^qute_(fully_connected|fc)", r"^qute_(fully_connected|fc)\w*_params$"),
}

# An entry point: a function returning void, named qute_*_s8, whose first parameter is a pointer to
# a const params struct (static inline helpers start with "static" and do not match).
_ENTRY = r"^[ \t]*void\s+(qute_\w+_s8)\s*\(\s*const\s+(qute_\w+)\s*\*"


def family_of(name: str, params: str | None = None) -> str | None:
    import re

    for fam, (by_name, by_params) in FAMILIES.items():
        if re.search(by_name, name) or (params and re.search(by_params, params)):
            return fam
    return None


def declared_kernels(kdir=None) -> dict[str, tuple[str, str]]:
    """Every kernel entry point declared in firmware/kernels/*.h: name -> (params type, header)."""
    import re
    from pathlib import Path

    if kdir is None:
        from codegen.host import kernels_dir

        kdir = kernels_dir()
    found = {}
    for h in sorted(Path(kdir).glob("*.h")):
        text = re.sub(r"/\*.*?\*/|//[^\n]*", " ", h.read_text(), flags=re.S)
        for mt in re.finditer(_ENTRY, text, re.M):
            found[mt.group(1)] = (mt.group(2), h.name)
    return found


def declared_variants(kdir=None) -> dict[str, set[str]]:
    """The conv / depthwise / fully-connected variants declared in the kernel headers, by family."""
    out: dict[str, set[str]] = {f: set() for f in FAMILIES}
    for name, (params, _) in declared_kernels(kdir).items():
        fam = family_of(name, params)
        if fam:
            out[fam].add(name)
    return out


def kernels_used(m: VariantModel, weights16: bool = False) -> dict[str, dict[str, str]]:
    """branch -> {op output tensor name: kernel} for the ops under test (adapters left out), as the
    code generator picks them (codegen.emit.generate(..., weights16).kernels)."""
    from codegen.emit import generate
    from codegen.fold import fold
    from codegen.reader import read_model

    g = fold(read_model(m.tflite))
    gen = generate(g, weights16=weights16)
    out: dict[str, dict[str, str]] = {}
    for op in g.ops:
        name = g.tensor(op.outputs[0]).name
        if op.index in gen.kernels and name in m.ops:
            out.setdefault(m.ops[name]["branch"], {})[name] = gen.kernels[op.index]
    return out
