"""What a W&B offline run wrote, read back from its run-<id>.wandb file without a network or a W&B server.

The file is W&B's record log: a 7-byte header (":W&B", magic, version), then LevelDB-log framing
(32 KiB blocks; each record chunk has a 7-byte header: checksum, length, type full/first/middle/last)
around protobuf `Record`s (wandb.proto.wandb_internal_pb2).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path):
    data = Path(path).read_bytes()
    ident, _, _ = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B", f"{path} is not a W&B run file"
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + HEADER])
        chunk = data[position + HEADER:position + HEADER + length]
        position += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
        else:
            return


def offline_runs(run_dir: Path) -> list[dict]:
    """Every offline run under run_dir/wandb/, oldest first (a resumed run writes a folder of its own,
    under the same id). W&B's service writes the file out when it stops: call wandb.teardown() first."""
    return [offline_run(path) for path in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))]


def offline_run(path: Path) -> dict:
    """{"id", "history": [row, ...], "summary": {...}, "config": {...}} of one run file."""
    from wandb.proto import wandb_internal_pb2

    found = {"id": path.stem.removeprefix("run-"), "history": [], "summary": {}, "config": {}}
    for raw in raw_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            found["history"].append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                     for item in record.history.item})
        elif kind == "summary":
            found["summary"].update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                     for item in record.summary.update})
        elif kind == "run":
            found["config"].update({item.key: json.loads(item.value_json) for item in record.run.config.update})
    return found
