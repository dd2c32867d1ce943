"""Replacing a dead actor: whether a failure is a death worth a replacement, and how many a job allows.

Used by the rollout pool (a dead worker is replaced by a new one with the same index) and by the
reward handle (a dead reward actor is started again), both up to faults.worker_restarts.
"""

from __future__ import annotations

from typing import Callable

from ray.exceptions import RayActorError

from jobs.core.errors import HintflowError
from jobs.core.spec import JobSpec


def died(error: RayActorError, actor) -> bool:
    """Whether `error` says that this actor died after it had started.

    An engine that fails in __init__ would fail the same way again, so that is no fault to
    replace. A call can also fail with another actor's death, when an argument it waited
    on (the learner's weights) was lost with its producer: replacing this worker would not help.
    """
    # An ActorHandle exposes its id only as this private attribute.
    return not error.actor_init_failed and error.actor_id in (None, actor._actor_id.hex())


def death_note(error: RayActorError) -> str:
    """Ray's account of a death cut to what happened: the pid and how the process exited."""
    lines = str(error).splitlines()
    pid = next((line.split(":", 1)[1].strip() for line in lines if line.strip().startswith("pid:")), None)
    # The rest of Ray's last line is a generic list of possible causes.
    what = lines[-1].split(" Some common causes")[0].strip() if lines else type(error).__name__
    return f"pid {pid}: {what}" if pid else what


class Replacements:
    """Dead actors of one kind replaced in this job, up to faults.worker_restarts."""

    def __init__(self, spec: JobSpec, error_class: type[HintflowError], note: Callable[[str], None] | None):
        self.limit = spec.faults.worker_restarts
        self.error_class = error_class
        self.note = note or (lambda text: None)
        self.total = 0
        self.untaken = 0

    def allow(self, who: str, during: str, error: RayActorError) -> None:
        """Count one replacement of `who`, or fail the job when none is left."""
        if self.total >= self.limit:
            raise self.error_class(
                f"{who} died during {during} ({death_note(error)}); {self.total} replacement(s) in this job "
                f"already, and faults.worker_restarts is {self.limit}"
            )
        self.total += 1
        self.untaken += 1
        # Otherwise the terminal would show only an iteration that takes longer than the others.
        self.note(f"{who} died during {during} ({death_note(error)}); replacing it "
                  f"({self.total} of {self.limit} replacements allowed by faults.worker_restarts)")

    def take(self) -> int:
        """Replacements since the last take: lets the driver charge each to one iteration."""
        taken, self.untaken = self.untaken, 0
        return taken
