"""The resume state shared by every process writing to one destination."""

from microns_get.checkpoint.store import (
    FINISHED,
    STATES,
    CheckpointStore,
    FinishedItem,
    ItemRecord,
    PlannedItem,
)

STATE_FILE = ".microns-get/state.sqlite"  # relative to the destination directory

__all__ = [
    "FINISHED",
    "STATES",
    "STATE_FILE",
    "CheckpointStore",
    "FinishedItem",
    "ItemRecord",
    "PlannedItem",
]
