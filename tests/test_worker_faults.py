"""Actors killed mid-job are replaced, and the job ends as if nothing had happened.

Real Ray, vLLM (CPU) and DeepSpeed through the real CLI. The test SIGKILLs actor processes
while they work, as the kernel's OOM killer or a lost node would: a rollout worker while it
generates iteration 1 (after a weight sync, so its replacement must load the synced weights,
not the model it starts from), then the reward actor while it scores iteration 1. One job
takes both faults, because starting one costs most of a minute on 2 cores.

Which process to kill: other agents' Ray jobs run on this machine too, under the same titles.
Ray names a worker process after the task it runs ("ray::RolloutWorker.generate"; idle:
"ray::RolloutWorker"), and the job runs in a session of its own (tests/job_process.py) that
all of its Ray processes stay in, so a process counts only if it is in that session. The
tests that start Ray in the test process use the parent chain instead (pytest -> raylet ->
worker): a process counts only if it descends from this one.

The last tests run actors on a Ray started in the test process, for what one job cannot show
cheaply: a worker that is dead when the weights are pushed, and more deaths than
faults.worker_restarts allows (the job fails with one line).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
import torch
import yaml

from jobs.core.builtin import digit_share
from jobs.run import actor_env_vars
from jobs.core.spec import validate_spec
from tests.conftest import REPO, read_jsonl
from tests.job_process import JobProcess

pytestmark = pytest.mark.integration

# Every prompt of the builtin set once per iteration. 128 samples: each worker's slice of iteration 1
# (32 prompts x 2 samples x up to 160 tokens, then their CLL) keeps it inside `generate` for over a
# second on 2 idle cores, many times what finding and killing it takes; scoring them
# (slow_digit_share) keeps the reward actor busy for 2.5 s.
PROMPTS, SAMPLES_PER_PROMPT = 64, 2
# Enough tokens that generating iteration 1 takes seconds on 2 cores, so the kill lands in it.
OVERRIDES = {
    "iterations": 2,
    "checkpoint.every": 1,  # checkpoints/iter-0 holds the weights iteration 1 must be generated with
    "rollout.prompts_per_iteration": PROMPTS,
    "rollout.samples_per_prompt": SAMPLES_PER_PROMPT,
    "rollout.max_new_tokens": 160,
    "reward.sources": "[{kind: math_answer}, {kind: function, function: 'tests.reward_functions:slow_digit_share'}]",
}
JOB_TIMEOUT_S = 400
PHASE_TIMEOUT_S = 300  # start-up included


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may contain spaces; the parent pid follows it.
    return int(stat.rsplit(")", 1)[1].split()[1])


def descends_from(pid: int, ancestor: int) -> bool:
    while pid and pid > 1:
        if pid == ancestor:
            return True
        pid = parent_pid(pid)
    return False


def processes_under(ancestor: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose parent chain reaches `ancestor`."""
    listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    found = [line.strip().partition(" ") for line in listing.splitlines()]
    return [(int(pid), args.strip()) for pid, _, args in found if descends_from(int(pid), ancestor)]


