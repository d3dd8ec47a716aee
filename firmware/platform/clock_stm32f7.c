/* STM32F746 / STM32F767 clock tree (RM0385 / RM0410, "Reset and clock control" and "Power
 * controller"): HSE (8 MHz from the ST-LINK MCO, bypass mode, on the Nucleo-144) -> PLL
 * (VCO in = HSE / M, VCO out = VCO in * N, SYSCLK = VCO out / P, 48 MHz = VCO out / Q) -> 216 MHz,
 * which needs voltage scale 1 plus over-drive, and 7 flash wait states at 2.7-3.6 V.
 * Not compiled into emulator builds: QEMU has no STM32F7 machine. */
#include "clock_stm32_common.h"

#if !defined(QUTE_EMULATOR)

#if !defined(QUTE_PLL_M) || !defined(QUTE_PLL_N) || !defined(QUTE_PLL_P) || !defined(QUTE_PLL_Q) || !defined(QUTE_FLASH_LATENCY)
#error "clock_stm32f7.c needs QUTE_PLL_M, QUTE_PLL_N, QUTE_PLL_P, QUTE_PLL_Q and QUTE_FLASH_LATENCY"
#endif

#define RCC_BASE 0x40023800u
#define RCC_CR (RCC_BASE + 0x00u)
#define RCC_PLLCFGR (RCC_BASE + 0x04u)
#define RCC_CFGR (RCC_BASE + 0x08u)
#define RCC_APB1ENR (RCC_BASE + 0x40u)
#define PWR_CR1 0x40007000u
#define PWR_CSR1 0x40007004u
#define FLASH_ACR 0x40023C00u

#define CR_HSEON (1u << 16)
#define CR_HSERDY (1u << 17)
#define CR_HSEBYP (1u << 18)
#define CR_PLLON (1u << 24)
#define CR_PLLRDY (1u << 25)
#define PLLCFGR_SRC_HSE (1u << 22)
#define APB1ENR_PWREN (1u << 28)
#define PWR_CR1_VOS_SCALE1 (3u << 14)
#define PWR_CR1_ODEN (1u << 16)
#define PWR_CR1_ODSWEN (1u << 17)
#define PWR_CSR1_ODRDY (1u << 16)
#define PWR_CSR1_ODSWRDY (1u << 17)
#define ACR_PRFTEN (1u << 8)
#define ACR_ARTEN (1u << 9)
#define CFGR_SW_PLL 2u
#define CFGR_SWS_MASK (3u << 2)
#define CFGR_SWS_PLL (2u << 2)

int qute_clock_init(void)
{
    QUTE_REG32(RCC_APB1ENR) |= APB1ENR_PWREN;
    (void)QUTE_REG32(RCC_APB1ENR);
    /* VOS may only change while the PLL is off; scale 1 is the reset value, set it anyway. */
    QUTE_REG32(PWR_CR1) |= PWR_CR1_VOS_SCALE1;

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

#if defined(QUTE_OVERDRIVE)
    /* Over-drive (needed above 180 MHz): ODEN, wait ODRDY, then ODSWEN, wait ODSWRDY. */
    QUTE_REG32(PWR_CR1) |= PWR_CR1_ODEN;
    if (qute_wait_flag(PWR_CSR1, PWR_CSR1_ODRDY, PWR_CSR1_ODRDY)) {
        return 1;
    }
    QUTE_REG32(PWR_CR1) |= PWR_CR1_ODSWEN;
    if (qute_wait_flag(PWR_CSR1, PWR_CSR1_ODSWRDY, PWR_CSR1_ODSWRDY)) {
        return 1;
    }
#endif

    /* Wait states before the clock goes up; read back to be sure they took effect. */
    QUTE_REG32(FLASH_ACR) = (uint32_t)QUTE_FLASH_LATENCY | ACR_PRFTEN | ACR_ARTEN;
    if (qute_wait_flag(FLASH_ACR, 0xFu, (uint32_t)QUTE_FLASH_LATENCY)) {
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
