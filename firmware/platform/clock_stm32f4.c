/* STM32F405/407 clock tree (RM0090 "Reset and clock control"): HSE crystal (25 MHz on the
 * Netduino Plus 2) -> PLL (VCO in = HSE / M in 1..2 MHz, VCO out = in * N, SYSCLK = out / P,
 * 48 MHz = out / Q) -> 168 MHz with voltage scale 1 and 5 flash wait states at 2.7-3.6 V.
 * Skipped in emulator builds: QEMU's netduinoplus2 has no RCC model (its registers read 0, so
 * waiting for HSERDY would hang). */
#include "clock_stm32_common.h"

#if !defined(QUTE_EMULATOR)

#if !defined(QUTE_PLL_M) || !defined(QUTE_PLL_N) || !defined(QUTE_PLL_P) || !defined(QUTE_PLL_Q) || !defined(QUTE_FLASH_LATENCY)
#error "clock_stm32f4.c needs QUTE_PLL_M, QUTE_PLL_N, QUTE_PLL_P, QUTE_PLL_Q and QUTE_FLASH_LATENCY"
#endif

#define RCC_BASE 0x40023800u
#define RCC_CR (RCC_BASE + 0x00u)
#define RCC_PLLCFGR (RCC_BASE + 0x04u)
#define RCC_CFGR (RCC_BASE + 0x08u)
#define RCC_APB1ENR (RCC_BASE + 0x40u)
#define PWR_CR 0x40007000u
#define FLASH_ACR 0x40023C00u

#define CR_HSEON (1u << 16)
#define CR_HSERDY (1u << 17)
#define CR_HSEBYP (1u << 18)
#define CR_PLLON (1u << 24)
#define CR_PLLRDY (1u << 25)
#define PLLCFGR_SRC_HSE (1u << 22)
#define APB1ENR_PWREN (1u << 28)
#define PWR_CR_VOS (1u << 14)
#define ACR_PRFTEN (1u << 8)
#define ACR_ICEN (1u << 9)
#define ACR_DCEN (1u << 10)
#define CFGR_SW_PLL 2u
#define CFGR_SWS_MASK (3u << 2)
#define CFGR_SWS_PLL (2u << 2)

int qute_clock_init(void)
{
    QUTE_REG32(RCC_APB1ENR) |= APB1ENR_PWREN;
    (void)QUTE_REG32(RCC_APB1ENR);
    QUTE_REG32(PWR_CR) |= PWR_CR_VOS;

#if defined(QUTE_HSE_BYPASS)
    QUTE_REG32(RCC_CR) |= CR_HSEBYP;
#endif
    QUTE_REG32(RCC_CR) |= CR_HSEON;
    if (qute_wait_flag(RCC_CR, CR_HSERDY, CR_HSERDY)) {
        return 1;
    }
    /* Bits 31:28 keep their reset value (reserved on F4, PLLR for the DSI host on F76x). */
    QUTE_REG32(RCC_PLLCFGR) = (QUTE_REG32(RCC_PLLCFGR) & 0xF0000000u) | (uint32_t)QUTE_PLL_M | ((uint32_t)QUTE_PLL_N << 6) | (((uint32_t)QUTE_PLL_P / 2u - 1u) << 16) |
                              PLLCFGR_SRC_HSE | ((uint32_t)QUTE_PLL_Q << 24);
    QUTE_REG32(RCC_CR) |= CR_PLLON;

    QUTE_REG32(FLASH_ACR) = (uint32_t)QUTE_FLASH_LATENCY | ACR_PRFTEN | ACR_ICEN | ACR_DCEN;
    if (qute_wait_flag(FLASH_ACR, 0x7u, (uint32_t)QUTE_FLASH_LATENCY)) {
        return 1;
    }
    QUTE_REG32(RCC_CFGR) = (QUTE_REG32(RCC_CFGR) & ~0xFCF0u) | (QUTE_HPRE_BITS << 4) |
                           (QUTE_PPRE_ENCODE(QUTE_APB1_DIV) << 10) | (QUTE_PPRE_ENCODE(QUTE_APB2_DIV) << 13);
    if (qute_wait_flag(RCC_CR, CR_PLLRDY, CR_PLLRDY)) {
        return 1;
    }
    QUTE_REG32(RCC_CFGR) = (QUTE_REG32(RCC_CFGR) & ~3u) | CFGR_SW_PLL;
    return qute_wait_flag(RCC_CFGR, CFGR_SWS_MASK, CFGR_SWS_PLL);
}

#endif
