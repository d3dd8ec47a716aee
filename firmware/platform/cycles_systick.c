/* Counter from SysTick (Armv7-M ARM, "The system timer, SysTick"): processor clock, full 24-bit
 * reload, counting down; its interrupt counts wraps, so intervals of any length are measured.
 *
 * Under QEMU with -icount shift=0 every instruction advances virtual time by 1 ns and SysTick
 * follows virtual time at the machine's CPU clock, so ticks * QUTE_SYSTICK_NUM / QUTE_SYSTICK_DEN
 * (= 1e9 / that clock, from the board's [emulation] systick_hz) is the number of instructions
 * executed: deterministic run after run, and what emulator builds report ("instructions").
 * On silicon the ratio is 1 and the result is core cycles. */
#include "qute_platform_internal.h"

#if !defined(QUTE_SYSTICK_NUM)
#define QUTE_SYSTICK_NUM 1u
#define QUTE_SYSTICK_DEN 1u
#endif

#define SYST_CSR 0xE000E010u
#define SYST_RVR 0xE000E014u
#define SYST_CVR 0xE000E018u
#define SCB_ICSR 0xE000ED04u
#define ICSR_PENDSTSET (1u << 26)
#define CSR_ENABLE (1u << 0)
#define CSR_TICKINT (1u << 1)
#define CSR_CLKSOURCE_CPU (1u << 2)
#define RELOAD 0x00FFFFFFu

static volatile uint32_t wraps;
static uint64_t start;

void SysTick_Handler(void)
{
    wraps++;
}

void qute_cycles_init(void)
{
    QUTE_REG32(SYST_CSR) = 0;
    QUTE_REG32(SYST_RVR) = RELOAD;
    QUTE_REG32(SYST_CVR) = 0; /* any write clears it; it reloads on the next tick */
    wraps = 0;
    QUTE_REG32(SYST_CSR) = CSR_ENABLE | CSR_TICKINT | CSR_CLKSOURCE_CPU;
}

/* Ticks since qute_cycles_init(). A wrap may have happened while its interrupt is still pending
 * (between reading the count and the handler running): then the count read is near the top of
 * the range and one more wrap is owed. */
static uint64_t ticks(void)
{
    uint32_t before, after, count, pending;
    do {
        before = wraps;
        count = QUTE_REG32(SYST_CVR);
        pending = QUTE_REG32(SCB_ICSR) & ICSR_PENDSTSET;
        after = wraps;
    } while (before != after);
    uint64_t n = before;
    if (pending && count > RELOAD / 2u) {
        n++;
    }
    return (n << 24) + (RELOAD - count);
}

void qute_cycles_start(void)
{
    start = ticks();
}

uint32_t qute_cycles_elapsed(void)
{
    uint64_t n = (ticks() - start) * (uint64_t)QUTE_SYSTICK_NUM / (uint64_t)QUTE_SYSTICK_DEN;
    return n > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)n;
}

const char *qute_cycles_name(void)
{
#if defined(QUTE_EMULATOR)
    return "instructions";
#else
    return "cycles";
#endif
}
