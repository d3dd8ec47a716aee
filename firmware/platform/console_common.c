/* Console helpers on top of the driver's qute_console_putc(). */
#include "qute_platform.h"

void qute_console_puts(const char *s)
{
    while (*s != '\0') {
        qute_console_putc(*s++);
    }
}

void qute_console_put_uint(uint32_t v)
{
    char digits[10];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    while (n > 0) {
        qute_console_putc(digits[--n]);
    }
}

void qute_console_put_int(int32_t v)
{
    if (v < 0) {
        qute_console_putc('-');
        /* -(INT32_MIN) does not fit an int32_t; its magnitude does fit a uint32_t. */
        qute_console_put_uint(0u - (uint32_t)v);
    } else {
        qute_console_put_uint((uint32_t)v);
    }
}
