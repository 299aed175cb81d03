"""Class names: the eight Medley-solos-DB classes (the default), and the one accessor that says
which classes a run, a record, a stored meta.json or a bundle's model.json was trained on.

A dataset of the user's own (engine.data.folders) brings its own class names; a run stores them
in its configuration (`RunConfig.classes`, empty for Medley-solos-DB's eight), so that runs and
bundles made before issue #27 keep their eight classes with nothing rewritten.
"""

from __future__ import annotations

from typing import Any, Mapping

CLASS_NAMES: tuple[str, ...] = (
    "clarinet",
    "distorted electric guitar",
    "female singer",
    "flute",
    "piano",
    "tenor saxophone",
    "trumpet",
    "violin",
)
SHORT_NAMES: tuple[str, ...] = ("clarinet", "guitar", "singer", "flute", "piano", "sax", "trumpet", "violin")
SUBSETS: tuple[str, ...] = ("training", "validation", "test")
PROGRAM_VIEW = "validation_program"  # demo only: songs of GM programs that training never plays
PROGRAM_VIEW_CSV = "Medley-solos-DB_validation_program.csv"  # beside the metadata CSV, same columns
_SHORT = dict(zip(CLASS_NAMES, SHORT_NAMES))
MIN_CLASSES = 2  # a dataset needs at least this many classes to learn anything
MAX_SHORT = 24  # characters of a class name shown on charts (longer names are cut with "…")


def short_name(name: str) -> str:
    """A class's short name (SHORT_NAMES, as every chart shows it) from its full name
    (CLASS_NAMES); any other text is returned unchanged, cut to MAX_SHORT characters."""
    if name in _SHORT:
        return _SHORT[name]
    return name if len(name) <= MAX_SHORT else name[: MAX_SHORT - 1] + "…"


NUM_CLASSES = len(CLASS_NAMES)


def class_names_of(source: Any) -> tuple[str, ...]:
    """The class names a run was trained on, in class-id order (the model's outputs).

    `source`: a RunConfig (its `classes`), anything with a `.config` (a RunRecord, a
    Predictor), a stored `meta.json` / bundle `model.json` dict ("class_names", else its
    "config"'s "classes"), a plain config dict, or None. Empty or missing -> CLASS_NAMES, the
    Medley-solos-DB classes every run made before issue #27 was trained on.
    """
    names: Any = None
    if isinstance(source, Mapping):
        names = source.get("class_names") or source.get("classes")
        config = source.get("config")
        if not names and isinstance(config, Mapping):
            names = config.get("classes")
    elif source is not None:
        names = getattr(source, "classes", None)
        if not names and getattr(source, "config", None) is not None:
            names = getattr(source.config, "classes", None)
    return tuple(str(n) for n in names) if names else CLASS_NAMES


def short_names_of(source: Any) -> list[str]:
    """class_names_of(source) as charts show them (short_name of each)."""
    return [short_name(n) for n in class_names_of(source)]
