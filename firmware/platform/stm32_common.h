/* RCC and GPIO facts shared by the STM32 console drivers, per family (QUTE_STM32F4, QUTE_STM32F7,
 * QUTE_STM32L4), and the console pins set up as alternate functions. Sources: RM0090 (F405),
 * RM0385 / RM0410 (F746 / F767), RM0394 (L432), RM0432 (L4R5). */
#ifndef QUTE_STM32_COMMON_H
#define QUTE_STM32_COMMON_H

#include "qute_platform_internal.h"

#if defined(QUTE_STM32F4) || defined(QUTE_STM32F7)
#define QUTE_RCC_BASE 0x40023800u
#define QUTE_RCC_GPIOENR (QUTE_RCC_BASE + 0x30u) /* AHB1ENR: GPIOxEN = bit x */
#define QUTE_RCC_APB1ENR (QUTE_RCC_BASE + 0x40u)
#define QUTE_RCC_APB2ENR (QUTE_RCC_BASE + 0x44u)
#define QUTE_RCC_KERNEL_CLOCK_SEL (QUTE_RCC_BASE + 0x90u) /* DCKCFGR2 (F7 only) */
#define QUTE_GPIO_BASE 0x40020000u
#elif defined(QUTE_STM32L4)
#define QUTE_RCC_BASE 0x40021000u
#define QUTE_RCC_CR (QUTE_RCC_BASE + 0x00u)
#define QUTE_RCC_GPIOENR (QUTE_RCC_BASE + 0x4Cu) /* AHB2ENR: GPIOxEN = bit x */
#define QUTE_RCC_APB1ENR1 (QUTE_RCC_BASE + 0x58u)
#define QUTE_RCC_APB1ENR2 (QUTE_RCC_BASE + 0x5Cu)
#define QUTE_RCC_APB2ENR (QUTE_RCC_BASE + 0x60u)
#define QUTE_RCC_KERNEL_CLOCK_SEL (QUTE_RCC_BASE + 0x88u) /* CCIPR */
#define QUTE_GPIO_BASE 0x48000000u
#define QUTE_PWR_CR2 0x40007004u
#define QUTE_PWR_CR2_IOSV (1u << 9)
#else
#error "define QUTE_STM32F4, QUTE_STM32F7 or QUTE_STM32L4"
#endif

#define QUTE_GPIO_MODER(port) (QUTE_GPIO_BASE + 0x400u * (port) + 0x00u)
#define QUTE_GPIO_OSPEEDR(port) (QUTE_GPIO_BASE + 0x400u * (port) + 0x08u)
#define QUTE_GPIO_PUPDR(port) (QUTE_GPIO_BASE + 0x400u * (port) + 0x0Cu)
#define QUTE_GPIO_AFR(port, pin) (QUTE_GPIO_BASE + 0x400u * (port) + 0x20u + 4u * ((pin) / 8u))

/* Port index: A = 0, B = 1, ... G = 6. */
static inline void qute_stm32_pin_af(uint32_t port, uint32_t pin, uint32_t af, int pull_up)
{
    QUTE_REG32(QUTE_RCC_GPIOENR) |= 1u << port;
    (void)QUTE_REG32(QUTE_RCC_GPIOENR); /* the clock needs two cycles before the port responds */
#if defined(QUTE_STM32L4)
    if (port == 6u) {
        /* L4 parts power PG2..PG15 from VDDIO2, which must be declared valid (PWR_CR2.IOSV). */
        QUTE_REG32(QUTE_RCC_APB1ENR1) |= 1u << 28; /* PWREN */
        (void)QUTE_REG32(QUTE_RCC_APB1ENR1);
        QUTE_REG32(QUTE_PWR_CR2) |= QUTE_PWR_CR2_IOSV;
    }
#endif
    uint32_t shift2 = 2u * pin;
    uint32_t shift4 = 4u * (pin % 8u);
    QUTE_REG32(QUTE_GPIO_AFR(port, pin)) = (QUTE_REG32(QUTE_GPIO_AFR(port, pin)) & ~(0xFu << shift4)) | (af << shift4);
    QUTE_REG32(QUTE_GPIO_OSPEEDR(port)) = (QUTE_REG32(QUTE_GPIO_OSPEEDR(port)) & ~(3u << shift2)) | (2u << shift2);
    QUTE_REG32(QUTE_GPIO_PUPDR(port)) = (QUTE_REG32(QUTE_GPIO_PUPDR(port)) & ~(3u << shift2)) | ((pull_up ? 1u : 0u) << shift2);
    QUTE_REG32(QUTE_GPIO_MODER(port)) = (QUTE_REG32(QUTE_GPIO_MODER(port)) & ~(3u << shift2)) | (2u << shift2);
}

/* The console's TX and RX pins (RX is optional: QUTE_CONSOLE_RX_PORT). */
static inline void qute_stm32_console_pins(void)
{
#if defined(QUTE_CONSOLE_TX_PORT)
    qute_stm32_pin_af(QUTE_CONSOLE_TX_PORT, QUTE_CONSOLE_TX_PIN, QUTE_CONSOLE_TX_AF, 0);
#endif
#if defined(QUTE_CONSOLE_RX_PORT)
    qute_stm32_pin_af(QUTE_CONSOLE_RX_PORT, QUTE_CONSOLE_RX_PIN, QUTE_CONSOLE_RX_AF, 1);
#endif
}

#endif
