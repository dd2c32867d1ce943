"""TensorBoard scalars of a run: `tensorboard --logdir DIR/tensorboard`.

Every numeric value of a metrics row becomes a scalar at step = the row's iteration, tagged
`train/<key>` for training rows and `eval/<key>` for eval rows (`"kind": "eval"`). The writer
is TensorBoard's own event-file writer, the one torch's SummaryWriter wraps: the driver logs
without importing torch's tensorboard module, and what is written reads back with
TensorBoard's EventAccumulator.
"""

from __future__ import annotations

import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from jobs.outputs.metrics_rows import numeric_scalars, row_kind


class TensorBoardLog:
    """Appends one run's metrics rows to DIR/tensorboard/ as they happen.

    `first_iteration` is where this start of the run begins (0, or the iteration a resume
    continues from). A SessionLog START event at that step makes TensorBoard drop what an
    earlier start wrote at that step or later, just as metrics.jsonl drops the iterations a
    resumed run does again (and everything, for a run started over with --overwrite).
    """

    def __init__(self, run_dir: str | Path, first_iteration: int = 0):
        self.dir = Path(run_dir) / "tensorboard"
        self._writer = EventFileWriter(str(self.dir))
        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=first_iteration, session_log=start))
        self._writer.flush()

    def log(self, row: dict) -> None:
        prefix = row_kind(row)
        values = [
            summary_pb2.Summary.Value(tag=f"{prefix}/{key}", simple_value=value)
            for key, value in numeric_scalars(row).items()
        ]
        if values:
            event = event_pb2.Event(wall_time=time.time(), step=int(row["iteration"]),
                                    summary=summary_pb2.Summary(value=values))
            self._writer.add_event(event)
        # On disk now: a run that crashes later keeps every row logged so far.
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "TensorBoardLog":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
