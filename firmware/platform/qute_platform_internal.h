/* Pieces of the platform layer that only the platform layer calls (one file per concern). */
#ifndef QUTE_PLATFORM_INTERNAL_H
#define QUTE_PLATFORM_INTERNAL_H

#include <stdint.h>

#include "qute_platform.h"

#define QUTE_REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* clock_<family>.c: PLL to the board's rated frequency. Returns 0, or nonzero when an oscillator
 * or the PLL did not become ready in time (the part then keeps running on its reset clock).
 * Only compiled into silicon builds (QUTE_CLOCK_INIT). */
int qute_clock_init(void);

/* cache_cortexm7.c: instruction and data caches on (silicon Cortex-M7 builds, QUTE_CACHE_INIT). */
void qute_cache_init(void);

/* console_<driver>.c */
void qute_console_init(void);

/* cycles_<counter>.c */
void qute_cycles_init(void);

/* platform_init.c: called by unexpected exceptions (startup_cortexm.c); prints the exception
 * number when the console is up and ends the program with a failure status. */
QUTE_NORETURN void qute_platform_fault(uint32_t exception);

#endif
