/* STM32L4 / L4+ clock tree (RM0394 for the L432, RM0432 for the L4R5): HSI16 -> PLL (VCO in =
 * 16 MHz / M, VCO out = in * N, SYSCLK = out / R) -> 80 MHz (L4, voltage range 1, 4 wait states)
 * or 120 MHz (L4+, range 1 boost mode, 5 wait states). Entering boost follows RM0432: AHB / 2
 * before switching to a PLL above 80 MHz, clear PWR_CR5.R1MODE, raise the wait states, switch,
 * wait >= 1 us, then AHB / 1.
 * Skipped in emulator builds (these parts run under QEMU only as their mps2-an386 variant). */
#include "clock_stm32_common.h"

#if !defined(QUTE_EMULATOR)

#if !defined(QUTE_PLL_M) || !defined(QUTE_PLL_N) || !defined(QUTE_PLL_R) || !defined(QUTE_FLASH_LATENCY)
#error "clock_stm32l4.c needs QUTE_PLL_M, QUTE_PLL_N, QUTE_PLL_R and QUTE_FLASH_LATENCY"
#endif

#define RCC_BASE 0x40021000u
#define RCC_CR (RCC_BASE + 0x00u)
#define RCC_CFGR (RCC_BASE + 0x08u)
#define RCC_PLLCFGR (RCC_BASE + 0x0Cu)
#define RCC_APB1ENR1 (RCC_BASE + 0x58u)
#define PWR_CR1 0x40007000u
#define PWR_SR2 0x40007014u
#define PWR_CR5 0x40007080u
#define FLASH_ACR 0x40022000u

#define CR_HSION (1u << 8)
#define CR_HSIRDY (1u << 10)
#define CR_PLLON (1u << 24)
#define CR_PLLRDY (1u << 25)
#define PLLCFGR_SRC_HSI16 2u
#define PLLCFGR_PLLREN (1u << 24)
#define APB1ENR1_PWREN (1u << 28)
#define PWR_CR1_VOS_MASK (3u << 9)
#define PWR_CR1_VOS_RANGE1 (1u << 9)
#define PWR_SR2_VOSF (1u << 10)
#define PWR_CR5_R1MODE (1u << 8)
#define ACR_PRFTEN (1u << 8)
#define ACR_ICEN (1u << 9)
#define ACR_DCEN (1u << 10)
#define CFGR_SW_PLL 3u
#define CFGR_SWS_MASK (3u << 2)
#define CFGR_SWS_PLL (3u << 2)
#define CFGR_HPRE_DIV2 (0x8u << 4)

int qute_clock_init(void)
{
    QUTE_REG32(RCC_APB1ENR1) |= APB1ENR1_PWREN;
    (void)QUTE_REG32(RCC_APB1ENR1);
    QUTE_REG32(PWR_CR1) = (QUTE_REG32(PWR_CR1) & ~PWR_CR1_VOS_MASK) | PWR_CR1_VOS_RANGE1;
    if (qute_wait_flag(PWR_SR2, PWR_SR2_VOSF, 0u)) {
        return 1;
    }

    QUTE_REG32(RCC_CR) |= CR_HSION;
    if (qute_wait_flag(RCC_CR, CR_HSIRDY, CR_HSIRDY)) {
        return 1;
    }
    /* PLLM is (M - 1) from bit 4, PLLN from bit 8, PLLR ((R / 2) - 1) from bit 25. */
    QUTE_REG32(RCC_PLLCFGR) = PLLCFGR_SRC_HSI16 | (((uint32_t)QUTE_PLL_M - 1u) << 4) | ((uint32_t)QUTE_PLL_N << 8) |
                              PLLCFGR_PLLREN | (((uint32_t)QUTE_PLL_R / 2u - 1u) << 25);
    QUTE_REG32(RCC_CR) |= CR_PLLON;
    if (qute_wait_flag(RCC_CR, CR_PLLRDY, CR_PLLRDY)) {
        return 1;
    }

#if defined(QUTE_BOOST)
    QUTE_REG32(RCC_CFGR) = (QUTE_REG32(RCC_CFGR) & ~(0xFu << 4)) | CFGR_HPRE_DIV2;
    QUTE_REG32(PWR_CR5) &= ~PWR_CR5_R1MODE;
    if (qute_wait_flag(PWR_SR2, PWR_SR2_VOSF, 0u)) {
        return 1;
    }
#endif
    QUTE_REG32(FLASH_ACR) = (uint32_t)QUTE_FLASH_LATENCY | ACR_PRFTEN | ACR_ICEN | ACR_DCEN;
    if (qute_wait_flag(FLASH_ACR, 0xFu, (uint32_t)QUTE_FLASH_LATENCY)) {
        return 1;
    }
    QUTE_REG32(RCC_CFGR) = (QUTE_REG32(RCC_CFGR) & ~(7u << 8 | 7u << 11)) | (QUTE_PPRE_ENCODE(QUTE_APB1_DIV) << 8) |
                           (QUTE_PPRE_ENCODE(QUTE_APB2_DIV) << 11);
    QUTE_REG32(RCC_CFGR) = (QUTE_REG32(RCC_CFGR) & ~3u) | CFGR_SW_PLL;
    if (qute_wait_flag(RCC_CFGR, CFGR_SWS_MASK, CFGR_SWS_PLL)) {
        return 1;
    }
#if defined(QUTE_BOOST)
    /* >= 1 us at 60 MHz HCLK before the AHB prescaler goes back to 1. */
    for (volatile uint32_t i = 0; i < 120u; ++i) {
    }
#endif
    QUTE_REG32(RCC_CFGR) = (QUTE_REG32(RCC_CFGR) & ~(0xFu << 4)) | (QUTE_HPRE_BITS << 4);
    return 0;
}

#endif
