"""Integer-only uncertainty path: C (firmware/uncertainty/qute_uncertainty_int.c) vs its Python
mirror qute.uncertainty.summarize_int, bit for bit, plus precision against float64."""

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from elfcheck import float_helpers, symbols

from qute.errors import QuteError
from qute.uncertainty import (
    INT_FRAC_BITS,
    INT_NATS_MAX_ABS_ERROR,
    INT_SCALE_Q24_DEFAULT,
    INT_SCALE_Q24_S16,
    SCORES,
    IntScores,
    ilog2_q20,
    summarize,
    summarize_int,
    uncertainty_score_int,
)

SRC = Path(__file__).resolve().parents[1] / "firmware" / "uncertainty"
C_FILE = SRC / "qute_uncertainty_int.c"
WARN = ["-Wall", "-Wextra", "-Werror", "-Wdouble-promotion", "-Wfloat-conversion"]

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "qute_uncertainty_int.h"
/* stdin: blocks "K C N scale_q24 zero_point bits" + N*K*C head values (head-major per sample),
 * int8 (bits 8: qute_ensemble_scores_int) or int16 (bits 16: qute_ensemble_scores_int16);
 * or "0 n" + n integers: prints qute_int_log2_q20 of each.
 * stdout per sample: "rc predicted conf margin entropy mi sums[0..C-1]". */
int main(void)
{
    long k, c, n, s, zp, bits;
    while (scanf("%ld", &k) == 1) {
        if (k == 0) {
            if (scanf("%ld", &n) != 1) return 2;
            for (long i = 0; i < n; ++i) {
                unsigned long v;
                if (scanf("%lu", &v) != 1) return 2;
                printf("%ld\n", (long)qute_int_log2_q20((uint32_t)v));
            }
            continue;
        }
        if (scanf("%ld %ld %ld %ld %ld", &c, &n, &s, &zp, &bits) != 5) return 2;
        int8_t *q = malloc((size_t)(k * c));
        int16_t *q16 = malloc((size_t)(k * c) * sizeof *q16);
        int32_t *sums = malloc((size_t)c * sizeof *sums);
        if (!q || !q16 || !sums) return 3;
        for (long i = 0; i < n; ++i) {
            for (long j = 0; j < k * c; ++j) {
                int v;
                if (scanf("%d", &v) != 1) return 2;
                q[j] = (int8_t)v;
                q16[j] = (int16_t)v;
            }
            qute_scores_int o = {0, 0, 0, 0, 0};
            int rc = bits == 16
                ? qute_ensemble_scores_int16(q16, (int32_t)k, (int32_t)c, (uint32_t)s, (int32_t)zp, sums, &o)
                : qute_ensemble_scores_int(q, (int32_t)k, (int32_t)c, (uint32_t)s, (int32_t)zp, sums, &o);
            printf("%d %ld %ld %ld %ld %ld", rc, (long)o.predicted, (long)o.confidence_q16,
                   (long)o.margin_q16, (long)o.entropy_q20, (long)o.mutual_information_q20);
            for (long j = 0; j < c; ++j) printf(" %ld", rc == 0 ? (long)sums[j] : 0L);
            printf("\n");
        }
        free(q);
        free(q16);
        free(sums);
    }
    return 0;
}
"""


def _softmax_q(rng, k, n, c, temp):
    """int8 softmax outputs (scale 1/256, zero point -128) of random logits, as a converter makes."""
    logits = rng.normal(size=(k, n, c)) * temp + rng.normal(size=(1, n, c)) * temp
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return np.clip(np.round(p * 256) - 128, -128, 127).astype(np.int8)


def _softmax_q16(rng, k, n, c, temp):
    """int16 softmax outputs (scale 1/65536, zero point -32768): qute's widened heads."""
    logits = rng.normal(size=(k, n, c)) * temp + rng.normal(size=(1, n, c)) * temp
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return np.clip(np.round(p * 65536) - 32768, -32768, 32767).astype(np.int16)


