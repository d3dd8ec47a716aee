/* Console on the STM32L4 LPUART1 (0x40008000; NUCLEO-L4R5ZI routes it to the ST-LINK virtual COM
 * port on PG7/PG8, AF8). Same registers as the L4 USART (CR1 +0x00, BRR +0x0C, ISR +0x1C, TDR +0x28)
 * but BRR = 256 * f_clk / baud (RM0432 "LPUART baud rate generation"), with 3 * baud <= f_clk <=
 * 4096 * baud. Clocked from HSI16 (CCIPR.LPUART1SEL = 0b10) when QUTE_CONSOLE_CLOCK_HSI. */
#include "stm32_common.h"

#if !defined(QUTE_STM32L4)
#error "console_stm32_lpuart.c is for STM32L4 parts"
#endif
#if !defined(QUTE_CONSOLE_BASE) || !defined(QUTE_CONSOLE_BAUD) || !defined(QUTE_CONSOLE_CLOCK_HZ)
#error "console_stm32_lpuart.c needs QUTE_CONSOLE_BASE, QUTE_CONSOLE_BAUD and QUTE_CONSOLE_CLOCK_HZ"
#endif
#if QUTE_CONSOLE_BASE != 0x40008000
#error "console_stm32_lpuart.c: LPUART1 is at 0x40008000"
#endif

#define LPUART_CR1 (QUTE_CONSOLE_BASE + 0x00u)
#define LPUART_BRR (QUTE_CONSOLE_BASE + 0x0Cu)
#define LPUART_ISR (QUTE_CONSOLE_BASE + 0x1Cu)
#define LPUART_ICR (QUTE_CONSOLE_BASE + 0x20u)
#define LPUART_RDR (QUTE_CONSOLE_BASE + 0x24u)
#define LPUART_TDR (QUTE_CONSOLE_BASE + 0x28u)
#define CR1_UE (1u << 0)
#define CR1_RE (1u << 2)
#define CR1_TE (1u << 3)
#define ISR_TXE (1u << 7)
#define ISR_RXNE (1u << 5)
#define ISR_ORE (1u << 3)
#define LPUART1_SEL_SHIFT 10u
#define LPUART1EN (1u << 0) /* RCC_APB1ENR2 */

void qute_console_init(void)
{
#if defined(QUTE_CONSOLE_CLOCK_HSI)
#if !defined(QUTE_EMULATOR)
    QUTE_REG32(QUTE_RCC_CR) |= 1u << 8; /* HSION */
    for (uint32_t i = 0; i < 100000u && !(QUTE_REG32(QUTE_RCC_CR) & (1u << 10)); ++i) {
    }
#endif
    QUTE_REG32(QUTE_RCC_KERNEL_CLOCK_SEL) =
        (QUTE_REG32(QUTE_RCC_KERNEL_CLOCK_SEL) & ~(3u << LPUART1_SEL_SHIFT)) | (2u << LPUART1_SEL_SHIFT);
#endif
    QUTE_REG32(QUTE_RCC_APB1ENR2) |= LPUART1EN;
    (void)QUTE_REG32(QUTE_RCC_APB1ENR2);
    qute_stm32_console_pins();

    QUTE_REG32(LPUART_CR1) = 0;
    uint64_t brr = ((uint64_t)QUTE_CONSOLE_CLOCK_HZ * 256u + (uint64_t)QUTE_CONSOLE_BAUD / 2u) / (uint64_t)QUTE_CONSOLE_BAUD;
    QUTE_REG32(LPUART_BRR) = (uint32_t)brr;
    QUTE_REG32(LPUART_CR1) = CR1_UE | CR1_TE | CR1_RE;
}

void qute_console_putc(char c)
{
    while (!(QUTE_REG32(LPUART_ISR) & ISR_TXE)) {
    }
    QUTE_REG32(LPUART_TDR) = (uint8_t)c;
}

int qute_console_getc(void)
{
    uint32_t isr;
    while (!((isr = QUTE_REG32(LPUART_ISR)) & ISR_RXNE)) {
        if (isr & ISR_ORE) { /* reception stops until the overrun is acknowledged */
            QUTE_REG32(LPUART_ICR) = ISR_ORE;
        }
    }
    return (int)(QUTE_REG32(LPUART_RDR) & 0xffu);
}
