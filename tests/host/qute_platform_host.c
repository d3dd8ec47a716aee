/* firmware/platform/qute_platform.h on a PC, for running the firmware application under the host's
 * gcc in the tests (with firmware/platform/console_common.c): the console is stdout/stdin, the counter counts nothing (0), and exiting is exit(). */
#include <stdio.h>
#include <stdlib.h>

#include "qute_platform.h"

void qute_platform_init(void)
{
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
}

void qute_console_putc(char c)
{
    putchar((unsigned char)c);
}

int qute_console_getc(void)
{
    int c = getchar();
    if (c == EOF) { /* the host sent less than the frame promised: a UART would wait forever */
        fflush(stdout);
        exit(3);
    }
    return c;
}

void qute_cycles_start(void)
{
}

uint32_t qute_cycles_elapsed(void)
{
    return 0u;
}

const char *qute_cycles_name(void)
{
    return "none";
}

void qute_exit(int status)
{
    fflush(stdout);
    exit(status);
}
