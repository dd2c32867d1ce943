"""Each of a job's actors started alone: the baseline of time to first iteration.

    .venv/bin/python bench/actor_start_alone.py --run DIR

Reads the job's resolved spec (DIR/spec.yaml) and starting model, starts a private local Ray
session (timed: the job pays for one too), then starts one actor of each role the job has, one
at a time and each alone, with the project's own classes (a 1-worker RolloutPool, a 1-rank
LearnerGroup, the RewardScorer, the eval actor), and times each from its creation to ready,
as jobs/startup.py times the job's actors. Each actor gets the CPU threads placement.json says
it had in the job. Prints one line RESULT={json}.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class JobThreads(dict):
    """Stands in for the job's placement (actors.placement.JobPlacement.active): no bundles, the job's thread counts."""

    def __init__(self, threads: dict[str, int]):
        super().__init__()
        self.threads = self
        self.update(threads)

    def __missing__(self, label: str) -> int:
        return 1

    def options(self, role: str, index: int | None = None) -> dict:
        return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="the job's output directory")
    args = parser.parse_args()

    import ray
    import yaml

    from jobs.run import actor_env_vars
    from jobs.core.spec import validate_spec

    run = Path(args.run)
    raw = yaml.safe_load((run / "spec.yaml").read_text())
    spec = validate_spec(raw)
    model = (str(run / "builtin" / spec.model.path.split(":", 1)[1])
             if spec.model.path.startswith("builtin:") else spec.model.path)
    notes = []
    placement_file = run / "placement.json"
    recorded = json.loads(placement_file.read_text()).get("actors", {}) if placement_file.exists() else {}
    threads = {label: entry["threads"] for label, entry in recorded.items() if isinstance(entry, dict) and entry.get("threads")}
    try:
        from actors import placement

        if threads:
            placement.JobPlacement.active = JobThreads(threads)
        else:
            notes.append("placement.json records no threads: each actor got the job's default")
    except (ImportError, AttributeError) as exc:
        notes.append(f"could not give the actors their job thread counts ({exc})")

    def alone(**changes) -> object:
        """The job's spec with fewer actors (1 worker, 1 rank): the tiling check must still hold."""
        data = json.loads(json.dumps(raw))
        for dotted, value in changes.items():
            node = data
            *path, last = dotted.split(".")
            for part in path:
                node = node[part]
            node[last] = value
        return validate_spec(data)

    env_vars = actor_env_vars(spec)
    started = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    ray_init_seconds = time.perf_counter() - started

    roles = {}

    def start(label: str, make, refs_of, shutdown) -> None:
        t0 = time.perf_counter()
        handle = make()
        for ref in refs_of(handle):
            ray.get(ref, timeout=900)
        roles[label] = time.perf_counter() - t0
        shutdown(handle)
        time.sleep(1.0)  # let the killed process go before the next actor starts

    from actors.learner_group import LearnerGroup
    from actors.reward_actor import RewardScorer
    from actors.rollout_pool import RolloutPool

    if spec.reward.sources:
        if any(source.kind == "reward_model" for source in spec.reward.sources):
            notes.append("reward actor skipped: it loads a reward model this benchmark does not resolve")
        else:
            start("reward actor", lambda: RewardScorer(spec, {}, env_vars),
                  lambda h: [ref for _, ref in h.ready_refs()], lambda h: h.shutdown())
    one_rank = alone(**{"learner.ranks": 1}) if spec.learner.ranks > 1 else spec
    start("learner rank", lambda: LearnerGroup(one_rank, model, env_vars),
          lambda h: [ref for _, ref in h.ready_refs()], lambda h: h.shutdown())
    if spec.uses_rollout:
        one_worker = alone(**{"rollout.workers": 1}) if spec.rollout.workers > 1 else spec
        start("rollout worker", lambda: RolloutPool(one_worker, model, env_vars),
              lambda h: [ref for _, ref in h.ready_refs()], lambda h: h.shutdown())
    if spec.eval.every:
        from transformers import AutoTokenizer

        from actors.evaluation import eval_inputs, start_eval_worker

        inputs = eval_inputs(spec, AutoTokenizer.from_pretrained(model))
        start("eval actor", lambda: start_eval_worker(spec, model, model, {}, inputs, env_vars, {}),
              lambda h: [h.__ray_ready__.remote()], lambda h: ray.kill(h))
    ray.shutdown()
    print("RESULT=" + json.dumps({"ray_init_seconds": ray_init_seconds, "ready_seconds": roles, "threads": threads,
                                  "notes": notes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
