"""Peak resident memory of the job's processes, for the metrics (Linux).

`peak_rss_of(actors)` asks each actor through Ray's generic `__ray_call__`, so no actor class
needs a method for it. A rollout worker's engine runs in the actor's own process unless
rollout.engine.multiprocessing is on; then the engine's separate process is not counted.
"""

from __future__ import annotations

import resource

import ray
from ray.exceptions import GetTimeoutError, RayActorError

ASK_TIMEOUT_S = 10.0


def peak_rss_mb(_actor=None) -> float:
    """This process's peak resident set since it started, or since `reset_peak_rss()`, in MiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # never reset; KiB on Linux


def reset_peak_rss() -> bool:
    """Start a new peak from the current resident set (Linux: writing 5 to /proc/self/clear_refs).

    A learner rank does this once its model is loaded, so its training peak is not hidden under
    the one-off peak of loading. False where the kernel refuses; the peak then counts from the start.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def peak_rss_of(actors: list) -> float | None:
    """The largest peak RSS among `actors`, in MiB; None when none answered (dead, or busy past the timeout)."""
    refs = [actor.__ray_call__.remote(peak_rss_mb) for actor in actors]
    values = []
    for ref in refs:
        try:
            values.append(ray.get(ref, timeout=ASK_TIMEOUT_S))
        except (RayActorError, GetTimeoutError):
            pass  # memory numbers are never worth failing an iteration for; a death is handled where work is
    return max(values) if values else None
