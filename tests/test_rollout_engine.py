"""The rollout worker's vLLM engine on CPU, on its own: a batch larger than one step's token budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

SCRIPT = """
import json, sys
from actors.rollout_worker import RolloutWorker
from jobs.core.records import Prompt
from jobs.core.spec import validate_spec
spec = validate_spec({"model": {"max_model_len": 1024}, "rollout": {"max_new_tokens": 8, "samples_per_prompt": 2}})
worker = RolloutWorker(spec, sys.argv[1], 0)
# 40 prompts x 600 tokens: more than one step's budget, so the engine would chunk prefills.
prompts = [Prompt(index=i, text="", token_ids=tuple(5 + (i + j) % 300 for j in range(600)), row={}) for i in range(40)]
samples, stats = worker.generate(prompts, 0)
# The job's CLL came from the engine's recorded entropies; the replica scores copies teacher-forced.
import dataclasses
copies = [dataclasses.replace(s, token_cll=[], cll={}, sequence_logp=None) for s in samples]
worker.scorer.score(copies)
cll_diff = max(abs(a - b) for s, c in zip(samples, copies) for a, b in zip(s.token_cll, c.token_cll, strict=True))
print("RESULT=" + json.dumps({"samples": len(samples), "diff": max(stats["logprob_gaps"]),
                              "fallbacks": stats["cll_replica_fallbacks"], "cll_diff": cll_diff}))
"""


def test_seeded_sampling_of_a_batch_larger_than_one_engine_step(tiny_model):
    """vLLM 0.32 CPU used to crash here ("CPU Generator does not use offset"); see cpu_engine_workarounds.

    The batch runs over several engine steps, with requests joining and leaving the persistent
    batch: the entropy recorder still gives each sample its own, position by position.
    """
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_CPU_OMP_THREADS_BIND": "nobind", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_model)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT=")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    outcome = json.loads(lines[-1].removeprefix("RESULT="))
    assert outcome["samples"] == 80 and outcome["diff"] < 1e-4
    assert outcome["fallbacks"] == 0 and outcome["cll_diff"] < 1e-4
