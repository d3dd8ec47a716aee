/* qute's firmware application: runs the generated model on each input, computes the ensemble's
 * prediction and uncertainty, and prints one line per input, then a summary line, on the console
 * UART (line format: qute/transcript.py, which also reads them back):
 *
 *   QUTE start format=F board=... target=... model=... samples=N heads=K classes=C counter=...
 *   QUTE sample=i label=y pred=p conf=0.dddd heads=<hex>,...,<hex> scores=<conf>,<margin>,<entropy>,<mi> cycles=n ucycles=u
 *   QUTE done samples=N correct=n crc32=xxxxxxxx
 *
 * What a build sets is in its generated qute_config.h (data only: the board's and model's names,
 * the calibration constants, which of the settings below apply) and, for embedded inputs, its
 * generated qute_inputs.c. This file decides nothing per build by itself:
 *
 * QUTE_INPUTS_UART  0: the QUTE_SAMPLES inputs (and labels) of qute_inputs.c, in flash, each
 *                   copied to where the model reads it before its timed run. 1: the inputs arrive
 *                   on the console UART, framed as qute.transcript.uart_payload writes them: "QUTI",
 *                   N as a little-endian uint32, then per input its label (little-endian int16,
 *                   -1: none) and QUTE_MODEL_INPUT0_SIZE int8 values, which go straight into the
 *                   model's input. Bytes before "QUTI" are skipped, and a "QUTE ready" line says
 *                   the receiver is on (a UART drops what arrives before).
 * QUTE_ENSEMBLE     1: the K outputs are probability vectors of QUTE_CLASSES values, and pred=,
 *                   conf= and the scores are computed (firmware/uncertainty); 0: pred=-1, and
 *                   only the output bytes are printed.
 * QUTE_UNCERTAINTY_INT (a compiler flag, set for cores with no FPU): the integer-only port of
 *                   qute.uncertainty.summarize_int on the int8 or int16 heads (iscores=: Q16 confidence and
 *                   margin, Q20 entropy and mutual information); without it the float32 port of
 *                   qute.uncertainty.summarize on the dequantized heads (scores=: float32 bits).
 *                   qute_config.h says which one the constants were made for.
 * QUTE_CALIBRATED   1: the abstain flag and the accuracy-drop monitor (qute calibrate's constants,
 *                   float32 or, on the integer path, integers; mirrored by qute.drift), printed
 *                   before cycles=.
 * QUTE_LABELLED     1: every embedded input has a label, and the summary line says how many
 *                   predictions are right (UART builds: when every input sent came with one).
 * QUTE_PROFILE      (compiler flag, qute build --profile): one "QUTE op" line per op of each run.
 * QUTE_HEADS, QUTE_EXITS  the model's outputs are QUTE_HEADS heads, then QUTE_EXITS early exits
 *                   (exit_0 ..., codegen/stages.py). Each sample line then says which exit= the
 *                   run stopped at (QUTE_EXITS: it ran to the end), and heads= leaves empty the
 *                   outputs that run did not compute.
 * QUTE_EXIT_POLICY  1: run stage by stage (qute_model_run_staged) and stop after exit k when its
 *                   own score (QUTE_EXIT_FIELD of that exit alone, or with QUTE_EXIT_CUMULATIVE
 *                   of the mean of exits 0..k, on the same float or integer path) passes
 *                   qute_exit_thresholds[k]; the sample then reports those scores and that
 *                   prediction, and the abstain flag and monitor take them. 0: run the whole
 *                   model (the ensemble of the heads reports). QUTE_EXIT_WINDOW (a window-based
 *                   cascade): exit k also stops when the score is on the uncertain side of
 *                   qute_exit_rejects[k], and the sample is rejected: abstain=1 on its line
 *                   (printed by every window build, calibrated or not).
 *
 * cycles= counts the model run (qute_model_run(); the input is already in place), ucycles= the
 * uncertainty module (scores, abstain decision and monitor update), with the same counter.
 * No dynamic allocation and no input or output buffer of its own: the model's input and outputs
 * live in its static arena (qute_model_input(0), qute_model_output(k)).
 */
