/* qute_platform_init(): clock, caches, console and cycle counter, in that order (the console's
 * baud rate divisor may depend on the bus clock the clock set-up establishes). */
#include "qute_platform_internal.h"

static volatile int console_ready;

void qute_platform_init(void)
{
#if defined(QUTE_CLOCK_INIT) && !defined(QUTE_EMULATOR)
    int clock_failed = qute_clock_init();
#endif
#if defined(QUTE_CACHE_INIT) && !defined(QUTE_EMULATOR)
    qute_cache_init();
#endif
    qute_console_init();
    console_ready = 1;
#if defined(QUTE_CLOCK_INIT) && !defined(QUTE_EMULATOR)
    if (clock_failed) {
        qute_console_puts("qute: warning: clock set-up failed, running on the reset clock\n");
    }
#endif
    qute_cycles_init();
}

void qute_platform_fault(uint32_t exception)
{
    if (console_ready) {
        qute_console_puts("qute: fault: exception ");
        qute_console_put_uint(exception);
        qute_console_puts("\n");
    }
    qute_exit(3);
}
