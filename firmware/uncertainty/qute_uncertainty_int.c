/* See qute_uncertainty_int.h. Step numbers I1..I8 refer to qute/uncertainty.py. No float. */
#include "qute_uncertainty_int.h"
#include <stddef.h>

#define LOG2_FRAC 20
#define LN2_Q30 744261118 /* round(ln 2 * 2^30) */

/* qute_int_log2_q20(v) for v = 1..255 (generated from qute.uncertainty.ilog2_q20): the
 * 1/256 fast path reads the head terms from here instead of running the squaring loop. */
static const int32_t log2_q20_u8[255] = {
    0, 1048576, 1661954, 2097152, 2434718, 2710530, 2943725, 3145728,
    3323907, 3483294, 3627477, 3759106, 3880192, 3992301, 4096672, 4194304,
    4286015, 4372483, 4454275, 4531870, 4605679, 4676053, 4743299, 4807682,
    4869436, 4928768, 4985861, 5040877, 5093962, 5145248, 5194851, 5242880,
    5289431, 5334591, 5378443, 5421059, 5462508, 5502851, 5542146, 5580446,
    5617800, 5654255, 5689851, 5724629, 5758625, 5791875, 5824409, 5856258,
    5887450, 5918012, 5947969, 5977344, 6006160, 6034437, 6062195, 6089453,
    6116228, 6142538, 6168398, 6193824, 6218829, 6243427, 6267632, 6291456,
    6314910, 6338007, 6360756, 6383167, 6405252, 6427019, 6448477, 6469635,
    6490501, 6511084, 6531390, 6551427, 6571202, 6590722, 6609993, 6629022,
    6647815, 6666376, 6684713, 6702831, 6720734, 6738427, 6755916, 6773205,
    6790299, 6807201, 6823917, 6840451, 6856805, 6872985, 6888993, 6904834,
    6920510, 6936026, 6951384, 6966588, 6981641, 6996545, 7011304, 7025920,
    7040397, 7054736, 7068940, 7083013, 7096956, 7110771, 7124461, 7138029,
    7151476, 7164804, 7178017, 7191114, 7204100, 7216974, 7229740, 7242400,
    7254954, 7267405, 7279754, 7292003, 7304154, 7316208, 7328167, 7340032,
    7351805, 7363486, 7375079, 7386583, 7398000, 7409332, 7420579, 7431743,
    7442826, 7453828, 7464751, 7475595, 7486362, 7497053, 7507669, 7518211,
    7528680, 7539077, 7549404, 7559660, 7569847, 7579966, 7590017, 7600003,
    7609923, 7619778, 7629569, 7639298, 7648964, 7658569, 7668114, 7677598,
    7687023, 7696391, 7705700, 7714952, 7724149, 7733289, 7742375, 7751407,
    7760385, 7769310, 7778182, 7787003, 7795773, 7804492, 7813161, 7821781,
    7830352, 7838875, 7847350, 7855777, 7864158, 7872493, 7880782, 7889027,
    7897226, 7905381, 7913492, 7921561, 7929586, 7937569, 7945510, 7953410,
    7961268, 7969086, 7976864, 7984602, 7992301, 7999960, 8007581, 8015164,
    8022709, 8030217, 8037687, 8045121, 8052519, 8059880, 8067206, 8074496,
    8081752, 8088973, 8096159, 8103312, 8110431, 8117516, 8124569, 8131589,
    8138576, 8145532, 8152455, 8159347, 8166208, 8173037, 8179836, 8186605,
    8193343, 8200052, 8206731, 8213380, 8220001, 8226593, 8233156, 8239690,
    8246197, 8252676, 8259127, 8265550, 8271947, 8278316, 8284659, 8290976,
    8297266, 8303530, 8309768, 8315981, 8322168, 8328330, 8334467, 8340579,
    8346667, 8352730, 8358769, 8364784, 8370775, 8376743, 8382687,
};

int32_t qute_int_log2_q20(uint32_t n)
{
    if (n == 0u) {
        return 0;
    }
    uint32_t x = n & 0x7fffffffu;
    int32_t e = 30;
    /* normalise x into [2^30, 2^31) */
    static const int32_t shifts[5] = {16, 8, 4, 2, 1};
    for (int i = 0; i < 5; ++i) {
        int32_t sh = shifts[i];
        if (x < (1u << (31 - sh))) {
            x <<= sh;
            e -= sh;
        }
    }
    int32_t r = e * (1 << (LOG2_FRAC + 1));
    for (int i = 0; i <= LOG2_FRAC; ++i) { /* one guard bit, then round to nearest */
        x = (uint32_t)(((uint64_t)x * x) >> 30);
        if (x >= 0x80000000u) {
            x >>= 1;
            r |= (int32_t)1 << (LOG2_FRAC - i);
        }
    }
    return (r + 1) >> 1;
}