#include <stdint.h>
#include <string.h>

#include "qute_app.h"
#include "qute_platform.h"

#if QUTE_ENSEMBLE && QUTE_INTEGER_PATH
#if !defined(QUTE_UNCERTAINTY_INT)
#error "qute_config.h was generated for the integer-only uncertainty path: compile with -DQUTE_UNCERTAINTY_INT"
#endif
#include "qute_uncertainty_int.h"
#elif QUTE_ENSEMBLE
#if defined(QUTE_UNCERTAINTY_INT)
#error "qute_config.h was generated for the float32 uncertainty path: compile without -DQUTE_UNCERTAINTY_INT"
#endif
#include "qute_uncertainty.h"
#endif
#if QUTE_CALIBRATED
#include "qute_monitor.h"
#endif

#if defined(QUTE_EMULATOR)
#define QUTE_TARGET QUTE_EMULATOR_TARGET
#else
#define QUTE_TARGET QUTE_BOARD
#endif

#if QUTE_CALIBRATED
static uint32_t qute_monitor_ring[QUTE_MONITOR_WINDOW];
static qute_monitor qute_mon;
#endif

/* An ensemble's heads share one type: int16 softmax outputs (qute's), or int8 (older models). */
#if QUTE_HEAD_BITS == 16
typedef int16_t qute_head_t;
#define QUTE_DEQUANTIZE qute_dequantize_s16
#define QUTE_SCORES_INT qute_ensemble_scores_int16
#else
typedef int8_t qute_head_t;
#define QUTE_DEQUANTIZE qute_dequantize
#define QUTE_SCORES_INT qute_ensemble_scores_int
#endif

/* Room for the K heads, or for every exit (a policy on the mean of the exits so far). */
#define QUTE_SCORED_MAX (QUTE_HEADS > QUTE_EXITS ? QUTE_HEADS : QUTE_EXITS)
#if QUTE_ENSEMBLE && QUTE_INTEGER_PATH
static qute_head_t qute_heads_q[QUTE_SCORED_MAX * QUTE_CLASSES];
static int32_t qute_sums[QUTE_CLASSES];
#elif QUTE_ENSEMBLE
static float qute_probs[QUTE_SCORED_MAX * QUTE_CLASSES];
static float qute_mean[QUTE_CLASSES];
#endif

#if QUTE_EXITS != QUTE_MODEL_NUM_EXITS || QUTE_HEADS + QUTE_EXITS != QUTE_MODEL_NUM_OUTPUTS
#error "qute_config.h and qute_model.h disagree on the model's heads and early exits: rebuild"
#endif
#if QUTE_EXIT_POLICY && !QUTE_ENSEMBLE
#error "an early-exit policy needs an ensemble classifier (its exits' scores decide)"
#endif

static void put_hex(uint32_t v, int digits)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; --i) {
        qute_console_putc(hex[(v >> (4 * i)) & 0xfu]);
    }
}

#if QUTE_ENSEMBLE
/* A probability in [0, 1] as 4 decimals from its value in units of 1/10000, for people: the
 * exact value is in scores= or iscores=. */
static void put_prob4(uint32_t ten_thousandths)
{
    qute_console_put_uint(ten_thousandths / 10000u);
    qute_console_putc('.');
    ten_thousandths %= 10000u;
    for (uint32_t d = 1000u; d != 0u; d /= 10u) {
        qute_console_putc((char)('0' + (ten_thousandths / d) % 10u));
    }
}
#endif

#if QUTE_ENSEMBLE && !QUTE_INTEGER_PATH
static void put_f32_bits(float f)
{
    union {
        float f;
        uint32_t u;
    } bits;
    bits.f = f;
    put_hex(bits.u, 8);
}
#endif

