"""`qute build --weights`: which filter layout the firmware gets, and why (issue 10).

The int16 layout doubles the convolution and fully-connected filters' flash for fewer instructions
on cores with the DSP extension; auto takes it there only while a quarter of the flash stays free.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from qute.build import AUTO_INT16_FREE, read_default, choose_weights16
from qute.expectation import model_facts


def _board(core="cortex-m7", flash=1 << 20, name="b"):
    return SimpleNamespace(name=name, core=core, stack_size=0, ram_region=SimpleNamespace(length=1 << 30),
                           flash_region=SimpleNamespace(length=flash))


@pytest.fixture(scope="module")
def default():
    source = read_default(5)
    return source, model_facts(source.tflite)


def test_int16_doubles_exactly_the_product_filters(default):
    source, facts = default
    wide, note = choose_weights16([_board()], facts, source, False, "int16")
    assert not facts.gen.weights16 and wide.gen.weights16 and note.startswith("int16")
    extra = wide.gen.weights_bytes - facts.gen.weights_bytes
    assert extra > 0 and f"+{extra:,} B" in note
    assert "_w16_s8(" in wide.gen.source and "_w16_s8(" not in facts.gen.source
    # only the filters change: same arena, same outputs
    assert wide.gen.arena_size == facts.gen.arena_size and wide.outputs == facts.outputs


def test_auto_takes_int16_only_on_dsp_cores_with_room(default):
    source, facts = default
    assert choose_weights16([_board()], facts, source, False, "auto")[0].gen.weights16
    for core in ("cortex-m0", "cortex-m3"):
        kept, note = choose_weights16([_board(core)], facts, source, False, "auto")
        assert kept is facts and "no DSP" in note
    # just too little flash for a quarter of it to stay free: int8, and the note says why
    wide = model_facts(source.tflite, weights16=True)
    need = wide.gen.weights_bytes + wide.gen.params_bytes + int(source.inputs.size) + 2 * len(source.inputs)
    tight = int(need / (1 - AUTO_INT16_FREE)) - 64
    kept, note = choose_weights16([_board(flash=tight, name="small")], facts, source, False, "auto")
    assert kept is facts and "small" in note and "--weights int16" in note
    # every board checked: the emulator's too
    kept, _ = choose_weights16([_board(), _board(flash=tight)], facts, source, False, "auto")
    assert kept is facts
    assert choose_weights16([_board(flash=2 * tight)], facts, source, False, "auto")[0].gen.weights16


def test_int8_is_kept_when_asked(default):
    source, facts = default
    kept, note = choose_weights16([_board()], facts, source, False, "int8")
    assert kept is facts and note == "int8 (--weights int8)"


def test_unknown_layout_is_refused_before_any_work():
    from qute.build import build
    from qute.errors import QuteError

    with pytest.raises(QuteError, match="unknown --weights 'int4'; choose one of: auto, int8, int16"):
        build("nucleo-f746", weights="int4")

