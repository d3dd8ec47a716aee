/* Cortex-M7 level-1 caches on (Armv7-M ARM and the Cortex-M7 TRM: ICIALLU, DCISW, CCSIDR, CCR).
 * Silicon builds only: the STM32F7's flash and SRAM run far below the core without them. The
 * firmware uses no DMA, so no cache maintenance is needed afterwards. */
#include "qute_platform_internal.h"

#define SCB_CCR 0xE000ED14u
#define SCB_CCSIDR 0xE000ED80u
#define SCB_CSSELR 0xE000ED84u
#define SCB_ICIALLU 0xE000EF50u
#define SCB_DCISW 0xE000EF60u
#define CCR_DC (1u << 16)
#define CCR_IC (1u << 17)

static inline void barrier(void)
{
    __asm volatile("dsb\n\tisb" ::: "memory");
}

void qute_cache_init(void)
{
    if (QUTE_REG32(SCB_CCR) & CCR_IC) {
        return; /* already on (a debugger or bootloader did it) */
    }
    barrier();
    QUTE_REG32(SCB_ICIALLU) = 0;
    barrier();
    QUTE_REG32(SCB_CCR) |= CCR_IC;
    barrier();

    /* Invalidate the data cache by set and way, then enable it. */
    QUTE_REG32(SCB_CSSELR) = 0; /* level 1 data cache */
    barrier();
    uint32_t ccsidr = QUTE_REG32(SCB_CCSIDR);
    uint32_t sets = ((ccsidr >> 13) & 0x7FFFu) + 1u;
    uint32_t ways = ((ccsidr >> 3) & 0x3FFu) + 1u;
    uint32_t line_shift = (ccsidr & 0x7u) + 4u; /* log2(bytes per line) */
    uint32_t way_shift = ways > 1u ? (uint32_t)__builtin_clz(ways - 1u) : 0u; /* ways in the top bits */
    for (uint32_t set = 0; set < sets; ++set) {
        for (uint32_t way = 0; way < ways; ++way) {
            QUTE_REG32(SCB_DCISW) = (way << way_shift) | (set << line_shift);
        }
    }
    barrier();
    QUTE_REG32(SCB_CCR) |= CCR_DC;
    barrier();
}
