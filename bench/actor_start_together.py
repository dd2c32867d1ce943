"""The floor of time to first iteration: the job's actors' work, started together, with none of hintflow's actors.

    .venv/bin/python bench/actor_start_together.py --run DIR

Reads the job's resolved spec (DIR/spec.yaml) and placement.json, starts a private local Ray session,
and then, all at once, one bare Ray actor per actor the job waits for before its first iteration:

- per rollout worker: a plain vLLM `LLM` on the starting model (the job's engine settings and
  environment), plus the transformers copy the worker keeps when rollout.cll_check is replica;
- per learner rank: torch.distributed (gloo) joined with the other ranks, the model loaded and
  `deepspeed.initialize` with the job's DeepSpeed config and a torch AdamW;
- the reward actor: an empty actor (its start-up is Ray's alone).

Each actor gets the CPU threads placement.json records for its counterpart. The time runs from
before `ray.init` to the last actor ready: what the job could not do faster on this machine with
these libraries, whatever its own code did. The eval actor is left out, as the job does not wait
for it. What this borrows from the project is configuration only (the env vars, the DeepSpeed
config), none of its actor classes. Prints one line RESULT={json}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class BareEngine:
    def __init__(self, model: str, options: dict, replica: bool):
        from vllm import LLM

        self.llm = LLM(model=model, **options)
        if replica:
            from transformers import AutoModelForCausalLM

            self.replica = AutoModelForCausalLM.from_pretrained(model).eval()

    def ready(self) -> bool:
        return True


class BareRank:
    def __init__(self, model: str, rank: int, world_size: int, master: tuple[str, int], config: dict, lr: float):
        import deepspeed
        import torch
        from transformers import AutoModelForCausalLM

        os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                           "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": master[0],
                           "MASTER_PORT": str(master[1])})
        deepspeed.utils.logger.setLevel(logging.WARNING)
        getattr(deepspeed, "ops").__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend="gloo")
        network = AutoModelForCausalLM.from_pretrained(model)
        optimizer = torch.optim.AdamW(network.parameters(), lr=lr)
        self.engine, *_ = deepspeed.initialize(model=network, optimizer=optimizer, config=config)

    def ready(self) -> bool:
        return True


class BareActor:
    def ready(self) -> bool:
        return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="the job's output directory")
    args = parser.parse_args()

    import ray
    import yaml

    from actors.learner import deepspeed_config
    from actors.rollout_worker import vllm_env_vars
    from jobs.core.spec import validate_spec

    run = Path(args.run)
    spec = validate_spec(yaml.safe_load((run / "spec.yaml").read_text()))
    model = (str(run / "builtin" / spec.model.path.split(":", 1)[1])
             if spec.model.path.startswith("builtin:") else spec.model.path)
    placed = json.loads((run / "placement.json").read_text()).get("actors", {})

    def threads(label: str) -> dict:
        entry = placed.get(label) or {}
        return {"OMP_NUM_THREADS": str(entry.get("threads", 1))}

    engine_options = {"dtype": spec.model.dtype, "max_model_len": spec.model.max_model_len, "seed": spec.seed,
                      "enforce_eager": spec.rollout.engine.enforce_eager,
                      "gpu_memory_utilization": spec.rollout.engine.gpu_memory_utilization}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        master = ("127.0.0.1", probe.getsockname()[1])

    started = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    ray_init_seconds = time.perf_counter() - started
    actors = {}
    if spec.uses_rollout:
        for i in range(spec.rollout.workers):
            label = f"rollout worker {i}"
            actors[label] = ray.remote(BareEngine).options(
                num_cpus=0, runtime_env={"env_vars": {**vllm_env_vars(spec), **threads(label)}},
            ).remote(model, engine_options, spec.rollout.cll_check == "replica")
    for rank in range(spec.learner.ranks):
        label = f"learner rank {rank}"
        actors[label] = ray.remote(BareRank).options(num_cpus=0, runtime_env={"env_vars": threads(label)}).remote(
            model, rank, spec.learner.ranks, master, deepspeed_config(spec), spec.train.lr)
    if spec.reward.sources:
        actors["reward actor"] = ray.remote(BareActor).options(num_cpus=0).remote()
    pending = {actor.ready.remote(): label for label, actor in actors.items()}
    ready = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=900)
        if not done:
            raise RuntimeError(f"not ready after 900 s: {sorted(pending.values())}")
        ray.get(done[0])
        ready[pending.pop(done[0])] = time.perf_counter() - started
    total = time.perf_counter() - started
    ray.shutdown()
    print("RESULT=" + json.dumps({"ray_init_seconds": ray_init_seconds, "ready_seconds": ready,
                                  "together_seconds": total}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
