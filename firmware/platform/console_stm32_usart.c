/* Console on an STM32 USART, register level. Two register layouts:
 *   F4 (RM0090): SR +0x00 (TXE bit 7, RXNE bit 5, ORE bit 3), DR +0x04, BRR +0x08, CR1 +0x0C (UE
 *   bit 13, TE bit 3, RE bit 2); ORE clears on reading SR then DR
 *   F7/L4 (RM0385, RM0394): CR1 +0x00 (UE bit 0, RE bit 2, TE bit 3), BRR +0x0C, ISR +0x1C (TXE
 *   bit 7, RXNE bit 5, ORE bit 3), ICR +0x20 (ORECF bit 3), RDR +0x24, TDR +0x28; the kernel clock is selectable (DCKCFGR2 on F7, CCIPR on L4; 2 bits per
 *   instance, 0b10 = HSI16), which QUTE_CONSOLE_CLOCK_HSI uses so the baud rate does not depend
 *   on the PLL.
 * Under QEMU (netduinoplus2) the USART works as on silicon while RCC and GPIO read 0 and ignore
 * writes, so nothing here waits on an RCC flag.
 */
#include "stm32_common.h"

#if !defined(QUTE_CONSOLE_BASE) || !defined(QUTE_CONSOLE_BAUD) || !defined(QUTE_CONSOLE_CLOCK_HZ)
#error "console_stm32_usart.c needs QUTE_CONSOLE_BASE, QUTE_CONSOLE_BAUD and QUTE_CONSOLE_CLOCK_HZ"
#endif

/* Instance -> clock enable register and bit, and index of its kernel clock selection field. */
#if defined(QUTE_STM32F4) || defined(QUTE_STM32F7)
#if QUTE_CONSOLE_BASE == 0x40011000
#define USART_ENR QUTE_RCC_APB2ENR
#define USART_EN_BIT 4
#define USART_SEL_INDEX 0
#elif QUTE_CONSOLE_BASE == 0x40004400
#define USART_ENR QUTE_RCC_APB1ENR
#define USART_EN_BIT 17
#define USART_SEL_INDEX 1
#elif QUTE_CONSOLE_BASE == 0x40004800
#define USART_ENR QUTE_RCC_APB1ENR
#define USART_EN_BIT 18
#define USART_SEL_INDEX 2
#elif QUTE_CONSOLE_BASE == 0x40011400
#define USART_ENR QUTE_RCC_APB2ENR
#define USART_EN_BIT 5
#define USART_SEL_INDEX 5
#else
#error "console_stm32_usart.c: unsupported USART base address (F4/F7: USART1, USART2, USART3, USART6)"
#endif
#else /* L4 */
#if QUTE_CONSOLE_BASE == 0x40013800
#define USART_ENR QUTE_RCC_APB2ENR
#define USART_EN_BIT 14
#define USART_SEL_INDEX 0
#elif QUTE_CONSOLE_BASE == 0x40004400
#define USART_ENR QUTE_RCC_APB1ENR1
#define USART_EN_BIT 17
#define USART_SEL_INDEX 1
#elif QUTE_CONSOLE_BASE == 0x40004800
#define USART_ENR QUTE_RCC_APB1ENR1
#define USART_EN_BIT 18
#define USART_SEL_INDEX 2
#else
#error "console_stm32_usart.c: unsupported USART base address (L4: USART1, USART2, USART3)"
#endif
#endif

#if defined(QUTE_STM32F4)
#define USART_STATUS (QUTE_CONSOLE_BASE + 0x00u)
#define USART_TX_DATA (QUTE_CONSOLE_BASE + 0x04u)
#define USART_RX_DATA (QUTE_CONSOLE_BASE + 0x04u)
#define USART_BRR (QUTE_CONSOLE_BASE + 0x08u)
#define USART_CR1 (QUTE_CONSOLE_BASE + 0x0Cu)
#define CR1_UE (1u << 13)
#else
#define USART_CR1 (QUTE_CONSOLE_BASE + 0x00u)
#define USART_BRR (QUTE_CONSOLE_BASE + 0x0Cu)
#define USART_STATUS (QUTE_CONSOLE_BASE + 0x1Cu)
#define USART_ICR (QUTE_CONSOLE_BASE + 0x20u)
#define USART_RX_DATA (QUTE_CONSOLE_BASE + 0x24u)
#define USART_TX_DATA (QUTE_CONSOLE_BASE + 0x28u)
#define CR1_UE (1u << 0)
#endif
#define CR1_RE (1u << 2)
#define CR1_TE (1u << 3)
#define STATUS_TXE (1u << 7)
#define STATUS_RXNE (1u << 5)
#define STATUS_ORE (1u << 3)

#if defined(QUTE_CONSOLE_CLOCK_HSI) && defined(QUTE_STM32F4)
#error "STM32F4 USARTs run on their APB clock only (console clock = \"pclk\")"
#endif

void qute_console_init(void)
{
#if defined(QUTE_CONSOLE_CLOCK_HSI)
#if defined(QUTE_STM32L4) && !defined(QUTE_EMULATOR)
    /* HSI16 is off after reset on L4 (the part starts on MSI). */
    QUTE_REG32(QUTE_RCC_CR) |= 1u << 8; /* HSION */
    for (uint32_t i = 0; i < 100000u && !(QUTE_REG32(QUTE_RCC_CR) & (1u << 10)); ++i) {
    }
#endif
    QUTE_REG32(QUTE_RCC_KERNEL_CLOCK_SEL) =
        (QUTE_REG32(QUTE_RCC_KERNEL_CLOCK_SEL) & ~(3u << (2 * USART_SEL_INDEX))) | (2u << (2 * USART_SEL_INDEX));
#endif
    QUTE_REG32(USART_ENR) |= 1u << USART_EN_BIT;
    (void)QUTE_REG32(USART_ENR);
    qute_stm32_console_pins();

    QUTE_REG32(USART_CR1) = 0; /* BRR may only change while the USART is disabled */
    QUTE_REG32(USART_BRR) = ((uint32_t)QUTE_CONSOLE_CLOCK_HZ + (uint32_t)QUTE_CONSOLE_BAUD / 2u) / (uint32_t)QUTE_CONSOLE_BAUD;
    QUTE_REG32(USART_CR1) = CR1_UE | CR1_TE | CR1_RE;
}

void qute_console_putc(char c)
{
    while (!(QUTE_REG32(USART_STATUS) & STATUS_TXE)) {
    }
    QUTE_REG32(USART_TX_DATA) = (uint8_t)c;
}

int qute_console_getc(void)
{
    uint32_t status;
    while (!((status = QUTE_REG32(USART_STATUS)) & STATUS_RXNE)) {
#if !defined(QUTE_STM32F4)
        if (status & STATUS_ORE) { /* F7/L4 stop receiving until the overrun is acknowledged */
            QUTE_REG32(USART_ICR) = STATUS_ORE;
        }
#endif
    }
    return (int)(QUTE_REG32(USART_RX_DATA) & 0xffu); /* on F4, SR then DR also clears ORE */
}
