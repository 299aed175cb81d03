"""One exception tree for the engine: every error a user can cause is an EngineError."""


class EngineError(Exception):
    """Base of every error the engine raises on purpose; its message is meant for users."""


class DatasetError(EngineError):
    """The dataset cannot be read at all (missing folder, missing or malformed metadata CSV)."""


class AudioError(EngineError):
    """An audio file or upload cannot be decoded, is empty, silent where that matters, or too large."""


class ConfigError(EngineError):
    """A configuration value is out of range or of the wrong type; the message names it."""


class CacheError(EngineError):
    """The cache folder (features, demo data, run store) cannot be created or written; the
    message names the folder and what to do."""


class DiskFull(CacheError):
    """A write found the disk (or the database) full, or a step would not fit in the space
    left; the message names the folder, the space free, what the step needed and what to do."""


class StoreError(EngineError):
    """The run store cannot find or write a run."""


class StoreDamaged(StoreError):
    """The run store's database file is corrupt, or emptied while run folders remain; the
    message says how to rebuild the index from the run folders."""


class RunCancelled(EngineError):
    """Raised inside a training loop when its run is cancelled."""


# ---- a labelled dataset of the user's own (issue #27): one subclass per kind of bad input -----
# Fatal ones are raised (nothing of the dataset is usable); the others become a `Problem` of the
# dataset whose `kind` names the class, and the rest of the dataset is used.


class TooFewClasses(DatasetError):
    """A dataset with fewer than two classes left to learn (one class folder, one CSV label)."""


class EmptyClass(DatasetError):
    """A class folder (or CSV label) with no audio file in it: the class is left out."""


class LabelClash(DatasetError):
    """Labels that differ only in case or surrounding whitespace ("Piano", "piano "): read as one class."""


class UnsafePath(DatasetError):
    """A CSV row whose path leads outside the CSV's folder (absolute, `..`, a link out): refused."""


class DuplicateClip(DatasetError):
    """The same file (or the same audio bytes) in two splits, or under two labels: the later copy is left out."""


class AudioTooLong(AudioError):
    """A dataset file longer than the limit, refused from its header before any decoding."""