/* round-half-up a / b for a >= 0 and even b > 0 */
static int64_t rdiv(int64_t a, int64_t b)
{
    return (a + b / 2) / b;
}

static int32_t to_nats_q20(int64_t bits_q20)
{
    return (int32_t)((bits_q20 * LN2_Q30 + ((int64_t)1 << 29)) >> 30);
}

/* The heads are int8 (q8) or int16 (q16, q8 NULL); everything after reading a head value is the same. */
static int scores_int(const int8_t *q8, const int16_t *q16, int32_t heads, int32_t classes, uint32_t scale_q24,
                      int32_t zero_point, int32_t *sums, qute_scores_int *out)
{
    const int32_t zp_min = q8 ? -128 : -32768;
    const int32_t zp_max = q8 ? 127 : 32767;
    if (heads < 1 || classes < 2 || heads > QUTE_INT_MAX_HEADS_X_CLASSES / classes ||
        scale_q24 < 1u || scale_q24 > (1u << 24) || zero_point < zp_min || zero_point > zp_max) {
        return -1;
    }
    const int fast = q8 && scale_q24 == QUTE_INT_SCALE_Q24_DEFAULT && zero_point == QUTE_INT_ZERO_POINT_DEFAULT;
    const int32_t wmax = (int32_t)((1u << 24) / scale_q24);

    /* I1, I2: exact per-class sums of the clamped head values; I6: head accumulator */
    const int32_t a_h = (24 << LOG2_FRAC) - qute_int_log2_q20(scale_q24);
    int64_t acc_h = 0;
    for (int32_t c = 0; c < classes; ++c) {
        sums[c] = 0;
    }
    for (int32_t k = 0; k < heads; ++k) {
        for (int32_t c = 0; c < classes; ++c) {
            const int32_t i = k * classes + c;
            int32_t w = (q8 ? (int32_t)q8[i] : (int32_t)q16[i]) - zero_point;
            if (w < 0) {
                w = 0;
            }
            if (w > wmax) {
                w = wmax;
            }
            sums[c] += w;
            if (w > 0) {
                int32_t lg = fast ? log2_q20_u8[w - 1] : qute_int_log2_q20((uint32_t)w);
                acc_h += (int64_t)w * (int64_t)(a_h - lg);
            }
        }
    }

    /* I3, I4: argmax (first maximum), top two */
    int32_t best = 0;
    int32_t s1 = sums[0];
    for (int32_t c = 1; c < classes; ++c) {
        if (sums[c] > s1) {
            s1 = sums[c];
            best = c;
        }
    }
    int32_t s2 = -1;
    for (int32_t c = 0; c < classes; ++c) {
        if (c != best && sums[c] > s2) {
            s2 = sums[c];
        }
    }
    const int64_t den16 = (int64_t)heads << 8;
    out->predicted = best;
    out->confidence_q16 = (int32_t)rdiv((int64_t)s1 * scale_q24, den16);
    out->margin_q16 = (int32_t)rdiv((int64_t)(s1 - s2) * scale_q24, den16);

    /* I6: mean accumulator */
    const int32_t a_m = a_h + qute_int_log2_q20((uint32_t)heads);
    int64_t acc_m = 0;
    for (int32_t c = 0; c < classes; ++c) {
        int32_t v = sums[c];
        if (v > 0) {
            acc_m += (int64_t)v * (int64_t)(a_m - qute_int_log2_q20((uint32_t)v));
        }
    }

    /* I7, I8 */
    const int64_t den24 = (int64_t)heads << 24;
    int64_t mi_acc = acc_m - acc_h;
    int64_t h_bits = rdiv((acc_m > 0 ? acc_m : 0) * (int64_t)scale_q24, den24);
    int64_t mi_bits = rdiv((mi_acc > 0 ? mi_acc : 0) * (int64_t)scale_q24, den24);
    out->entropy_q20 = to_nats_q20(h_bits);
    out->mutual_information_q20 = to_nats_q20(mi_bits);
    return 0;
}

int qute_ensemble_scores_int(const int8_t *q, int32_t heads, int32_t classes, uint32_t scale_q24,
                             int32_t zero_point, int32_t *sums, qute_scores_int *out)
{
    return q ? scores_int(q, NULL, heads, classes, scale_q24, zero_point, sums, out) : -1;
}

int qute_ensemble_scores_int16(const int16_t *q, int32_t heads, int32_t classes, uint32_t scale_q24,
                               int32_t zero_point, int32_t *sums, qute_scores_int *out)
{
    return q ? scores_int(NULL, q, heads, classes, scale_q24, zero_point, sums, out) : -1;
}
