/* Reset and exception vectors for every Cortex-M board: the vector table (initial stack pointer
 * and the 15 system exceptions; the firmware enables no device interrupt), the reset handler that
 * turns the FPU on, copies .data from flash, clears .bss and calls main(), and a default handler
 * that reports unexpected exceptions. Symbols come from the generated linker script (linker.ld.j2).
 */
#include <stdint.h>

#include "qute_platform_internal.h"

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _estack[];

int main(void);

void Reset_Handler(void);
void Default_Handler(void);
void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("Default_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void DebugMon_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

typedef void (*qute_handler)(void);

struct qute_vectors {
    uint32_t *initial_sp;
    qute_handler system[15];
};

__attribute__((section(".isr_vector"), used)) const struct qute_vectors qute_vector_table = {
    _estack,
    {
        Reset_Handler,
        NMI_Handler,
        HardFault_Handler,
        MemManage_Handler,
        BusFault_Handler,
        UsageFault_Handler,
        0, 0, 0, 0, /* reserved */
        SVC_Handler,
        DebugMon_Handler,
        0, /* reserved */
        PendSV_Handler,
        SysTick_Handler,
    },
};

#define SCB_CPACR 0xE000ED88u

void Reset_Handler(void)
{
#if defined(__ARM_FP)
    /* Full access to CP10 and CP11 before any floating-point instruction runs. */
    QUTE_REG32(SCB_CPACR) |= 0xFu << 20;
    __asm volatile("dsb\n\tisb" ::: "memory");
#endif
    const uint32_t *src = _sidata;
    for (uint32_t *dst = _sdata; dst < _edata;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = _sbss; dst < _ebss;) {
        *dst++ = 0;
    }
    qute_exit(main());
}

void Default_Handler(void)
{
    uint32_t ipsr;
    __asm volatile("mrs %0, ipsr" : "=r"(ipsr));
    qute_platform_fault(ipsr & 0x1FFu);
}
