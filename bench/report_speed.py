"""How long the driver spends rewriting report.html: the speed bound that used to sit in a test.

The loop rewrites the page at most every REPORT_REFRESH_S seconds (jobs/onpolicy.py), so the share
of a run's wall time the page can take is (one rewrite) / REPORT_REFRESH_S. This renders the page of a
100-iteration run with 11 eval rows (tests/synthetic_runs.py) `--repeats` times after one warm-up
(matplotlib loads its fonts once per process) and prints the median, the spread and that share.

    .venv/bin/python -m bench.report_speed [--repeats 7]

Target: a share of at most 0.10 (a rewrite under a second). Nothing is written but a temporary run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jobs.onpolicy import REPORT_REFRESH_S
from jobs.outputs.report import write_report
from tests.synthetic_runs import write_run

TARGET_SHARE = 0.10


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        run = write_run(Path(work) / "run", iterations=100, eval_every=10)
        write_report(run)  # the warm-up
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            write_report(run)
            seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    share = median / REPORT_REFRESH_S
    print(f"report.html of 100 iterations + 11 eval rows: median {median:.3f}s over {args.repeats} repeats "
          f"(min {min(seconds):.3f}s, max {max(seconds):.3f}s); share of the run at one rewrite per "
          f"{REPORT_REFRESH_S:g}s: {share:.3f} (target <= {TARGET_SHARE})")
    return 0 if share <= TARGET_SHARE else 1


if __name__ == "__main__":
    sys.exit(main())