def kill_titled(title: str, processes, timeout: float = 10.0, spare: tuple[int, ...] = ()) -> int:
    """SIGKILL the first of `processes()` titled `title` (not one in `spare`) as soon as one appears; its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, args in processes():
            if args == title and pid not in spare:
                os.kill(pid, signal.SIGKILL)
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no process titled {title!r} within {timeout}s")


def run_killing(out, settings: dict, kills: list[tuple[str, str]]) -> tuple[JobProcess, int, list[int]]:
    """The job with `settings`; at each (progress line, process title) of `kills`, the first such process
    SIGKILLed. Returns the job, its exit code and the killed pids."""
    overrides = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    job = JobProcess("configs/onpolicy_idft.yaml", "--output-dir", str(out), *overrides)
    try:
        pids = []
        for line, title in kills:
            job.wait_for_line(line, PHASE_TIMEOUT_S)
            pids.append(kill_titled(title, job.processes))
        return job, job.finish(JOB_TIMEOUT_S), pids
    except BaseException:
        job.kill_everything()
        raise


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "out"
    job, returncode, (rollout_pid, reward_pid) = run_killing(out, OVERRIDES, [
        ("iteration 1 (2/2): generating", "ray::RolloutWorker.generate"),
        ("iteration 1 (2/2): scoring", "ray::RewardActor.score"),
    ])
    assert returncode == 0, f"job failed after killing pids {rollout_pid} and {reward_pid}:\n{job.output()[-6000:]}"
    return out


def test_a_worker_death_past_the_restart_limit_fails_in_one_line_and_keeps_the_last_checkpoint(tmp_path):
    """faults.worker_restarts=0 through the real CLI: the first death ends the run, naming the worker and
    the limit, and the checkpoint of the iteration before it stays whole (and nothing of the one it hit)."""
    out = tmp_path / "out"
    job, returncode, (killed,) = run_killing(out, {**OVERRIDES, "faults.worker_restarts": 0},
                                             [("iteration 1 (2/2): generating", "ray::RolloutWorker.generate")])
    assert returncode == 1, job.output()[-4000:]
    lines = "".join(job.stderr).strip().splitlines()
    assert lines and "Traceback" not in job.output(), job.output()[-4000:]
    # The job's own line ends stderr (Ray may have logged the death before it).
    assert lines[-1].startswith("rollout error: rollout worker ") and f"died during generate (pid {killed}" in lines[-1]
    assert "0 replacement(s) in this job already, and faults.worker_restarts is 0" in lines[-1], lines[-1]
    assert [c.name for c in sorted((out / "checkpoints").glob("iter-*"))] == ["iter-0"]
    checkpoint = out / "checkpoints" / "iter-0"
    assert (checkpoint / "model.safetensors").is_file()
    assert json.loads((checkpoint / "training_state" / "loop.json").read_text())["next_iteration"] == 1
    assert [m["iteration"] for m in read_jsonl(out / "metrics.jsonl")] == [0]


def test_killed_rollout_worker_is_replaced_and_its_slice_regenerated(faulty_run):
    out = faulty_run
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [0, 1]
    assert metrics[0]["rollout_worker_restarts"] == 0
    assert metrics[1]["rollout_worker_restarts"] == 1
    assert metrics[1]["samples"] == PROMPTS * SAMPLES_PER_PROMPT
    samples = read_jsonl(out / "samples" / "iter-1.jsonl")
    assert len(samples) == PROMPTS * SAMPLES_PER_PROMPT
    assert sorted(s["prompt_index"] for s in samples) == sorted(list(range(PROMPTS)) * SAMPLES_PER_PROMPT)
    for s in samples:
        assert s["response_token_ids"] and len(s["token_cll"]) == len(s["response_token_ids"])
    # The replacement's engine and CLL replica hold the same weights.
    assert metrics[1]["engine_scorer_logprob_max_diff"] < 1e-4


def test_iteration_equals_a_run_without_the_fault(faulty_run):
    """A fresh worker given the same slices under the weights synced after iteration 0 draws the same samples.

    That is what the per-request seeds promise, and it holds only if the replacement loaded
    those synced weights: the initial model's log-probs of the same tokens are far off.
    """
    out = faulty_run
    samples = read_jsonl(out / "samples" / "iter-1.jsonl")
    replayed = replay_in_subprocess(out, out / "checkpoints" / "iter-0", samples)
    assert [r["response_token_ids"] for r in replayed] == [s["response_token_ids"] for s in samples]
    assert max_diff([r["engine_logprobs"] for r in replayed], [s["engine_logprobs"] for s in samples]) < 1e-4

    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(out / "builtin" / "tiny-llama", dtype=torch.float32).eval()
    stale = [response_logprobs(initial, s["prompt_token_ids"], s["response_token_ids"]) for s in samples]
    assert max_diff(stale, [s["engine_logprobs"] for s in samples]) > 1e-3


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    assert [len(x) for x in a] == [len(y) for y in b]
    return max(abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


def response_logprobs(model, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].double()
    return torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(response_ids)[:, None])[:, 0].tolist()


def replay_in_subprocess(out: Path, weights: Path, samples: list[dict]) -> list[dict]:
    """Iteration 1's generation again, slice by slice as the pool spread it, on one fresh worker with no fault."""
    batch = list(dict.fromkeys(s["prompt_index"] for s in samples))  # prompt order, as generated
    prompts = {s["prompt_index"]: s for s in samples}
    workers = yaml.safe_load((out / "spec.yaml").read_text())["rollout"]["workers"]
    bounds = [len(batch) * i // workers for i in range(workers + 1)]
    slices = [
        [{"index": i, "text": prompts[i]["prompt"], "token_ids": prompts[i]["prompt_token_ids"]} for i in batch[a:b]]
        for a, b in zip(bounds, bounds[1:])
    ]
    (out.parent / "replay-slices.json").write_text(json.dumps(slices))
    # As many CPU threads as the pool's workers had (placement.json): the same arithmetic, and no
    # OpenMP threads left spinning for cores that other processes hold (a 2-thread replay on a busy
    # 2-core machine took several times as long).
    placed = json.loads((out / "placement.json").read_text())["actors"]
    threads = placed.get("rollout worker 0", {}).get("threads", 1)
    result = subprocess.run(
        [sys.executable, "-m", "tests.test_worker_faults", str(out / "spec.yaml"), str(weights),
         str(out.parent / "replay-slices.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPLAY=")]
    assert result.returncode == 0 and lines, f"replay failed:\n{result.stderr[-3000:]}"
    return json.loads(lines[-1].removeprefix("REPLAY="))


def replay(spec_path: str, weights: str, slices_path: str) -> None:
    from actors.rollout_worker import RolloutWorker, vllm_env_vars
    from jobs.core.records import Prompt
    from jobs.core.spec import load_spec

    spec = load_spec(spec_path)
    os.environ.update(vllm_env_vars(spec))  # what the pool gives its workers, before vLLM starts
    # Every request carries its own seed, so one worker (engine seed 0) stands in for each of them.
    worker = RolloutWorker(spec, weights, 0)
    replayed = []
    for prompts in json.loads(Path(slices_path).read_text()):
        batch = [Prompt(index=p["index"], text=p["text"], token_ids=tuple(p["token_ids"]), row={}) for p in prompts]
        samples, _ = worker.generate(batch, iteration=1)
        replayed += [{"response_token_ids": s.response_token_ids, "engine_logprobs": s.engine_logprobs}
                     for s in samples]
    print("REPLAY=" + json.dumps(replayed), flush=True)


def test_killed_reward_actor_is_replaced_and_the_batch_rescored(faulty_run):
    out = faulty_run
    metrics = read_jsonl(out / "metrics.jsonl")
    assert metrics[0]["reward_actor_restarts"] == 0
    assert metrics[1]["reward_actor_restarts"] == 1
    for s in read_jsonl(out / "samples" / "iter-1.jsonl"):
        assert s["rewards"].keys() == {"math_answer", "function", "total"}
        assert s["rewards"]["function"] == digit_share(s["prompt"], s["response"], {})


# --------------------------------------------------------------------------- on a Ray started here


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_worker_dead_at_a_weight_sync_is_replaced_by_one_holding_the_new_weights(local_ray, tiny_model):
    from transformers import AutoModelForCausalLM

    from actors.rollout_pool import RolloutPool
    from actors.weights.payload import encode_weights

    spec = validate_spec({"rollout": {"workers": 1}})
    notes = []
    pool = RolloutPool(spec, str(tiny_model), actor_env_vars(spec), note=notes.append)
    try:
        ray.get([ref for _, ref in pool.ready_refs()], timeout=300)
        model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter, generator=torch.Generator().manual_seed(0)) * 0.05)
        # Idle between calls, Ray titles the worker after its class alone.
        kill_titled("ray::RolloutWorker", lambda: processes_under(os.getpid()), timeout=30)
        pool.load_weights(ray.put(encode_weights(model.state_dict())), timeout_s=300)
        assert pool.take_restarts() == 1 and pool.take_restarts() == 0
        assert len(notes) == 1 and notes[0].startswith("rollout worker 0 died during load_weights (pid ")

        probe = list(range(3, 40))
        engine = ray.get(pool.workers[0].prompt_logprobs.remote(probe), timeout=120)
        assert max_diff([engine], [response_logprobs(model, probe[:1], probe[1:])]) < 1e-4
    finally:
        pool.shutdown()


