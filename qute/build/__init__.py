"""``qute build``: an int8 model -> a standalone firmware project for one board, compiled.

    qute build --board nucleo-f746 runs/digits -o runs/digits/build-nucleo-f746

What goes in
    A run directory (its ``model.int8.tflite``, quantized first when missing, and the first N
    images of its test split with their labels), an int8 ``.tflite`` file (N uniform random int8
    inputs, seed 0, no labels), or nothing: the embedded default, the digits QUTE model (K = 3)
    of ``make demo`` shipped in ``firmware/default`` with the 359 test images of its split
    (``qute build`` then needs no TensorFlow, no data and no training; ``make default-model``
    retrains and replaces it). A ``qute.toml`` may name the model under ``[build] model = ...``.
    A run's ``calibration.json`` (``qute calibrate``) is compiled in: the abstain threshold and the
    accuracy-drop monitor's window and rho (on boards with no FPU their integer versions,
    ``threshold_int`` and ``rho_sum``). ``stream="id,corrupt:NAME:SEVERITY"`` (``--stream``)
    embeds N test images per part, corrupted as the part says.
    ``inputs="uart"`` (``--inputs uart``) embeds none: the firmware reads its inputs from the
    console UART (framing: ``qute.transcript.uart_payload``), so one ELF runs any number of them
    (``qute eval --stages device``); the N images still go to ``inputs.npz``, which ``qute run``
    sends.

What comes out (OUT, written into a temporary sibling and renamed into place)::

    OUT/
      Makefile                    `make` rebuilds firmware.*; `make emulator` the QEMU variant
      app/qute_app.c, .h          the application (firmware/app: main(), hand-written)
      src/qute_config.h           its settings for this build (data only: names, calibration)
      src/qute_inputs.c           the embedded inputs and labels (not with --inputs uart)
      src/qute_model.c, .h        the generated model (codegen)
      kernels/ uncertainty/ platform/   copies of the firmware sources it uses
      <board>.ld                  linker script from the board's memory map
      firmware.elf .bin .hex .map
      memory.json                 flash and RAM per section, model weights / arena / code
      emulator/                   the emulator variant (non-emulator builds only): same compiler
                                  flags, QUTE_EMULATOR, the emulation board's start-up, memory
                                  map and console; what `qute run` executes
      <board>.resc <board>.robot  Renode script and Robot Framework test (real-board firmware)
      model.int8.tflite inputs.npz build.json   what `qute run` compares against

``qute build --emulator`` builds only the emulator variant, at the top of OUT.

``qute build --profile`` compiles every variant with ``-DQUTE_PROFILE``: the generated model (the
same C as without it) then calls a hook after each op, and the firmware prints the counter's count
per op for every input (``QUTE op`` lines, qute/transcript.py), which ``qute run`` turns into a
per-op table. build.json records it under ``profile`` with the ops it times (opcode, kernel, MACs).

The fit check
    Before compiling: the model's arena (which holds its input and outputs: the firmware has no
    buffers of its own for them) and the stack against the board's RAM, and the
    weights, parameters and embedded inputs against its flash (lower bounds: code comes on top).
    After linking: the linker's own region overflow, turned into the same one-line message, and
    the ELF's sections against the board's capacity (an emulator build is held to the real board's
    sizes too: the emulator's memory map is larger). Figures are those of ``arm-none-eabi-size``.

The package, one concept per module (data flows down the list)::

    source.py     what is embedded: the model and its inputs (run, .tflite, default, stream)
    fit.py        the fit check before and after linking, the memory report, the weights' layout
    project.py    the application's config and inputs, the Makefile, the Renode .resc and .robot
    core.py       build(): the steps in order, staged in a temporary folder, renamed into place
    summary.py    the lines `qute build` prints about a finished build
    manifest.py   a finished build read back (build.json and the files beside it)

What the firmware must print for the inputs is :mod:`qute.expectation`'s.
"""

from qute.build.core import INPUT_MODES, TOOLS, BuildResult, build, default_output
from qute.build.fit import (AUTO_INT16_FREE, WEIGHT_LAYOUTS, check_fit_after_link, check_fit_before_link,
                            choose_weights16, format_memory, memory_report)
from qute.build.manifest import BUILD_KIND, INPUTS_FILE, MANIFEST, MEMORY_FILE, MODEL_FILE, Build, load_build
from qute.build.source import (DEFAULT_SAMPLES, ModelSource, check_stream, default_dir, parse_stream, read_default,
                               resolve_model, write_default)

__all__ = [
    "AUTO_INT16_FREE", "BUILD_KIND", "DEFAULT_SAMPLES", "INPUTS_FILE", "INPUT_MODES", "MANIFEST", "MEMORY_FILE",
    "MODEL_FILE", "TOOLS", "WEIGHT_LAYOUTS", "Build", "BuildResult", "ModelSource", "build", "check_fit_after_link",
    "check_fit_before_link", "check_stream", "choose_weights16", "default_dir", "default_output", "format_memory",
    "load_build", "memory_report", "parse_stream", "read_default", "resolve_model", "write_default",
]
