"""Why IDFT on reference solutions lowers their CLL: a before/after probe on one real model.

    .venv/bin/python -m bench.idft_cll_probe --model /work/models/SmolLM2-135M-Instruct \
        --out docs/results/idft-cll-probe.json
    .venv/bin/python -m bench.idft_cll_probe --out docs/results/idft-cll-probe.json --report

Trains two fresh copies of the model on the same reference solutions (builtin word problems,
jobs/core/word_problems.py; reasoning-gym gsm_symbolic's answer_cot if that module is missing) with the
same batches and optimiser: (a) SFT, plain token-mean NLL (losses/sft.py); (b) IDFT through
losses.idft.idft_loss with phi from losses.cll.centered_log_likelihood. Log p, entropy and the
mask come from losses.token_stats.response_token_stats, the repo's one shift-and-gather.

Before and after, on the SAME reference tokens (the trained set, and a held-out set from another
seed class), it records per token: log p of the reference token, the entropy H of the full
next-token distribution, phi = log p + H and log max_v p_v (how confident the model is in its own
top token). It reports the mean change of each, over all tokens and split by the token's initial
phi (< -1: out of the model's distribution, >= -1), and the share of IDFT's per-token weight
sg(p^gamma) that each bucket holds at the start (read off the gradient of idft_loss itself).

--report rewrites the .md next to the .json from the .json alone, running nothing.
CPU, one thread; about 3-4 minutes for the defaults.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_PROMPT = "Solve the math problem. Write the calculation, then end with: The answer is <number>."
PHI_SPLIT = -1.0
EVAL_BATCH = 8


# ---------------------------------------------------------------- data

def reference_rows(count: int, seed: int) -> tuple[list[dict], str]:
    """`count` rows with prompt and solution; the source's name."""
    try:
        from jobs.core.word_problems import word_problem_rows
    except ImportError:
        import reasoning_gym

        data = reasoning_gym.create_dataset("gsm_symbolic", size=count, seed=seed)
        rows = [{"prompt": e["question"], "solution": e["metadata"]["answer_cot"]} for e in data]
        return rows, f"reasoning_gym gsm_symbolic seed {seed}"
    return word_problem_rows(count=count, seed=seed), f"builtin:word-problems seed {seed}"


def encode(rows: list[dict], tokenizer) -> list[tuple[list[int], int]]:
    """(prompt + response token ids, prompt length) per row, as the repo builds reference samples."""
    from jobs.core.data import response_token_ids

    items = []
    for row in rows:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": row["prompt"]}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt = tokenizer(text, add_special_tokens=False).input_ids
        items.append((prompt + response_token_ids(row["solution"], tokenizer), len(prompt)))
    return items


def collate(items, pad_id: int):
    import torch

    length = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(items), length), dtype=torch.long)
    response = torch.zeros((len(items), length), dtype=torch.bool)
    for row, (ids, n_prompt) in enumerate(items):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        response[row, n_prompt: len(ids)] = True
    return input_ids, attention, response


def token_stats(model, items, pad_id: int):
    from losses.token_stats import response_token_stats

    input_ids, attention, response = collate(items, pad_id)
    logits = model(input_ids=input_ids, attention_mask=attention).logits
    return response_token_stats(logits, input_ids, response)


# ---------------------------------------------------------------- measuring

def measure(model, items, pad_id: int, batch_size: int) -> dict:
    """Flat per-token tensors over all response tokens of `items`, in a fixed order."""
    import torch

    from losses.cll import centered_log_likelihood

    model.eval()
    out = {"logp": [], "entropy": [], "phi": [], "top_logp": []}
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            chunk = items[start: start + batch_size]
            input_ids, attention, response = collate(chunk, pad_id)
            logits = model(input_ids=input_ids, attention_mask=attention).logits
            from losses.token_stats import response_token_stats

            stats = response_token_stats(logits, input_ids, response)
            phi = centered_log_likelihood(stats)
            top = torch.log_softmax(logits[:, :-1].float(), -1).max(-1).values
            mask = stats.mask
            out["logp"].append(stats.logprobs[mask])
            out["entropy"].append(stats.entropy[mask])
            out["phi"].append(phi[mask])
            out["top_logp"].append(top[mask])
    return {key: torch.cat(values).double() for key, values in out.items()}


