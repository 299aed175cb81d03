"""The eight Medley-solos-DB classes, in the dataset's `instrument_id` order."""

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
NUM_CLASSES = len(CLASS_NAMES)
