/* What the firmware needs from a board: implemented once per family of parts under
 * firmware/platform/, chosen by the board descriptor (boards/<name>.toml).
 *
 * The application (firmware/app/qute_app.c) only talks to this interface, so the generated model,
 * the kernels and the uncertainty code are the same bytes on every board of a core.
 *
 * Which .c files implement it for a board, and with which -D settings, is decided by
 * qute.boards.platform_sources() / platform_defines(); boards/README.md lists the choices.
 */
#ifndef QUTE_PLATFORM_H
#define QUTE_PLATFORM_H

#include <stdint.h>

#if defined(__GNUC__)
#define QUTE_NORETURN __attribute__((noreturn))
#else
#define QUTE_NORETURN
#endif

/* Clocks to the board's rated frequency (skipped in emulator builds: QEMU models no RCC),
 * console UART, cycle counter, FPU. Called first thing in main(). */
void qute_platform_init(void);

/* Blocking write of one byte / a NUL-terminated string to the console UART. Bytes go out as
 * they are: no "\n" -> "\r\n" translation (readers strip a trailing "\r" if a terminal adds one). */
void qute_console_putc(char c);
void qute_console_puts(const char *s);

/* Blocking read of one byte (0..255) from the console UART: how inputs reach a build made with
 * `qute build --inputs uart`. An overrun (a byte arriving while the previous one was unread) is
 * cleared and the late byte dropped; the host avoids it by sending the next input only once the
 * previous one has been answered. */
int qute_console_getc(void);

/* Decimal numbers without printf (newlib's printf costs ~20 KB of flash). */
void qute_console_put_int(int32_t v);
void qute_console_put_uint(uint32_t v);

/* Free-running counter for timing one inference; qute_cycles_name() says what it counts
 * ("cycles" from the DWT on silicon, "instructions" from SysTick under QEMU -icount).
 * Overflows of the hardware counter are accounted for; the result saturates at UINT32_MAX. */
void qute_cycles_start(void);
uint32_t qute_cycles_elapsed(void);
const char *qute_cycles_name(void);

/* Ends the program: semihosting exit in emulator builds (status 0 = success), else a
 * low-power wait forever. */
QUTE_NORETURN void qute_exit(int status);

#endif