def idft_token_weights(model, items, pad_id: int, batch_size: int, idft_kwargs: dict):
    """IDFT's per-token weight sg(p^gamma), read off idft_loss: dL/dlogp_t = -w_t / N."""
    import torch

    from losses.cll import centered_log_likelihood
    from losses.idft import idft_loss

    model.eval()
    weights = []
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            stats = token_stats(model, items[start: start + batch_size], pad_id)
            logprobs = stats.logprobs.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                loss, metrics = idft_loss(logprobs, centered_log_likelihood(stats), stats.mask, **idft_kwargs)
                (grad,) = torch.autograd.grad(loss, logprobs)
            weights.append((-grad * metrics["num_tokens"])[stats.mask])
    return torch.cat(weights).double()


def summary(before: dict, after: dict, select) -> dict:
    n = int(select.sum())
    out = {"tokens": n}
    for key in ("phi", "logp", "entropy", "top_logp"):
        b, a = before[key][select], after[key][select]
        out[key] = {"before": float(b.mean()) if n else None, "after": float(a.mean()) if n else None,
                    "change": float((a - b).mean()) if n else None}
    return out


def buckets(before: dict, after: dict) -> dict:
    low = before["phi"] < PHI_SPLIT
    return {"all": summary(before, after, low | ~low), "phi_lt_-1": summary(before, after, low),
            "phi_ge_-1": summary(before, after, ~low)}


# ---------------------------------------------------------------- training

def train(model, items, method: str, batches: list[list[int]], pad_id: int, args) -> list[dict]:
    import torch

    from losses.cll import centered_log_likelihood
    from losses.idft import idft_loss
    from losses.sft import sft_loss

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    model.train()
    log = []
    for step, batch in enumerate(batches):
        stats = token_stats(model, [items[i] for i in batch], pad_id)
        if method == "sft":
            loss, metrics = sft_loss(stats.logprobs, stats.mask)
        else:
            loss, metrics = idft_loss(stats.logprobs, centered_log_likelihood(stats), stats.mask,
                                      **idft_settings(args))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        phi = centered_log_likelihood(stats)[stats.mask]
        log.append({"step": step, "loss": float(loss.detach()), "grad_norm": float(grad_norm), "batch_phi_mean": float(phi.mean()),
                    **{k: float(v) for k, v in metrics.items() if getattr(v, "ndim", 1) == 0}})
    return log


def idft_settings(args) -> dict:
    return {"beta": 1.0, "gamma_min": 0.1, "gamma_max": 2.0, "lam": 1.0}


def run(args) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_rows, train_source = reference_rows(args.references, args.data_seed)
    held_rows, held_source = reference_rows(args.references, args.data_seed + 1)
    assert not {r["prompt"] for r in train_rows} & {r["prompt"] for r in held_rows}
    train_items, held_items = encode(train_rows, tokenizer), encode(held_rows, tokenizer)

    order_rng = random.Random(args.seed)
    batches = []
    while len(batches) < args.steps:
        order = list(range(len(train_items)))
        order_rng.shuffle(order)
        batches += [order[i: i + args.batch_size] for i in range(0, len(order) - args.batch_size + 1, args.batch_size)]
    batches = batches[: args.steps]

    def load():
        torch.manual_seed(args.seed)
        return AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)

    base = load()
    before = {"train": measure(base, train_items, pad_id, EVAL_BATCH),
              "heldout": measure(base, held_items, pad_id, EVAL_BATCH)}
    weights = idft_token_weights(base, train_items, pad_id, EVAL_BATCH, idft_settings(args))
    low = before["train"]["phi"] < PHI_SPLIT
    weight_share = {
        "tokens_share_phi_lt_-1": float(low.double().mean()),
        "weight_share_phi_lt_-1": float(weights[low].sum() / weights.sum()),
        "weight_mean_phi_lt_-1": float(weights[low].mean()),
        "weight_mean_phi_ge_-1": float(weights[~low].mean()),
    }
    del base

    results = {}
    for method in ("sft", "idft"):
        model = load()
        t0 = time.time()
        steps = train(model, train_items, method, batches, pad_id, args)
        after = {"train": measure(model, train_items, pad_id, EVAL_BATCH),
                 "heldout": measure(model, held_items, pad_id, EVAL_BATCH)}
        results[method] = {"steps": steps, "seconds": round(time.time() - t0, 1),
                           **{split: buckets(before[split], after[split]) for split in ("train", "heldout")}}
        del model

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    # The files whose code produced these numbers, if they differ from the commit (or are not in it).
    used = ["losses/idft.py", "losses/cll.py", "losses/token_stats.py", "losses/sft.py", "jobs/core/data.py",
            "jobs/core/word_problems.py", "bench/idft_cll_probe.py"]
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *used], capture_output=True, text=True).stdout.split("\n")
    dirty = sorted(line[3:] for line in dirty if line.strip())
    return {
        "command": " ".join([".venv/bin/python -m bench.idft_cll_probe"] + sys.argv[1:]),
        "git_commit": commit,
        "uncommitted_files_used": dirty,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "model": args.model,
        "data": {"train": train_source, "heldout": held_source, "references_each": args.references,
                 "system_prompt": SYSTEM_PROMPT,
                 "train_tokens": int(before["train"]["phi"].numel()),
                 "heldout_tokens": int(before["heldout"]["phi"].numel())},
        "training": {"steps": args.steps, "batch_size": args.batch_size, "optimizer": "AdamW",
                     "lr": args.lr, "betas": [0.9, 0.95], "weight_decay": 0.01, "grad_clip": 1.0,
                     "lr_schedule": "constant", "idft": idft_settings(args),
                     "seed": args.seed, "data_seed": args.data_seed, "batch_order": batches},
        "phi_split": PHI_SPLIT,
        "idft_initial_weights_train": weight_share,
        "results": results,
        "seconds": round(time.time() - started, 1),
    }