def _int16_cases(seed=2, per=60):
    """int16 heads: softmax outputs at 1/65536 (s = 256), arbitrary values, the extremes, other scales."""
    rng = np.random.default_rng(seed)
    cases = []
    for k in (1, 2, 3, 4, 6):
        for c in (2, 3, 10, 20):
            soft = _softmax_q16(rng, k, per, c, rng.uniform(0.3, 8))
            wild = rng.integers(-32768, 32768, size=(k, per // 3, c)).astype(np.int16)
            ext = rng.choice(np.array([-32768, -32768, -32767, 0, 32767], dtype=np.int16), size=(k, per // 3, c))
            one_hot = np.full((k, 1, c), -32768, np.int16)
            one_hot[:, 0, c - 1] = 32767
            cases.append((k, c, INT_SCALE_Q24_S16, -32768, np.concatenate([soft, wild, ext, one_hot], axis=1)))
    for s, zp in [(257, -32768), (1, 0), (1 << 24, 32767), (65536, -128), (300, -30000)]:
        cases.append((3, 10, s, zp, rng.integers(-32768, 32768, size=(3, 40, 10)).astype(np.int16)))
    return cases


def _random_cases(seed=0, per=90):
    """(K, C, scale_q24, zp, q[K, N, C]) blocks: >= 10,000 random samples, K 1..6, C 2..20."""
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(1, 7):
        for c in range(2, 21):
            a = rng.integers(-128, 128, size=(k, per // 3, c)).astype(np.int8)
            b = _softmax_q(rng, k, per // 3, c, rng.uniform(0.3, 6))
            # few distinct values: lots of ties in the argmax and of q = -128 / 127
            d = rng.choice(np.array([-128, -128, -127, -64, 0, 127], dtype=np.int8), size=(k, per - 2 * (per // 3), c))
            cases.append((k, c, INT_SCALE_Q24_DEFAULT, -128, np.concatenate([a, b, d], axis=1)))
    return cases


def _edge_cases():
    cases = []
    for k in (1, 2, 3, 4, 6):
        for c in (2, 3, 10, 20):
            rows = []
            base = _softmax_q(np.random.default_rng(k * 100 + c), 1, 4, c, 2.0)[0]
            for r in base:
                rows.append(np.repeat(r[None], k, axis=0))  # all heads identical
            rows.append(np.full((k, c), -128, np.int8))  # every head at 0
            rows.append(np.full((k, c), 127, np.int8))  # every value at 255/256
            one_hot = np.full((k, c), -128, np.int8)
            one_hot[:, c - 1] = 127
            rows.append(one_hot)  # heads at 0 and 1, agreeing
            disagree = np.full((k, c), -128, np.int8)
            disagree[np.arange(k), np.arange(k) % c] = 127
            rows.append(disagree)  # heads at 0 and 1, disagreeing
            uni = np.full((k, c), round(256 / c) - 128, np.int8)
            rows.append(uni)  # uniform
            tie = np.full((k, c), -128, np.int8)
            tie[:, 0] = tie[:, c - 1] = 0  # tie for the top between first and last
            rows.append(tie)
            tie2 = np.full((k, c), -100, np.int8)
            tie2[:, c // 2] = tie2[:, c - 1] = 10
            rows.append(tie2)
            cases.append((k, c, INT_SCALE_Q24_DEFAULT, -128, np.stack(rows, axis=1)))
    return cases


def _general_scale_cases(seed=1):
    """Other scales / zero points (the generic code path, no fast table)."""
    rng = np.random.default_rng(seed)
    cases = []
    for s, zp in [(65536, 0), (65793, -128), (1 << 17, -128), (1 << 24, 127), (50000, -20), (1, 5), (123457, -128)]:
        for k, c in [(1, 2), (3, 10), (6, 20), (4, 7)]:
            cases.append((k, c, s, zp, rng.integers(-128, 128, size=(k, 40, c)).astype(np.int8)))
    return cases


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no host gcc")
    d = tmp_path_factory.mktemp("qute_int")
    (d / "harness.c").write_text(HARNESS)
    exe = d / "harness"
    subprocess.run(
        [gcc, "-std=c99", "-O2", *WARN, f"-I{SRC}", str(d / "harness.c"), str(C_FILE), "-o", str(exe)],
        check=True,
    )
    return exe


def _run(exe, cases, extra_logs=None):
    parts = []
    for k, c, s, zp, q in cases:
        n = q.shape[1]
        flat = np.ascontiguousarray(q.transpose(1, 0, 2)).reshape(-1)
        parts.append(f"{k} {c} {n} {s} {zp} {8 * q.dtype.itemsize}\n" + " ".join(map(str, flat.tolist())))
    if extra_logs is not None:
        parts.append(f"0 {len(extra_logs)}\n" + " ".join(map(str, extra_logs)))
    res = subprocess.run([str(exe)], input="\n".join(parts) + "\n", capture_output=True, text=True, check=True)
    vals = np.array(res.stdout.split(), dtype=np.int64)
    out, pos = [], 0
    for k, c, s, zp, q in cases:
        n = q.shape[1]
        block = vals[pos : pos + n * (6 + c)].reshape(n, 6 + c)
        pos += n * (6 + c)
        out.append(block)
    logs = vals[pos:] if extra_logs is not None else None
    return out, logs


def _check_exact(exe, cases):
    got, _ = _run(exe, cases)
    checked = 0
    for (k, c, s, zp, q), block in zip(cases, got):
        ref = summarize_int(q, s, zp)
        assert np.all(block[:, 0] == 0)
        for col, name in enumerate(
            ["predicted", "confidence_q16", "margin_q16", "entropy_q20", "mutual_information_q20"], start=1
        ):
            bad = np.flatnonzero(block[:, col] != getattr(ref, name))
            assert bad.size == 0, (k, c, s, zp, name, q[:, bad[0]], block[bad[0], col], getattr(ref, name)[bad[0]])
        assert np.array_equal(block[:, 6:], ref.sums)
        checked += q.shape[1]
    return checked


def test_c_matches_python_bit_exact(harness):
    cases = _random_cases() + _edge_cases() + _general_scale_cases() + _int16_cases()
    n_random = sum(q.shape[1] for *_, q in _random_cases())
    assert n_random >= 10_000
    checked = _check_exact(harness, cases)
    assert checked >= 12_000


def test_log2_c_matches_python_and_is_accurate(harness):
    rng = np.random.default_rng(5)
    n = np.concatenate([np.arange(1, 4097), rng.integers(1, 2**31, size=4000), [2**31 - 1, 2**30, 65536, 65537]])
    _, logs = _run(harness, [], extra_logs=n.tolist())
    ref = ilog2_q20(n)
    assert np.array_equal(logs, ref)
    err = np.log2(n.astype(np.float64)) * 2**20 - ref
    assert np.abs(err).max() <= 0.52  # rounded to nearest: about half an ulp of Q20
    assert ilog2_q20(1) == 0 and ilog2_q20(2**20) == 20 << 20


def test_sanitizers(tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no host gcc")
    (tmp_path / "harness.c").write_text(HARNESS)
    exe = tmp_path / "harness_san"
    cmd = [gcc, "-std=c99", "-O1", "-g", *WARN, "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
           f"-I{SRC}", str(tmp_path / "harness.c"), str(C_FILE), "-o", str(exe)]
    if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
        pytest.skip("host gcc cannot build with ASan/UBSan")
    cases = [(k, c, s, zp, q[:, :10]) for k, c, s, zp, q in _random_cases(seed=7)[::3]]
    assert _check_exact(exe, cases + _edge_cases() + _general_scale_cases() + _int16_cases(per=12)) > 1000


def _float64_reference(q, s, zp):
    w = np.clip(q.astype(np.int64) - zp, 0, (1 << 24) // s).astype(np.float64)
    p = w * s / 2.0**24
    mean = p.mean(axis=0)

    def ent(x):
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.where(x > 0, x * np.log(np.where(x > 0, x, 1)), 0).sum(axis=-1)

    h = ent(mean)
    top = np.sort(mean, axis=1)
    return top[:, -1], top[:, -1] - top[:, -2], h, np.maximum(h - ent(p).mean(axis=0), 0)


def _worst_errors(cases):
    """Max abs error vs float64 per score; entropy / MI divided by max(1, probability mass)."""
    worst = {name: 0.0 for name in SCORES}
    for k, c, s, zp, q in cases:
        r = summarize_int(q, s, zp)
        mass = (np.clip(q.astype(np.int64) - zp, 0, (1 << 24) // s) * s / 2.0**24).sum(-1).mean(0)
        for name, ref in zip(SCORES, _float64_reference(q, s, zp)):
            err = np.abs(r.score(name) - ref)
            if name in ("entropy", "mutual_information"):
                err = err / np.maximum(mass, 1.0)
            worst[name] = max(worst[name], float(np.max(err)))
    return worst


def test_precision_against_float64():
    rng = np.random.default_rng(9)
    softmax = [
        (k, c, INT_SCALE_Q24_DEFAULT, -128, _softmax_q(rng, k, 100, c, t))
        for k in range(1, 7) for c in range(2, 21) for t in (0.5, 2.0, 6.0)
    ]
    softmax16 = [
        (k, c, INT_SCALE_Q24_S16, -32768, _softmax_q16(rng, k, 100, c, t))
        for k in range(1, 7) for c in range(2, 21, 3) for t in (0.5, 2.0, 6.0)
    ]
    for cases in (softmax, softmax16, _random_cases(seed=3) + _edge_cases() + _general_scale_cases(seed=4) + _int16_cases(seed=5)):
        worst = _worst_errors(cases)
        print("max abs error vs float64:", worst)
        assert worst["confidence"] <= 2.0**-17 + 1e-12
        assert worst["margin"] <= 2.0**-17 + 1e-12
        assert worst["entropy"] <= INT_NATS_MAX_ABS_ERROR, worst
        assert worst["mutual_information"] <= INT_NATS_MAX_ABS_ERROR, worst


def test_argmax_matches_float_path_and_scores_close():
    for k, c, s, zp, q in _random_cases(seed=11, per=30) + _edge_cases():
        r = summarize_int(q, s, zp)
        f = summarize((q.astype(np.float32) + np.float32(128)) * np.float32(1 / 256))
        assert np.array_equal(r.predicted, f.predicted)
        assert np.allclose(r.entropy, f.entropy, atol=2e-5)
        assert np.allclose(r.mutual_information, f.mutual_information, atol=2e-5)


def test_special_values():
    k1 = summarize_int(np.array([[[-128, 127, -1]]], dtype=np.int8))
    assert k1.mutual_information_q20[0] == 0  # K = 1
    zero = summarize_int(np.full((3, 1, 4), -128, np.int8))
    assert zero.entropy_q20[0] == 0 and zero.confidence_q16[0] == 0 and zero.predicted[0] == 0
    # two heads at 0/1 disagreeing completely: entropy = MI = ln 2 (up to 255/256 mass)
    q = np.array([[[127, -128]], [[-128, 127]]], dtype=np.int8)
    r = summarize_int(q)
    assert r.predicted[0] == 0 and r.margin_q16[0] == 0
    assert abs(r.mutual_information[0] - 255 / 256 * math.log(2)) < 4e-6
    tie = summarize_int(np.array([[[0, 5, 5, 0]]], dtype=np.int8))
    assert tie.predicted[0] == 1


def test_accessors_and_errors():
    r = summarize_int(np.zeros((2, 3, 4), np.int8))
    assert isinstance(r, IntScores)
    for name in SCORES:
        assert r.score(name).dtype == np.float64
        assert np.array_equal(r.raw(name), getattr(r, f"{name}_q{INT_FRAC_BITS[name]}"))
        assert np.array_equal(getattr(r, name), r.score(name))
    assert np.array_equal(uncertainty_score_int(r, "confidence"), -r.confidence_q16)
    assert np.array_equal(uncertainty_score_int(r, "entropy"), r.entropy_q20)
    with pytest.raises(QuteError, match="unknown uncertainty score"):
        r.raw("nope")
    for bad in [np.zeros((2, 3, 4), np.float32), np.zeros((2, 3, 1), np.int8), np.zeros((2, 2, 2, 2), np.int8)]:
        with pytest.raises(QuteError):
            summarize_int(bad)
    with pytest.raises(QuteError):
        summarize_int(np.zeros((1, 1, 2), np.int8), scale_q24=0)
    with pytest.raises(QuteError, match="int8 value"):
        summarize_int(np.zeros((1, 1, 2), np.int8), scale_q24=256, zero_point=-32768)
    assert summarize_int(np.full((1, 1, 2), -32768, np.int16), 256, -32768).confidence_q16[0] == 0
    with pytest.raises(QuteError):
        summarize_int(np.zeros((1, 1, 2), np.int32))
    with pytest.raises(QuteError):
        summarize_int(np.zeros((1, 1, 2), np.int8), zero_point=200)


def test_default_model_heads_are_int16_softmax_outputs():
    """The embedded default's heads are what qute quantize makes (qute.quantize.widen_heads): int16
    at 1/65536 from -32768, which the integer path takes exactly (s = 256)."""
    from codegen.reader import read_file

    model = Path(__file__).resolve().parents[1] / "firmware" / "default" / "model.int8.tflite"
    g = read_file(model)
    for i in g.outputs:
        t = g.tensors[i]
        assert t.dtype == "int16" and int(t.zero_point[0]) == -32768
        assert float(t.scale[0]) * 2**24 == INT_SCALE_Q24_S16


M3_MAIN = r"""
#include "qute_uncertainty_int.h"
volatile int8_t in[3 * 10];
volatile int32_t sink;
int main(void)
{
    int8_t q[3 * 10];
    int32_t sums[10];
    qute_scores_int o;
    for (int i = 0; i < 30; ++i) q[i] = in[i];
    sink = qute_ensemble_scores_int(q, 3, 10, QUTE_INT_SCALE_Q24_DEFAULT, QUTE_INT_ZERO_POINT_DEFAULT, sums, &o);
    sink += o.entropy_q20 + o.mutual_information_q20 + o.confidence_q16 + o.margin_q16 + o.predicted;
    for (;;) {}
}
"""


def test_cross_compile_cortex_m3_soft_float_has_no_float(tmp_path):
    gcc, nm = shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-nm")
    if gcc is None or nm is None:
        pytest.skip("no arm-none-eabi toolchain")
    flags = ["-std=c99", "-O2", "-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft", *WARN, f"-I{SRC}"]
    obj = tmp_path / "u.o"
    subprocess.run([gcc, *flags, "-c", str(C_FILE), "-o", str(obj)], check=True)
    (tmp_path / "main.c").write_text(M3_MAIN)
    elf = tmp_path / "u.elf"
    subprocess.run(
        [gcc, *flags, "-nostartfiles", "-Wl,-e,main", str(tmp_path / "main.c"), str(obj), "-o", str(elf),
         "-lc", "-lgcc"],
        check=True,
    )
    for f in (obj, elf):
        assert "qute_ensemble_scores_int" in symbols(f)
        assert float_helpers(f) == []


QEMU_MAIN = r"""
#include <stdint.h>
#include "qute_uncertainty_int.h"
#include "cases.h" /* N_BLOCKS, block_k[], block_c[], block_n[], block_s[], block_zp[], data[] */

static void sh_write0(const char *s)
{
    register uint32_t op __asm("r0") = 0x04u; /* SYS_WRITE0 */
    register const char *arg __asm("r1") = s;
    __asm volatile("bkpt 0xAB" : "+r"(op) : "r"(arg) : "memory");
}

static void sh_exit(void)
{
    register uint32_t op __asm("r0") = 0x18u; /* SYS_EXIT */
    register uint32_t reason __asm("r1") = 0x20026u;
    __asm volatile("bkpt 0xAB" : "+r"(op) : "r"(reason) : "memory");
    for (;;) {}
}

static char *put_int(char *p, int32_t v)
{
    char tmp[12];
    int n = 0;
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    if (v < 0) *p++ = '-';
    do { tmp[n++] = (char)('0' + u % 10u); u /= 10u; } while (u);
    while (n) *p++ = tmp[--n];
    *p++ = ' ';
    return p;
}

int main(void)
{
    const int8_t *q = data;
    int32_t sums[32];
    char line[96];
    for (int b = 0; b < N_BLOCKS; ++b) {
        for (int i = 0; i < block_n[b]; ++i) {
            qute_scores_int o;
            int rc = qute_ensemble_scores_int(q, block_k[b], block_c[b], block_s[b], block_zp[b], sums, &o);
            char *p = line;
            p = put_int(p, rc);
            p = put_int(p, o.predicted);
            p = put_int(p, o.confidence_q16);
            p = put_int(p, o.margin_q16);
            p = put_int(p, o.entropy_q20);
            p = put_int(p, o.mutual_information_q20);
            p[-1] = '\n';
            *p = 0;
            sh_write0(line);
            q += block_k[b] * block_c[b];
        }
    }
    sh_exit();
    return 0;
}

void reset_handler(void);
void reset_handler(void) { main(); for (;;) {} }
__attribute__((section(".vectors"), used)) static void (*const vectors[2])(void) = {
    (void (*)(void))0x20010000u, reset_handler};
"""

QEMU_LD = """
ENTRY(reset_handler)
SECTIONS {
  . = 0x0;
  .text : { KEEP(*(.vectors)) *(.text*) *(.rodata*) }
  .data : { *(.data*) }
  .bss : { *(.bss*) *(COMMON) }
}
"""


def test_cortex_m3_under_qemu_matches_python(tmp_path):
    gcc, qemu = shutil.which("arm-none-eabi-gcc"), shutil.which("qemu-system-arm")
    if gcc is None or qemu is None:
        pytest.skip("no arm-none-eabi-gcc or qemu-system-arm")
    rng = np.random.default_rng(21)
    cases = [
        (3, 10, INT_SCALE_Q24_DEFAULT, -128, _softmax_q(rng, 3, 60, 10, 2.0)),
        (6, 20, INT_SCALE_Q24_DEFAULT, -128, rng.integers(-128, 128, size=(6, 40, 20)).astype(np.int8)),
        (1, 2, INT_SCALE_Q24_DEFAULT, -128, rng.integers(-128, 128, size=(1, 20, 2)).astype(np.int8)),
        (4, 7, 50000, -20, rng.integers(-128, 128, size=(4, 20, 7)).astype(np.int8)),
    ] + [e for e in _edge_cases() if e[0] == 3 and e[1] == 10]
    flat = np.concatenate([np.ascontiguousarray(q.transpose(1, 0, 2)).reshape(-1) for *_, q in cases])
    col = lambda i: ", ".join(str(int(x[i]) if i != 4 else int(x[4].shape[1])) for x in cases)
    header = (
        f"#define N_BLOCKS {len(cases)}\n"
        f"static const int32_t block_k[] = {{{col(0)}}};\n"
        f"static const int32_t block_c[] = {{{col(1)}}};\n"
        f"static const uint32_t block_s[] = {{{', '.join(str(x[2]) + 'u' for x in cases)}}};\n"
        f"static const int32_t block_zp[] = {{{col(3)}}};\n"
        f"static const int32_t block_n[] = {{{col(4)}}};\n"
        f"static const int8_t data[] = {{{', '.join(map(str, flat.tolist()))}}};\n"
    )
    (tmp_path / "cases.h").write_text(header)
    (tmp_path / "main.c").write_text(QEMU_MAIN)
    (tmp_path / "link.ld").write_text(QEMU_LD)
    elf = tmp_path / "m3.elf"
    subprocess.run(
        [gcc, "-std=c99", "-O2", "-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft", *WARN, f"-I{SRC}",
         f"-I{tmp_path}", "-nostartfiles", "-T", str(tmp_path / "link.ld"), str(tmp_path / "main.c"),
         str(C_FILE), "-o", str(elf), "-lc", "-lgcc"],
        check=True,
    )
    out = tmp_path / "semihosting.txt"
    res = subprocess.run(  # semihosting console -> a file (QEMU sends it to stderr otherwise)
        [qemu, "-M", "mps2-an385", "-nographic", "-monitor", "none", "-chardev", f"file,id=sh,path={out}",
         "-semihosting-config", "enable=on,target=native,chardev=sh", "-kernel", str(elf)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert res.returncode == 0, res.stderr
    got = np.array(out.read_text().split(), dtype=np.int64).reshape(-1, 6)
    ref = []
    for k, c, s, zp, q in cases:
        r = summarize_int(q, s, zp)
        ref.append(np.stack([np.zeros_like(r.predicted), r.predicted, r.confidence_q16, r.margin_q16,
                             r.entropy_q20, r.mutual_information_q20], axis=1))
    assert np.array_equal(got, np.concatenate(ref))
