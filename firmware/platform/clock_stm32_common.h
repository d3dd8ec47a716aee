/* What the clock set-up files share: bounded waits on ready flags, and the encodings of the bus
 * prescalers (RCC_CFGR HPRE/PPRE fields, identical on F4, F7 and L4). The PLL settings come from
 * the board descriptor as -D values (qute.boards.platform_defines checks their ranges and that they
 * give the board's cpu_mhz). */
#ifndef QUTE_CLOCK_STM32_COMMON_H
#define QUTE_CLOCK_STM32_COMMON_H

#include "qute_platform_internal.h"

#define QUTE_CLOCK_TIMEOUT 1000000u

/* Waits until (reg & mask) == value; returns 0 on success, 1 after QUTE_CLOCK_TIMEOUT polls. */
static inline int qute_wait_flag(uint32_t reg, uint32_t mask, uint32_t value)
{
    for (uint32_t i = 0; i < QUTE_CLOCK_TIMEOUT; ++i) {
        if ((QUTE_REG32(reg) & mask) == value) {
            return 0;
        }
    }
    return 1;
}

/* HPRE: 0 = /1, 0b1000 + k = /2^(k+1) for 2..16, 0b1100.. = /64../512. */
#if !defined(QUTE_AHB_DIV) || QUTE_AHB_DIV == 1
#define QUTE_HPRE_BITS 0x0u
#elif QUTE_AHB_DIV == 2
#define QUTE_HPRE_BITS 0x8u
#elif QUTE_AHB_DIV == 4
#define QUTE_HPRE_BITS 0x9u
#else
#error "QUTE_AHB_DIV must be 1, 2 or 4"
#endif

/* PPRE: 0 = /1, 0b100 = /2, 0b101 = /4, 0b110 = /8, 0b111 = /16. */
#define QUTE_PPRE_ENCODE(div) ((div) == 1 ? 0u : (div) == 2 ? 4u : (div) == 4 ? 5u : (div) == 8 ? 6u : 7u)

#endif
