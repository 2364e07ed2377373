"""The radar store (format: docs/schema.md): how it is laid out, opened, appended to and committed.

Modules by job:
- `commit`: the staging directory, its atomic publication and recovery after a kill (`recover_store`);
- `layout`: `precip` chunks / shards / compression and the empty store (`precip_layout`, `create_skeleton`);
- `time_axis`: placing frames on the regular time axis, gaps and segments, time encoding;
- `metadata`: opening and validating a store (`open_store`), its state and root attributes;
- `writer`: `StoreWriter`, one atomic update streamed by a background thread.

Everything public is importable from here: `from nowcast_infill.io.store import StoreWriter`.
"""

from __future__ import annotations

from nowcast_infill.io.store.commit import COMMIT_MARKER, mark_and_publish, recover_store
from nowcast_infill.io.store.layout import (
    DEFAULT_CHUNKS,
    DEFAULT_COMPRESSION,
    DEFAULT_SHARDS,
    PRECIP_ATTRS,
    create_skeleton,
    precip_layout,
    storage_unit,
    whole_frame_chunk_writer,
)
from nowcast_infill.io.store.metadata import (
    SourceRecord,
    StoreState,
    check_consistent,
    new_store_attrs,
    open_store,
    package_versions,
    read_state,
)
from nowcast_infill.io.store.time_axis import (
    DEFAULT_MAX_GAP_S,
    checked_max_gap,
    encode_times,
    iso_time,
    place_on_time_axis,
)
from nowcast_infill.io.store.writer import MAX_QUEUED_BYTES, AppendResult, StoreWriter

__all__ = [
    "COMMIT_MARKER",
    "DEFAULT_CHUNKS",
    "DEFAULT_COMPRESSION",
    "DEFAULT_MAX_GAP_S",
    "DEFAULT_SHARDS",
    "MAX_QUEUED_BYTES",
    "PRECIP_ATTRS",
    "AppendResult",
    "SourceRecord",
    "StoreState",
    "StoreWriter",
    "check_consistent",
    "checked_max_gap",
    "create_skeleton",
    "encode_times",
    "iso_time",
    "mark_and_publish",
    "new_store_attrs",
    "open_store",
    "package_versions",
    "place_on_time_axis",
    "precip_layout",
    "read_state",
    "recover_store",
    "storage_unit",
    "whole_frame_chunk_writer",
]