# ---------------------------------------------------------------- report

def _f(value, digits=3) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}"


def report(data: dict) -> str:
    lines = [
        "# IDFT and the CLL of reference solutions: before/after probe",
        "",
        "Generated by `bench/idft_cll_probe.py --report` from `idft-cll-probe.json`; do not edit by hand.",
        "",
        f"Command: `{data['command']}`  ",
        f"Commit `{data['git_commit']}`; files used that differ from it: "
        f"{', '.join(data['uncommitted_files_used']) or 'none'}. "
        f"torch {data['torch']}, transformers {data['transformers']}, {data['threads']} thread, "
        f"{data['seconds']} s.",
        "",
        f"Model `{data['model']}` (fp32). Trained on {data['data']['references_each']} references of "
        f"{data['data']['train']} ({data['data']['train_tokens']} response tokens); held out: "
        f"{data['data']['heldout']} ({data['data']['heldout_tokens']} tokens). "
        f"{data['training']['steps']} steps of {data['training']['optimizer']} lr {data['training']['lr']}, "
        f"batch {data['training']['batch_size']}, betas {data['training']['betas']}, weight decay "
        f"{data['training']['weight_decay']}, grad clip {data['training']['grad_clip']}; the same batches for both. "
        f"IDFT: {data['training']['idft']}. Seed {data['training']['seed']}.",
        "",
        "Mean per-token change (after − before) on the same reference tokens; buckets by the token's phi before "
        f"training (split at {data['phi_split']}). `top log p` is log max_v p_v, the model's confidence in its own "
        "top token.",
        "",
        "| method | set | bucket | tokens | phi before → after | Δphi | Δlog p | ΔH | Δtop log p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    res = data["results"]
    for method in ("sft", "idft"):
        for split in ("train", "heldout"):
            for bucket in ("all", "phi_lt_-1", "phi_ge_-1"):
                s = res[method][split][bucket]
                lines.append(
                    f"| {method} | {split} | {bucket} | {s['tokens']} | {s['phi']['before']:.3f} → "
                    f"{s['phi']['after']:.3f} | {_f(s['phi']['change'])} | {_f(s['logp']['change'])} | "
                    f"{_f(s['entropy']['change'])} | {_f(s['top_logp']['change'])} |")
    w = data["idft_initial_weights_train"]
    lines += [
        "",
        f"IDFT's weight sg(p^γ) at the start (trained set): tokens with phi < -1 are "
        f"{100 * w['tokens_share_phi_lt_-1']:.1f}% of the tokens and hold "
        f"{100 * w['weight_share_phi_lt_-1']:.1f}% of the total weight (mean weight {w['weight_mean_phi_lt_-1']:.3f} "
        f"against {w['weight_mean_phi_ge_-1']:.3f} for phi ≥ -1).",
        "",
        "Training loss by step: "
        + "; ".join(f"{m} " + " ".join(f"{s['loss']:.3f}" for s in res[m]["steps"]) for m in ("sft", "idft")) + ".",
        "",
        "## Reading",
        "",
    ]
    lines += reading(data)
    return "\n".join(lines) + "\n"


def reading(data: dict) -> list[str]:
    res, w = data["results"], data["idft_initial_weights_train"]

    def moved(x: float) -> str:
        return f"rose by {x:.3f}" if x > 0 else f"fell by {-x:.3f}"

    out = []
    for method, name in (("sft", "SFT"), ("idft", "IDFT")):
        for split in ("train", "heldout"):
            a, lo, hi = (res[method][split][b] for b in ("all", "phi_lt_-1", "phi_ge_-1"))
            out.append(
                f"- {name}, {split}: mean phi {moved(a['phi']['change'])} "
                f"(log p {moved(a['logp']['change'])}, H {moved(a['entropy']['change'])}). "
                f"Tokens with phi < -1: log p {moved(lo['logp']['change'])}, H {moved(lo['entropy']['change'])}, "
                f"phi {moved(lo['phi']['change'])}; tokens with phi ≥ -1: log p {moved(hi['logp']['change'])}, "
                f"H {moved(hi['entropy']['change'])}, phi {moved(hi['phi']['change'])}.")
    si, ss = res["idft"]["train"], res["sft"]["train"]
    hi_, hs = res["idft"]["heldout"], res["sft"]["heldout"]
    fell = si["all"]["phi"]["change"] < 0
    entropy_share = si["all"]["entropy"]["change"] / si["all"]["phi"]["change"] if si["all"]["phi"]["change"] else 0.0
    out += [
        "",
        f"- Where IDFT's weight goes: the {100 * w['tokens_share_phi_lt_-1']:.1f}% of trained tokens with phi < -1 "
        f"hold {100 * w['weight_share_phi_lt_-1']:.2f}% of the total weight sg(p^γ) (mean "
        f"{w['weight_mean_phi_lt_-1']:.4f} against {w['weight_mean_phi_ge_-1']:.3f}). The update is, in effect, "
        "SFT on the tokens the model already predicts; AdamW normalises the gradient, so the small loss still "
        "takes full-sized steps.",
        f"- IDFT's mean phi on the trained references {'fell' if fell else 'rose'} by "
        f"{abs(si['all']['phi']['change']):.3f}; the entropy term is {entropy_share:.0%} of that change "
        f"(H {_f(si['all']['entropy']['change'])}, log p {_f(si['all']['logp']['change'])}). The model got "
        f"sharper: its log-probability of its own top token went {_f(si['all']['top_logp']['change'])} "
        f"(held out {_f(hi_['all']['top_logp']['change'])}).",
        f"- On the out-of-distribution reference tokens (phi < -1) IDFT moved log p by "
        f"{_f(si['phi_lt_-1']['logp']['change'])} (held out {_f(hi_['phi_lt_-1']['logp']['change'])}) while H "
        f"moved {_f(si['phi_lt_-1']['entropy']['change'])} ({_f(hi_['phi_lt_-1']['entropy']['change'])}); "
        f"SFT moved their log p by {_f(ss['phi_lt_-1']['logp']['change'])} "
        f"(held out {_f(hs['phi_lt_-1']['logp']['change'])}). SFT sharpens too (H "
        f"{_f(ss['all']['entropy']['change'])}), but its gain on these tokens outweighs that; IDFT has no such gain, "
        "so phi = log p + H falls.",
        "- The gradient of losses/idft.py equals the closed form -sg(p^γ)·(onehot(y) − softmax(z))/N of "
        "docs/algorithms.md §2 on a hand-sized example, with γ from the same position's phi "
        "(tests/test_idft_direction.py), so the drop is what the formula does on data that is partly "
        "out of the model's distribution, not a slip in the code.",
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="/work/models/SmolLM2-135M-Instruct")
    parser.add_argument("--out", default="docs/results/idft-cll-probe.json")
    parser.add_argument("--report", action="store_true", help="rewrite the .md from the .json; run nothing")
    parser.add_argument("--references", type=int, default=32, help="reference solutions trained on (and held out)")
    # 16 AdamW steps of 4 sequences at lr 1e-5, constant: the optimiser steps, batch and lr of the
    # seed-idft run (configs/seed-idft-smollm2.yaml: 4 iterations x 16 samples, 2 ranks x micro-batch 2).
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    if not args.report:
        data = run(args)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1) + "\n")
    data = json.loads(out.read_text())
    out.with_suffix(".md").write_text(report(data))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