#if QUTE_INPUTS_UART
/* Skips bytes up to and including the next "QUTI". */
static void wait_for_magic(void)
{
    static const char magic[4] = { 'Q', 'U', 'T', 'I' };
    int matched = 0;
    while (matched < 4) {
        int c = qute_console_getc();
        if (c == magic[matched]) {
            ++matched;
        } else {
            matched = (c == magic[0]) ? 1 : 0;
        }
    }
}

static uint32_t get_le(int bytes)
{
    uint32_t v = 0;
    for (int i = 0; i < bytes; ++i) {
        v |= (uint32_t)qute_console_getc() << (8 * i);
    }
    return v;
}

/* One input frame: the label, then the input values, straight into the model's input. */
static int32_t get_input(void)
{
    int32_t label = (int32_t)(int16_t)(uint16_t)get_le(2);
    int8_t *input = qute_model_input(0);
    for (int32_t i = 0; i < QUTE_MODEL_INPUT0_SIZE; ++i) {
        input[i] = (int8_t)(uint8_t)qute_console_getc();
    }
    return label;
}
#endif

#if defined(QUTE_PROFILE)
/* The counter at the end of each op of the current run, in the order the ops run, read as
 * cycles= is (elapsed since the qute_cycles_start() before the run), so an op's count is the
 * difference from the previous reading and the counts add up to cycles= less the run's tail
 * (its return). Storing beats printing here: printing inside the run would be counted in the
 * next op. */
#define QUTE_PROFILE_SLOTS (QUTE_MODEL_NUM_OPS > 0 ? QUTE_MODEL_NUM_OPS : 1)
static uint32_t qute_op_at[QUTE_PROFILE_SLOTS];
static int32_t qute_op_index[QUTE_PROFILE_SLOTS];
static uint32_t qute_ops_seen;

void qute_model_profile_op(int op_index)
{
    const uint32_t now = qute_cycles_elapsed();
    if (qute_ops_seen < QUTE_PROFILE_SLOTS) {
        qute_op_at[qute_ops_seen] = now;
        qute_op_index[qute_ops_seen] = op_index;
        ++qute_ops_seen;
    }
}

static void put_op_counts(uint32_t sample)
{
    uint32_t before = 0;
    for (uint32_t i = 0; i < qute_ops_seen; ++i) {
        qute_console_puts("QUTE op sample=");
        qute_console_put_uint(sample);
        qute_console_puts(" index=");
        qute_console_put_int(qute_op_index[i]);
        qute_console_puts(" cycles=");
        qute_console_put_uint(qute_op_at[i] - before);
        qute_console_puts("\r\n");
        before = qute_op_at[i];
    }
}
#endif

