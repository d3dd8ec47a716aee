/* qute_exit(): Arm semihosting SYS_EXIT in emulator builds (QEMU -semihosting exits with 0 for
 * ADP_Stopped_ApplicationExit and 1 for any other reason); a WFI loop on silicon, where a BKPT
 * with no debugger attached would escalate to a HardFault. */
#include "qute_platform.h"

#define SYS_EXIT 0x18u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u
#define ADP_STOPPED_RUN_TIME_ERROR_UNKNOWN 0x20023u

void qute_exit(int status)
{
#if defined(QUTE_EMULATOR)
    register uint32_t op __asm("r0") = SYS_EXIT;
    register uint32_t reason __asm("r1") =
        status == 0 ? ADP_STOPPED_APPLICATION_EXIT : ADP_STOPPED_RUN_TIME_ERROR_UNKNOWN;
    __asm volatile("bkpt 0xAB" : "+r"(op) : "r"(reason) : "memory");
#else
    (void)status;
#endif
    for (;;) {
        __asm volatile("wfi");
    }
}
