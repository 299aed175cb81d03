"""The eight Medley-solos-DB classes, in the dataset's `instrument_id` order, and its subsets' names."""

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


def short_name(name: str) -> str:
    """A class's short name (SHORT_NAMES, as every chart shows it) from its full name
    (CLASS_NAMES); any other text is returned unchanged."""
    return _SHORT.get(name, name)
NUM_CLASSES = len(CLASS_NAMES)
