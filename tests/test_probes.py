"""engine.data.probes' instruments outside the 8 classes (issue #24): real soundfont renders through
the demo's phrase generator and recording chain, seeded, and never a class's GM program."""

from __future__ import annotations

import io
from itertools import combinations

import numpy as np
import pytest

from engine.data import demo
from engine.data.probes import OTHER_INSTRUMENTS, other_instrument_clips

SR, SAMPLES = 22050, 65536  # what the features load: Medley's 131,072 samples at 22.05 kHz


@pytest.fixture(scope="module")
def clips() -> dict[str, list[np.ndarray]]:
    """Two clips per instrument, seed 3 (about 1 s of rendering)."""
    return other_instrument_clips(2, SR, SAMPLES, seed=3)


def test_no_program_is_one_the_classes_play() -> None:
    """Not a class's sibling, held-out or test program: checked against the demo's table, so a
    program added to a class there breaks this test."""
    class_programs = {p for inst in demo.INSTRUMENTS for p in (*inst.programs, *inst.test_programs)}
    programs = [inst.programs for inst in OTHER_INSTRUMENTS.values()]
    assert all(len(p) == 1 for p in programs) and len({p[0] for p in programs}) == len(programs) >= 6
    assert not {p[0] for p in programs} & class_programs
    for inst in OTHER_INSTRUMENTS.values():  # a song of it plays its one program
        assert demo._song_style(np.random.default_rng(0), inst, "training")["program"] == inst.programs[0]


def test_clips_are_seeded_shaped_bounded_and_audible(clips: dict[str, list[np.ndarray]]) -> None:
    assert list(clips) == list(OTHER_INSTRUMENTS)
    again = other_instrument_clips(2, SR, SAMPLES, seed=3)
    other_seed = other_instrument_clips(1, SR, SAMPLES, seed=4)
    fewer = other_instrument_clips(1, SR, SAMPLES, seed=3)
    for name, ys in clips.items():
        assert len(ys) == 2
        for y, same in zip(ys, again[name]):
            assert y.shape == (SAMPLES,) and y.dtype == np.float32 and np.isfinite(y).all()
            assert np.array_equal(y, same)
            assert 0.25 <= np.max(np.abs(y)) <= 0.9 + 1e-6  # the demo's peak range, after resampling
            assert np.sqrt(np.mean(y ** 2)) > 0.01  # audible: above -40 dBFS RMS
        assert not np.array_equal(ys[0], ys[1])  # two songs
        assert not np.allclose(ys[0], other_seed[name][0])
        assert np.array_equal(ys[0], fewer[name][0])  # a clip does not depend on per_program


def test_clips_differ_between_instruments(clips: dict[str, list[np.ndarray]]) -> None:
    for a, b in combinations(clips, 2):
        assert not np.allclose(clips[a][0], clips[b][0], atol=1e-3)


def test_each_clip_is_its_program_rendered_with_the_training_soundfont(monkeypatch: pytest.MonkeyPatch) -> None:
    """The phrase handed to the renderer plays the instrument's program (and no other), with TimGM6mb."""
    import pretty_midi

    real, seen = demo._render_phrase, []

    def spy(soundfont: str, midi: bytes) -> np.ndarray:
        seen.append((soundfont, {t.program for t in pretty_midi.PrettyMIDI(io.BytesIO(midi)).instruments}))
        return real(soundfont, midi)

    monkeypatch.setattr(demo, "_render_phrase", spy)
    other_instrument_clips(1, SR, SAMPLES, seed=0)
    timgm = str(demo._soundfont_paths()[0])
    assert {font for font, _ in seen} == {timgm}
    assert all(len(programs) == 1 for _, programs in seen)  # one track, one program (a redrawn phrase repeats it)
    played = list(dict.fromkeys(next(iter(programs)) for _, programs in seen))
    assert played == [inst.programs[0] for inst in OTHER_INSTRUMENTS.values()]


def _family(program: int) -> int:
    """General MIDI family (0-15) of a 0-based program: eight programs per family."""
    return program // 8


def test_exposure_instruments_share_no_family_with_a_class_or_a_probe() -> None:
    """The clips a run may be trained to be unsure about (outlier exposure) are of other GM families than
    every class's programs and every probe instrument, so the probes still measure unheard kinds."""
    from engine.data.probes import EXPOSURE_INSTRUMENTS

    exposure = {inst.programs[0] for inst in EXPOSURE_INSTRUMENTS.values()}
    assert len(exposure) == len(EXPOSURE_INSTRUMENTS) >= 8
    classes = {p for inst in demo.INSTRUMENTS for p in (*inst.programs, *inst.test_programs)}
    probes = {inst.programs[0] for inst in OTHER_INSTRUMENTS.values()}
    assert not {_family(p) for p in exposure} & {_family(p) for p in classes | probes}
    ys = other_instrument_clips(1, SR, SAMPLES, seed=0, instruments=EXPOSURE_INSTRUMENTS)
    assert list(ys) == list(EXPOSURE_INSTRUMENTS)
    assert all(y[0].shape == (SAMPLES,) and np.sqrt(np.mean(y[0] ** 2)) > 0.005 for y in ys.values())