/* zlib's CRC-32, bit by bit (no table: flash matters more than speed here). */
static uint32_t crc32_update(uint32_t crc, const int8_t *data, int32_t n)
{
    crc = ~crc;
    for (int32_t i = 0; i < n; ++i) {
        crc ^= (uint8_t)data[i];
        for (int b = 0; b < 8; ++b) {
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

/* What the uncertainty module makes of one run's outputs. */
typedef struct {
    int32_t pred;
    int rejected; /* a window policy stopped the run to reject the input */
#if QUTE_ENSEMBLE && QUTE_INTEGER_PATH
    qute_scores_int scores;
#elif QUTE_ENSEMBLE
    qute_scores scores;
#endif
#if QUTE_CALIBRATED
    int abstain;
    int alarm; /* -1: the window is not full yet */
#if QUTE_INTEGER_PATH
    int32_t score;
    uint32_t window_sum;
#else
    float score;
    float window_mean;
#endif
#endif
} qute_verdict;

#if QUTE_ENSEMBLE
/* The scores of the n probability vectors at outputs first .. first + n - 1, as one ensemble:
 * the K heads, or one early exit alone (n = 1). */
static void ensemble_scores(const int8_t *const outputs[], int32_t first, int32_t n, qute_verdict *v)
{
#if QUTE_INTEGER_PATH
    for (int32_t k = 0; k < n; ++k) {
        memcpy(&qute_heads_q[k * QUTE_CLASSES], outputs[first + k], QUTE_CLASSES * sizeof(qute_head_t));
    }
    if (QUTE_SCORES_INT(qute_heads_q, n, QUTE_CLASSES, QUTE_INT_SCALE_Q24, QUTE_INT_ZERO_POINT, qute_sums,
                        &v->scores) != 0) {
        qute_console_puts("QUTE error qute_ensemble_scores_int rejected its arguments\r\n");
        qute_exit(1);
    }
#else
    for (int32_t k = 0; k < n; ++k) {
        /* the arena keeps every tensor aligned (codegen.plan.ALIGN): the int16 view is safe */
        QUTE_DEQUANTIZE((const qute_head_t *)(const void *)outputs[first + k], QUTE_CLASSES,
                        qute_model_output_scales[first + k], qute_model_output_zero_points[first + k],
                        &qute_probs[k * QUTE_CLASSES]);
    }
    qute_ensemble_scores(qute_probs, n, QUTE_CLASSES, qute_mean, &v->scores);
#endif
    v->pred = v->scores.predicted;
}
#endif

#if QUTE_EXIT_POLICY
#if QUTE_INTEGER_PATH
static const int32_t qute_exit_thresholds[QUTE_EXITS] = QUTE_EXIT_THRESHOLDS;
#else
static const float qute_exit_thresholds[QUTE_EXITS] = QUTE_EXIT_THRESHOLDS;
#endif
#if QUTE_EXIT_WINDOW
#if QUTE_INTEGER_PATH
static const int32_t qute_exit_rejects[QUTE_EXITS] = QUTE_EXIT_REJECTS;
#else
static const float qute_exit_rejects[QUTE_EXITS] = QUTE_EXIT_REJECTS;
#endif
#endif
static const int8_t *qute_outputs[QUTE_MODEL_NUM_OUTPUTS];

/* Asked by the model after each exit's stage: that exit's own scores (or those of the mean of
 * the exits so far: they are consecutive outputs), and whether they pass its threshold (then the
 * run stops and the sample reports them). */
static int stop_at_exit(int exit_index, void *user)
{
    qute_verdict *v = (qute_verdict *)user;
#if QUTE_EXIT_CUMULATIVE
    ensemble_scores(qute_outputs, QUTE_HEADS, exit_index + 1, v);
#else
    ensemble_scores(qute_outputs, QUTE_HEADS + exit_index, 1, v);
#endif
    if (QUTE_EXIT_STOPS(v->scores.QUTE_EXIT_FIELD, qute_exit_thresholds[exit_index])) {
        return 1;
    }
#if QUTE_EXIT_WINDOW
    if (!QUTE_EXIT_STOPS(v->scores.QUTE_EXIT_FIELD, qute_exit_rejects[exit_index])) {
        v->rejected = 1;
        return 1;
    }
#endif
    return 0;
}
#endif

/* Whether output k was computed by a run that stopped at exit `taken` (QUTE_EXITS: the end). */
static int computed(int32_t k, int32_t taken)
{
    return k < QUTE_HEADS ? taken == QUTE_EXITS : k - QUTE_HEADS <= taken;
}

/* The uncertainty module after a run: the ensemble's scores when the run reached the heads (an
 * early stop has its exit's already), then the calibrated decisions on whichever reported. */
static void uncertainty(const int8_t *const outputs[], int32_t taken, qute_verdict *v)
{
    (void)outputs; /* a model that is not an ensemble classifier has no scores */
    (void)taken;
#if QUTE_ENSEMBLE
    if (taken == QUTE_EXITS) {
        ensemble_scores(outputs, 0, QUTE_HEADS, v);
    }
#else
    v->pred = -1;
#endif
#if QUTE_CALIBRATED && QUTE_INTEGER_PATH
    v->score = v->scores.QUTE_ABSTAIN_FIELD;
    v->abstain = v->rejected || !QUTE_ACCEPTS(v->score, QUTE_ABSTAIN_THRESHOLD_INT);
    v->window_sum = 0u;
    v->alarm = qute_monitor_update_q16(&qute_mon, (uint32_t)v->scores.confidence_q16, &v->window_sum);
#elif QUTE_CALIBRATED
    v->score = v->scores.QUTE_ABSTAIN_FIELD;
    v->abstain = v->rejected || !QUTE_ACCEPTS(v->score, QUTE_ABSTAIN_THRESHOLD);
    v->window_mean = 0.0f;
    v->alarm = qute_monitor_update(&qute_mon, v->scores.confidence, &v->window_mean);
#endif
}

static void put_sample(uint32_t s, int32_t label, const qute_verdict *v, const int8_t *const outputs[],
                       int32_t taken, uint32_t cycles, uint32_t ucycles)
{
    qute_console_puts("QUTE sample=");
    qute_console_put_uint(s);
    qute_console_puts(" label=");
    qute_console_put_int(label);
    qute_console_puts(" pred=");
    qute_console_put_int(v->pred);
#if QUTE_ENSEMBLE && QUTE_INTEGER_PATH
    qute_console_puts(" conf=");
    put_prob4(((uint32_t)v->scores.confidence_q16 * 10000u + 32768u) >> 16);
#elif QUTE_ENSEMBLE
    qute_console_puts(" conf=");
    put_prob4((uint32_t)(v->scores.confidence * 10000.0f + 0.5f));
#endif
#if QUTE_EXITS > 0
    qute_console_puts(" exit=");
    qute_console_put_int(taken);
#endif
    qute_console_puts(" heads=");
    for (int32_t k = 0; k < QUTE_MODEL_NUM_OUTPUTS; ++k) {
        if (k != 0) {
            qute_console_putc(',');
        }
        for (int32_t i = 0; computed(k, taken) && i < qute_model_output_sizes[k]; ++i) {
            put_hex((uint8_t)outputs[k][i], 2);
        }
    }
#if QUTE_ENSEMBLE && QUTE_INTEGER_PATH
    qute_console_puts(" iscores=");
    qute_console_put_int(v->scores.confidence_q16);
    qute_console_putc(',');
    qute_console_put_int(v->scores.margin_q16);
    qute_console_putc(',');
    qute_console_put_int(v->scores.entropy_q20);
    qute_console_putc(',');
    qute_console_put_int(v->scores.mutual_information_q20);
#elif QUTE_ENSEMBLE
    qute_console_puts(" scores=");
    put_f32_bits(v->scores.confidence);
    qute_console_putc(',');
    put_f32_bits(v->scores.margin);
    qute_console_putc(',');
    put_f32_bits(v->scores.entropy);
    qute_console_putc(',');
    put_f32_bits(v->scores.mutual_information);
#endif
#if QUTE_CALIBRATED && QUTE_INTEGER_PATH
    qute_console_puts(" iscore=");
    qute_console_put_int(v->score);
    qute_console_puts(v->abstain ? " abstain=1 window_sum=" : " abstain=0 window_sum=");
    if (v->alarm < 0) {
        qute_console_putc('-');
    } else {
        qute_console_put_uint(v->window_sum);
    }
    qute_console_puts(v->alarm > 0 ? " alarm=1" : " alarm=0");
#elif QUTE_CALIBRATED
    qute_console_puts(" score=");
    put_f32_bits(v->score);
    qute_console_puts(v->abstain ? " abstain=1 window_mean=" : " abstain=0 window_mean=");
    if (v->alarm < 0) {
        qute_console_putc('-');
    } else {
        put_f32_bits(v->window_mean);
    }
    qute_console_puts(v->alarm > 0 ? " alarm=1" : " alarm=0");
#elif QUTE_EXIT_POLICY && QUTE_EXIT_WINDOW
    qute_console_puts(v->rejected ? " abstain=1" : " abstain=0");
#endif
    qute_console_puts(" cycles=");
    qute_console_put_uint(cycles);
    qute_console_puts(" ucycles=");
    qute_console_put_uint(ucycles);
    qute_console_puts("\r\n");
}

int main(void)
{
    uint32_t crc = 0;
    uint32_t correct = 0;
    int labelled = QUTE_LABELLED; /* "correct=" only when every input came with a label */
    /* The outputs, where the model writes them (fixed places in its arena), valid after each run. */
    const int8_t *outputs[QUTE_MODEL_NUM_OUTPUTS];
    for (int32_t k = 0; k < QUTE_MODEL_NUM_OUTPUTS; ++k) {
        outputs[k] = qute_model_output(k);
#if QUTE_EXIT_POLICY
        qute_outputs[k] = outputs[k];
#endif
    }

    qute_platform_init();
#if QUTE_CALIBRATED && QUTE_INTEGER_PATH
    (void)qute_monitor_init_q16(&qute_mon, qute_monitor_ring, QUTE_MONITOR_WINDOW, QUTE_MONITOR_RHO_SUM);
#elif QUTE_CALIBRATED
    (void)qute_monitor_init(&qute_mon, qute_monitor_ring, QUTE_MONITOR_WINDOW, QUTE_MONITOR_RHO);
#endif
#if QUTE_INPUTS_UART
    qute_console_puts("QUTE ready inputs=uart input_bytes=");
    qute_console_put_uint((uint32_t)QUTE_MODEL_INPUT0_SIZE);
    qute_console_puts("\r\n");
    wait_for_magic();
    const uint32_t samples = get_le(4);
#else
    const uint32_t samples = QUTE_SAMPLES;
#endif
    qute_console_puts("QUTE start format=" QUTE_TRANSCRIPT_FORMAT " board=" QUTE_BOARD " target=" QUTE_TARGET
                      " model=" QUTE_MODEL_ID " samples=");
    qute_console_put_uint(samples);
    qute_console_puts(QUTE_START_FIELDS " counter=");
    qute_console_puts(qute_cycles_name());
    qute_console_puts("\r\n");

    for (uint32_t s = 0; s < samples; ++s) {
#if defined(QUTE_PROFILE)
        qute_ops_seen = 0u;
#endif
#if QUTE_INPUTS_UART
        const int32_t label = get_input();
        if (label < 0) {
            labelled = 0;
        }
#else
        const int32_t label = qute_labels[s];
        memcpy(qute_model_input(0), qute_inputs[s], QUTE_MODEL_INPUT0_SIZE); /* the run overwrites it */
#endif
        qute_verdict v;
        v.rejected = 0;
        int32_t taken = QUTE_EXITS;
        qute_cycles_start();
#if QUTE_EXIT_POLICY
        taken = qute_model_run_staged(stop_at_exit, &v);
#else
        qute_model_run();
#endif
        const uint32_t cycles = qute_cycles_elapsed();
        qute_cycles_start(); /* the uncertainty module, on the same counter */
        uncertainty(outputs, taken, &v);
        const uint32_t ucycles = qute_cycles_elapsed();
        if (v.pred == label) {
            ++correct;
        }
        for (int32_t k = 0; k < QUTE_MODEL_NUM_OUTPUTS; ++k) {
            if (computed(k, taken)) {
                crc = crc32_update(crc, outputs[k], qute_model_output_sizes[k]);
            }
        }
#if defined(QUTE_PROFILE)
        put_op_counts(s);
#endif
        put_sample(s, label, &v, outputs, taken, cycles, ucycles);
    }

    qute_console_puts("QUTE done samples=");
    qute_console_put_uint(samples);
    if (labelled) {
        qute_console_puts(" correct=");
        qute_console_put_uint(correct);
    }
    qute_console_puts(" crc32=");
    put_hex(crc, 8);
    qute_console_puts("\r\n");
    qute_exit(0);
    return 0;
}
