"""Standalone vLLM on a job's own prompts, and the job's own rollout worker outside Ray: the baselines of
rollout efficiency and CLL overhead.

    .venv/bin/python bench/standalone_vllm.py --run DIR [--threads 2,1] [--repeats 3] [--skip-first] [--no-worker]

One process, engines in it (VLLM_ENABLE_V1_MULTIPROCESSING=0), outside Ray:

- plain: a plain vLLM `LLM` with the job's engine arguments (dtype, max_model_len, enforce_eager,
  the CPU workarounds of actors/rollout_worker.py) and none of hintflow's additions, generating
  the job's prompts (token ids from DIR/samples/iter-N.jsonl, one generate call per iteration, in
  the job's order) with the job's SamplingParams (n, temperature, top_p, max_tokens, logprobs=0,
  the per-request seed of actors.rollout_worker.sampling_seed): the rollout-efficiency baseline.
  Iteration 0 ran on the starting weights in the job too, so its token ids must come out
  identical (`iteration0_identical`): the baseline did the job's work.
- worker (unless --no-worker): the project's own `actors.rollout_worker.RolloutWorker`, built
  from the job's spec, timed two ways on the same prompts: `generate()` exactly as the job calls
  it (generation with CLL, whichever way rollout.cll_from says, then the CLL stage), and its
  engine generating with the same SamplingParams but no CLL request (generation alone). Their
  ratio is the CLL overhead without Ray in the way.

torch's thread count is vLLM's here, so each --threads setting is timed in turn on each
iteration (--skip-first: iterations 1.., as the in-job figures), --repeats times, after one
untimed warm-up pass. Prints one line RESULT={json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def on_policy_prompts(samples: list[dict]) -> list[tuple[int, list[int]]]:
    """(prompt index, prompt token ids) of the generated samples, in the job's order, once per prompt."""
    seen, prompts = set(), []
    for s in samples:
        if s.get("source", "on_policy") == "on_policy" and s["prompt_index"] not in seen:
            seen.add(s["prompt_index"])
            prompts.append((s["prompt_index"], s["prompt_token_ids"]))
    return prompts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="the job's output directory")
    parser.add_argument("--model", help="model folder (default: the job's starting model)")
    parser.add_argument("--threads", default="2", help="comma-separated thread counts to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-iterations", type=int, help="time at most this many iterations (the first ones)")
    parser.add_argument("--skip-first", action="store_true",
                        help="time iterations 1.. only (the first is still the warm-up pass and the identity check)")
    parser.add_argument("--no-worker", action="store_true", help="plain vLLM only (no CLL overhead numbers)")
    args = parser.parse_args()

    import yaml

    from actors.rollout_worker import cpu_engine_workarounds, sampling_seed, vllm_env_vars
    from jobs.core.records import Prompt
    from jobs.core.spec import validate_spec

    run = Path(args.run)
    spec = validate_spec(yaml.safe_load((run / "spec.yaml").read_text()))
    model = args.model or (str(run / "builtin" / spec.model.path.split(":", 1)[1])
                           if spec.model.path.startswith("builtin:") else spec.model.path)
    threads = [int(t) for t in args.threads.split(",")]
    iterations = sorted(int(p.stem.split("-")[1]) for p in (run / "samples").glob("iter-*.jsonl"))
    recorded = {i: [json.loads(line) for line in (run / "samples" / f"iter-{i}.jsonl").read_text().splitlines()
                    if line.strip()] for i in iterations}
    prompts = {i: on_policy_prompts(recorded[i]) for i in iterations}
    prompts = {i: p for i, p in prompts.items() if p}

    os.environ.update(vllm_env_vars(spec))
    os.environ.update({"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": str(threads[0])})
    import torch

    set_threads = torch.set_num_threads  # vLLM's CPU worker swaps in a no-op once it has started
    set_threads(threads[0])
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    started = time.perf_counter()
    llm = LLM(model=model, dtype=spec.model.dtype, seed=spec.seed, max_model_len=spec.model.max_model_len,
              enforce_eager=spec.rollout.engine.enforce_eager,
              gpu_memory_utilization=spec.rollout.engine.gpu_memory_utilization,
              trust_remote_code=spec.model.trust_remote_code, **cpu_engine_workarounds(spec))
    engine_start_seconds = time.perf_counter() - started
    tokenizer = llm.get_tokenizer()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    worker = None
    if not args.no_worker:
        from actors.rollout_worker import RolloutWorker

        worker = RolloutWorker(spec, model, 0)
    rollout = spec.rollout

    def params(iteration: int) -> list:
        return [SamplingParams(n=rollout.samples_per_prompt, temperature=rollout.temperature, top_p=rollout.top_p,
                               max_tokens=rollout.max_new_tokens, logprobs=0,
                               seed=sampling_seed(spec.seed, iteration, index))
                for index, _ in prompts[iteration]]

    def plain(engine, iteration: int):
        t0 = time.perf_counter()
        outputs = engine.generate([TokensPrompt(prompt_token_ids=list(ids)) for _, ids in prompts[iteration]],
                                  params(iteration), use_tqdm=False)
        return outputs, time.perf_counter() - t0

    def with_cll(iteration: int) -> tuple[float, dict]:
        batch = [Prompt(index=index, text="", token_ids=tuple(ids), row={}) for index, ids in prompts[iteration]]
        t0 = time.perf_counter()
        _, stats = worker.generate(batch, iteration)
        return time.perf_counter() - t0, stats

    # The worker's own warm-up call, then one untimed pass over the first iteration.
    llm.generate([TokensPrompt(prompt_token_ids=[pad_id, pad_id])],
                 SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0), use_tqdm=False)
    first = min(prompts)
    outputs, _ = plain(llm, first)
    if worker:
        plain(worker.llm, first)
        with_cll(first)
    in_job = [s["response_token_ids"] for s in recorded[first] if s.get("source", "on_policy") == "on_policy"]
    identical = [list(c.token_ids) for o in outputs for c in o.outputs] == in_job

    timed = [i for i in prompts if not (args.skip_first and i == first and len(prompts) > 1)][: args.max_iterations]
    timings = {t: {i: {"tokens": None, "generate_seconds": [], "worker_generation_alone_seconds": [],
                       "worker_generate_with_cll_seconds": [], "worker_stats": []} for i in timed} for t in threads}
    for _ in range(args.repeats):
        for i in timed:
            for t in threads:  # interleaved, so a change in the machine's load hits every setting alike
                set_threads(t)
                entry = timings[t][i]
                outputs, seconds = plain(llm, i)
                entry["tokens"] = sum(len(c.token_ids) for o in outputs for c in o.outputs)
                entry["generate_seconds"].append(seconds)
                if worker:
                    entry["worker_generation_alone_seconds"].append(plain(worker.llm, i)[1])
                    seconds, stats = with_cll(i)
                    entry["worker_generate_with_cll_seconds"].append(seconds)
                    entry["worker_stats"].append({k: v for k, v in stats.items() if isinstance(v, (int, float))})
    result = {
        "model": model, "engine_start_seconds": engine_start_seconds, "cll_from": getattr(rollout, "cll_from", "replica"),
        "iteration0_identical": identical if first == 0 else None,
        "prompts_per_iteration": {i: len(p) for i, p in prompts.items()},
        "threads": {str(t): {str(i): v for i, v in per.items()} for t, per in timings.items()},
    }
    print("RESULT=" + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
