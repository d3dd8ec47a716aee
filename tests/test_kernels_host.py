"""Kernel helpers checked in C on the host, against the formulas they replace."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from codegen.host import WARNINGS, kernels_dir

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")

# qute_requantize (one 64-bit multiply-add) against TFLM's two roundings written out as in
# gemmlowp: a saturating rounding doubling high multiply, then a rounding divide by a power of two.
_REQUANT = r"""
#include <stdio.h>
#include "qute_common.h"

static int32_t two_step(int32_t x, int32_t m, int32_t shift)
{
    int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int32_t shifted = (int32_t)((uint32_t)x << left);
    return qute_rounding_divide_by_pot(qute_sat_rounding_doubling_high_mul(shifted, m), right);
}

static uint64_t state = 88172645463325252ull;
static uint32_t next(void)
{
    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
    return (uint32_t)(state >> 11);
}

int main(void)
{
    static const int32_t edges[] = {0, 1, -1, 2, -2, 3, -3, 1 << 30, -(1 << 30), INT32_MAX, INT32_MIN, INT32_MIN + 1,
                                    12345, -12345, 65535, -65536};
    long bad = 0, n = 0;
    for (int32_t shift = -31; shift <= 31; ++shift) {
        for (int i = 0; i < 40000; ++i) {
            int32_t x = i < 16 ? edges[i] : (int32_t)next() >> (next() % 31);
            int32_t m = i % 7 == 0 ? 0 : (int32_t)((1u << 30) | (next() & 0x3fffffffu));
            if (i % 11 == 0) m = (int32_t)(1u << 30);
            if (i % 13 == 0) m = INT32_MAX;
            ++n;
            if (qute_requantize(x, m, shift) != two_step(x, m, shift)) {
                if (bad++ < 5) printf("x=%ld m=%ld shift=%ld: %ld != %ld\n", (long)x, (long)m, (long)shift,
                                      (long)qute_requantize(x, m, shift), (long)two_step(x, m, shift));
            }
        }
    }
    printf("checked %ld differing %ld\n", n, bad);
    return bad != 0;
}
"""


def test_requantize_equals_tflm_two_roundings(tmp_path):
    src = tmp_path / "requant.c"
    src.write_text(_REQUANT)
    exe = tmp_path / "requant"
    subprocess.run(["gcc", *WARNINGS, "-O2", "-fsanitize=undefined", "-fno-sanitize-recover=all", "-I",
                    str(kernels_dir()), str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "differing 0" in out.stdout


# The product kernels' precomputed requantization (codegen/pack.py, rq.fast) on channels at its
# edges: an all-zero filter with a huge bias, a multiplier that rounds to 0 (a scale too small for
# QuantizeMultiplier), and a tiny but nonzero multiplier whose output zero point would overflow the
# folded form (then the op takes the general path). Each against TFLM, plain and SIMD-emulated.

def _edge_conv_model(overflowing: bool) -> bytes:
    from fbmodels import ModelBuilder, padding

    rng = np.random.default_rng(7)
    b = ModelBuilder("requant edges")
    x = b.input((1, 5, 4, 8), np.float32(0.05), -3)
    oc = 6
    w = rng.integers(-127, 128, (oc, 1, 1, 8)).astype(np.int8)
    w[0] = 0  # all-zero filter: its output is one constant
    scales = np.full(oc, 0.01, np.float32)
    scales[1] = 1e-20  # multiplier 0, shift 0 after QuantizeMultiplier
    if overflowing:
        scales[2] = 2e-9  # e around 28 with a nonzero filter: the zero point cannot ride in the high word
    bias = rng.integers(-20000, 20000, oc).astype(np.int32)
    bias[0] = 1_000_000_000
    wi = b.const(w, scales, 0, name="w", quantized_dimension=0)
    bi = b.const(bias, (np.float32(0.05) * scales).astype(np.float32), 0, name="b")
    y = b.tensor((1, 5, 4, oc), "int8", np.float32(0.07), 11, name="y")
    b.op("CONV_2D", [x, wi, bi], [y], version=3, padding=padding("VALID"), strideH=1, strideW=1,
         dilationHFactor=1, dilationWFactor=1)
    b.output(y)
    return b.build()


@pytest.mark.parametrize("overflowing", [False, True])
def test_product_requant_edges_equal_tflm(overflowing):
    from hostcheck import check

    from codegen.emit import generate
    from codegen.reader import read_model

    model = _edge_conv_model(overflowing)
    src = generate(read_model(model)).source
    assert (".fast = NULL" in src) == overflowing, "the precomputed form is used exactly when it is exact"
    for cflags in ((), ("-DQUTE_SIMD_EMULATE",)):
        r = check(model, n=16, seed=3, cflags=cflags, sanitize=not cflags)
        assert r.mismatches == 0 and r.which == "tflm", (cflags, r)


def _zero_first_row_fc_model() -> bytes:
    """FULLY_CONNECTED with one weight scale for all units and unit 0's weights all zero: unit 0 is
    a constant, the others are not, under the same multiplier."""
    from fbmodels import ModelBuilder

    rng = np.random.default_rng(11)
    b = ModelBuilder("fc zero row")
    x = b.input((1, 20), np.float32(0.04), 5)
    w = rng.integers(-127, 128, (7, 20)).astype(np.int8)
    w[0] = 0
    bias = rng.integers(-3000, 3000, 7).astype(np.int32)
    bias[0] = 40000
    wi = b.const(w, np.float32(0.02), 0, name="w")
    bi = b.const(bias, np.float32(0.04 * 0.02), 0, name="b")
    y = b.tensor((1, 7), "int8", np.float32(0.1), -4, name="y")
    b.op("FULLY_CONNECTED", [x, wi, bi], [y], version=4)
    b.output(y)
    return b.build()


def test_product_requant_per_tensor_with_a_constant_channel_equals_tflm():
    from hostcheck import check

    from codegen.emit import generate
    from codegen.reader import read_model

    model = _zero_first_row_fc_model()
    assert ".per_channel = 0" in generate(read_model(model)).source
    for cflags in ((), ("-DQUTE_SIMD_EMULATE",)):
        r = check(model, n=16, seed=5, cflags=cflags)
        assert r.mismatches == 0 and r.which == "tflm", (cflags, r)
