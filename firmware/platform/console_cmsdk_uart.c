/* Console on an Arm CMSDK APB UART (MPS2 FPGA images: UART0 at 0x40004000). Registers: DATA +0x00,
 * STATE +0x04 (bit 0 TX buffer full, bit 1 RX buffer full, bit 3 RX overrun: write 1 to clear),
 * CTRL +0x08 (bit 0 TX enable, bit 1 RX enable), BAUDDIV +0x10 (>= 16). */
#include "qute_platform_internal.h"

#if !defined(QUTE_CONSOLE_BASE) || !defined(QUTE_CONSOLE_BAUD) || !defined(QUTE_CONSOLE_CLOCK_HZ)
#error "console_cmsdk_uart.c needs QUTE_CONSOLE_BASE, QUTE_CONSOLE_BAUD and QUTE_CONSOLE_CLOCK_HZ"
#endif

#define UART_DATA (QUTE_CONSOLE_BASE + 0x00u)
#define UART_STATE (QUTE_CONSOLE_BASE + 0x04u)
#define UART_CTRL (QUTE_CONSOLE_BASE + 0x08u)
#define UART_BAUDDIV (QUTE_CONSOLE_BASE + 0x10u)

#define STATE_TX_FULL (1u << 0)
#define STATE_RX_FULL (1u << 1)
#define STATE_RX_OVERRUN (1u << 3)
#define CTRL_TX_ENABLE (1u << 0)
#define CTRL_RX_ENABLE (1u << 1)

void qute_console_init(void)
{
    uint32_t div = ((uint32_t)QUTE_CONSOLE_CLOCK_HZ + (uint32_t)QUTE_CONSOLE_BAUD / 2u) / (uint32_t)QUTE_CONSOLE_BAUD;
    QUTE_REG32(UART_BAUDDIV) = div < 16u ? 16u : div;
    QUTE_REG32(UART_CTRL) = CTRL_TX_ENABLE | CTRL_RX_ENABLE;
}

void qute_console_putc(char c)
{
    while (QUTE_REG32(UART_STATE) & STATE_TX_FULL) {
    }
    QUTE_REG32(UART_DATA) = (uint8_t)c;
}

int qute_console_getc(void)
{
    while (!(QUTE_REG32(UART_STATE) & STATE_RX_FULL)) {
    }
    QUTE_REG32(UART_STATE) = STATE_RX_OVERRUN;
    return (int)(QUTE_REG32(UART_DATA) & 0xffu);
}
