"""The DPO-family losses on the job's own Learner (DeepSpeed on CPU, no Ray), pair by pair: what
tests/test_preference_jobs.py checks against each variant's formula, without starting a job per variant.

    python tests/learner_pairs_run.py MODEL_DIR [LOSS:LABEL_SMOOTHING ...]

For each variant, a fresh Learner (configs/dpo.yaml with that loss, beta 0.5, lr 1e-3, one rank)
takes the frozen reference's log-probs of 15 preference pairs, then trains on them twice; printed
as `RESULTS=<json>`: per variant the pairs' reference log-probs and, per pass, the learner's own
per-pair records (policy log-probs before the pair's update, and its loss).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PAIRS = [(f"What is {a} + {a + 3}?", f"The answer is {2 * a + 3}.", f"{a} {a} so {a}") for a in range(15)]


def main() -> None:
    from transformers import AutoTokenizer

    from actors.learner import Learner
    from jobs.core.records import Pair
    from jobs.core.spec import load_spec

    model, variants = sys.argv[1], sys.argv[2:]
    tokenizer = AutoTokenizer.from_pretrained(model)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = {}
    for variant in variants:
        loss, smoothing = variant.split(":")
        spec = load_spec("configs/dpo.yaml", [f"model.path={model}", "preference.source=dataset", "reward.sources=[]",
                                              f"train.dpo.loss={loss}", f"train.dpo.label_smoothing={smoothing}",
                                              "train.dpo.beta=0.5", "train.lr=1e-3", "learner.ranks=1"])
        pairs = [Pair(iteration=0, prompt_index=i, prompt=prompt, prompt_token_ids=tokenizer(prompt).input_ids,
                      chosen=chosen, chosen_token_ids=tokenizer(chosen, add_special_tokens=False).input_ids,
                      rejected=rejected, rejected_token_ids=tokenizer(rejected, add_special_tokens=False).input_ids)
                 for i, (prompt, chosen, rejected) in enumerate(PAIRS)]
        learner = Learner(spec, model, 0, 1)
        learner.setup(("127.0.0.1", port))  # the process group is made once; later learners reuse it
        if spec.uses_initial_reference:
            for pair, (chosen, rejected) in zip(pairs, learner.reference_logps(pairs)):
                pair.reference_logp_chosen, pair.reference_logp_rejected = chosen, rejected
        passes = [learner.train(pairs, iteration)["records"] for iteration in range(2)]
        results[variant] = {"reference": [[p.reference_logp_chosen, p.reference_logp_rejected] for p in pairs],
                            "chosen_tokens": [len(p.chosen_token_ids) for p in pairs],
                            "rejected_tokens": [len(p.rejected_token_ids) for p in pairs], "passes": passes}
    print("RESULTS=" + json.dumps(results))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
