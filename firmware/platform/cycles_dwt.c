/* Cycle counter on silicon: the DWT's CYCCNT (Armv7-M ARM, "Data Watchpoint and Trace"). Trace
 * must be enabled in DEMCR, and the Cortex-M7 also needs its DWT software-unlocked (LAR). 32 bits
 * wrap after 19.9 s at 216 MHz; unsigned subtraction covers one wrap. QEMU does not implement
 * CYCCNT (it reads 0): emulator builds use cycles_systick.c. */
#include "qute_platform_internal.h"

#define DEMCR 0xE000EDFCu
#define DEMCR_TRCENA (1u << 24)
#define DWT_CTRL 0xE0001000u
#define DWT_CYCCNT 0xE0001004u
#define DWT_LAR 0xE0001FB0u
#define DWT_CTRL_CYCCNTENA (1u << 0)

static uint32_t start;

void qute_cycles_init(void)
{
    QUTE_REG32(DEMCR) |= DEMCR_TRCENA;
    QUTE_REG32(DWT_LAR) = 0xC5ACCE55u;
    QUTE_REG32(DWT_CYCCNT) = 0;
    QUTE_REG32(DWT_CTRL) |= DWT_CTRL_CYCCNTENA;
}

void qute_cycles_start(void)
{
    start = QUTE_REG32(DWT_CYCCNT);
}

uint32_t qute_cycles_elapsed(void)
{
    return QUTE_REG32(DWT_CYCCNT) - start;
}

const char *qute_cycles_name(void)
{
    return "cycles";
}
