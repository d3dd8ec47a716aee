/* What firmware/app/qute_app.c is built with: the build's generated settings (qute_config.h),
 * the generated model, and, for embedded inputs, the generated qute_inputs.c's arrays. */
#ifndef QUTE_APP_H
#define QUTE_APP_H

#include <stdint.h>

#include "qute_config.h"
#include "qute_model.h"

#if !QUTE_INPUTS_UART
extern const int8_t qute_inputs[QUTE_SAMPLES][QUTE_MODEL_INPUT0_SIZE];
extern const int16_t qute_labels[QUTE_SAMPLES];
#endif

#endif