def test_reward_actor_dying_more_often_than_allowed_fails_with_one_line(local_ray):
    from jobs.core.records import Sample
    from actors.reward_actor import RewardScorer
    from jobs.core.records import Prompt
    from jobs.core.errors import RewardError

    spec = validate_spec({
        "faults": {"worker_restarts": 1},
        "reward": {"sources": [{"kind": "function", "function": "tests.reward_functions:slow_digit_share"}]},
    })
    notes = []
    scorer = RewardScorer(spec, {}, {}, note=notes.append)
    ray.get([ref for _, ref in scorer.ready_refs()], timeout=120)
    prompt = Prompt(index=0, text="What is 1 + 1?", token_ids=(1, 2), row={"answer": "2"})
    # Seconds of scoring (slow_digit_share sleeps per sample): time to kill each actor in turn.
    samples = [Sample(iteration=0, prompt_index=0, prompt=prompt.text, prompt_token_ids=[1, 2], response=str(i),
                      response_token_ids=[3], finish_reason="stop") for i in range(200)]
    killed = []

    def kill_the_actor_and_its_replacement():
        for _ in range(2):
            killed.append(kill_titled("ray::RewardActor.score", lambda: processes_under(os.getpid()), timeout=120,
                                      spare=tuple(killed)))

    killer = threading.Thread(target=kill_the_actor_and_its_replacement)
    killer.start()
    with pytest.raises(RewardError) as failure:
        scorer.score(samples, {0: prompt})
    killer.join(timeout=30)
    assert len(killed) == 2
    line = failure.value.one_line()
    assert line.startswith(f"reward error: the reward actor died during scoring (pid {killed[1]}: ")
    assert line.endswith("; 1 replacement(s) in this job already, and faults.worker_restarts is 1")
    assert len(notes) == 1 and f"(pid {killed[0]}: " in notes[0] and "1 of 1 replacements" in notes[0]


if __name__ == "__main__":
    replay(*sys.argv[1:])
