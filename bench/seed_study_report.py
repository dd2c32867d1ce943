"""docs/results/seed-study.md, summary.json and the plot, generated from the study's committed files alone.

Nothing here runs a model: `python -m bench.seed_study --report` reads
docs/results/seed-study/*/run.json and the per-problem records beside them, and writes the same
bytes every time for the same files. Each verdict is computed by the rule printed next to it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import mean

from bench.seed_study import BASE, METHODS, read_jsonl, write_json
from bench.study_stats import auroc_interval, mcnemar_p, paired_bootstrap, t_interval, wilson_interval

SUMMARY_KEYS = ("method", "seed", "run", "heldout_n", "heldout_pass1", "forget_kl", "commit")
IN_DISTRIBUTION_CLL = -0.1  # the CLL authors' rule of thumb: below about -0.1 is out of distribution
OWN_SOURCES = ("on_policy",)
EXTERNAL_SOURCES = ("reference", "demonstration")


class Runs:
    """Every finished run: its run.json and its per-problem verdicts."""

    def __init__(self, results: Path):
        self.results = results
        self.info: dict[str, dict] = {}
        self.correct: dict[str, dict[str, dict[int, bool]]] = {}  # run -> mode -> problem -> right?
        for path in sorted(results.glob("*/run.json")):
            info = json.loads(path.read_text())
            self.info[info["run"]] = info
            verdicts: dict[str, dict[int, bool]] = defaultdict(dict)
            for record in read_jsonl(path.parent / "heldout.jsonl.gz"):
                verdicts[record["mode"]][record["problem"]] = bool(record["correct"])
            self.correct[info["run"]] = verdicts

    def of(self, method: str) -> list[str]:
        return sorted((r for r, i in self.info.items() if i["method"] == method), key=lambda r: self.info[r]["seed"])

    def samples(self, run: str) -> list[dict]:
        path = self.results / run / "samples-cll.jsonl.gz"
        return read_jsonl(path) if path.is_file() else []

    def problem_means(self, method: str, mode: str) -> dict[int, float]:
        """Per problem: the share of this method's seeds that got it right."""
        runs = self.of(method)
        problems = set.intersection(*(set(self.correct[r][mode]) for r in runs)) if runs else set()
        return {p: mean(float(self.correct[r][mode][p]) for r in runs) for p in sorted(problems)}

    def difference(self, method_a: str, method_b: str, mode: str) -> tuple[float, float, float, int] | None:
        """A - B in pass@1, paired by problem (each side averaged over its seeds), with a bootstrap interval."""
        a, b = self.problem_means(method_a, mode), self.problem_means(method_b, mode)
        shared = sorted(set(a) & set(b))
        if not shared:
            return None
        return (*paired_bootstrap([a[p] - b[p] for p in shared]), len(shared))


def fmt(value, form="{:.3f}") -> str:
    return "n/a" if value is None else form.format(value)


def interval(centre, low, high, form="{:+.3f}") -> str:
    if math.isinf(low) or math.isinf(high):
        return f"{form.format(centre)} [no interval: one seed]"
    return f"{form.format(centre)} [{form.format(low)}, {form.format(high)}]"


def verdict(low: float, high: float, supports_when_positive: bool = True) -> str:
    if low > 0:
        return "supports" if supports_when_positive else "contradicts"
    if high < 0:
        return "contradicts" if supports_when_positive else "supports"
    return "inconclusive"


# --------------------------------------------------------------------------- tables


def methods_table(runs: Runs) -> list[str]:
    lines = ["| method | runs | held-out pass@1 per seed | mean | gain vs base, 95% CI (paired bootstrap) "
             "| transfer pass@1 mean | transfer gain vs base, 95% CI |", "|---|---|---|---|---|---|---|"]
    base = runs.of(BASE)
    if base:
        info = runs.info[base[0]]
        low, high = wilson_interval(info["heldout_correct"], info["heldout_n"])
        tlow, thigh = wilson_interval(info["transfer_correct"], info["transfer_n"]) if info["transfer_n"] else (0, 0)
        lines.append(f"| base | 1 | {info['heldout_pass1']:.3f} (Wilson [{low:.3f}, {high:.3f}], n={info['heldout_n']}) "
                     f"| {info['heldout_pass1']:.3f} | - | {fmt(info['transfer_pass1'])} (Wilson [{tlow:.3f}, "
                     f"{thigh:.3f}], n={info['transfer_n']}) | - |")
    for method in METHODS:
        names = runs.of(method)
        if not names:
            lines.append(f"| {method} | 0 | not run yet | | | | |")
            continue
        per_seed = ", ".join(f"{runs.info[n]['heldout_pass1']:.3f}" for n in names)
        gain = runs.difference(method, BASE, "greedy") if base else None
        transfer_gain = runs.difference(method, BASE, "transfer") if base else None
        lines.append(
            f"| {method} | {len(names)} | {per_seed} | {mean(runs.info[n]['heldout_pass1'] for n in names):.3f} | "
            f"{interval(*gain[:3]) if gain else 'n/a'} | "
            f"{fmt(mean(runs.info[n]['transfer_pass1'] for n in names))} | "
            f"{interval(*transfer_gain[:3]) if transfer_gain else 'n/a'} |")
    return lines


def runs_table(runs: Runs) -> list[str]:
    lines = ["| run | commit | held-out pass@1 [Wilson 95%] | McNemar p vs base | transfer pass@1 | forget_kl "
             "| rank>1 | centroid shift | OOD NLL (base) | held-out ref CLL | wall s | generated tok | trained tok |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = runs.of(BASE)
    for method in (BASE,) + METHODS:
        for name in runs.of(method):
            info = runs.info[name]
            low, high = wilson_interval(info["heldout_correct"], info["heldout_n"])
            p = "-"
            if base and method != BASE:
                mine, theirs = runs.correct[name]["greedy"], runs.correct[base[0]]["greedy"]
                shared = set(mine) & set(theirs)
                p = f"{mcnemar_p(sum(mine[q] and not theirs[q] for q in shared), sum(theirs[q] and not mine[q] for q in shared)):.3g}"
            lines.append(
                f"| {name} | {info['commit'][:7]}{'+' if info.get('uncommitted_changes') else ''} | "
                f"{info['heldout_pass1']:.3f} [{low:.3f}, {high:.3f}] | {p} | {fmt(info['transfer_pass1'])} | "
                f"{fmt(info['forget_kl'], '{:.5f}')} | {fmt(info['forget_rank_gt1'])} | "
                f"{fmt(info['forget_centroid_shift'])} | {fmt(info['forget_ood_nll'])} ({fmt(info['forget_ood_nll_base'])}) | "
                f"{fmt(info['eval_reference_cll'], '{:+.3f}')} | {fmt(info.get('wall_seconds'), '{:.0f}')} | "
                f"{info.get('generated_tokens', '-')} | {info.get('train_tokens', '-')} |")
    return lines


def pairwise_table(runs: Runs) -> list[str]:
    """Every pair of methods that both have runs: A - B on the same held-out problems."""
    ran = [m for m in METHODS if runs.of(m)]
    lines = ["| A | B | held-out pass@1 A - B, 95% CI | transfer pass@1 A - B, 95% CI |", "|---|---|---|---|"]
    for i, a in enumerate(ran):
        for b in ran[i + 1:]:
            target, transfer = runs.difference(a, b, "greedy"), runs.difference(a, b, "transfer")
            lines.append(f"| {a} | {b} | {interval(*target[:3]) if target else 'n/a'} | "
                         f"{interval(*transfer[:3]) if transfer else 'n/a'} |")
    return lines if len(ran) > 1 else ["Fewer than two methods have runs yet."]


def forgetting_table(runs: Runs) -> list[str]:
    lines = ["| method | forget_kl, mean [t 95%] | rank>1 | centroid shift | OOD NLL change vs base |",
             "|---|---|---|---|---|"]
    for method in METHODS:
        names = runs.of(method)
        if not names:
            continue
        cells = []
        for key in ("forget_kl", "forget_rank_gt1", "forget_centroid_shift"):
            cells.append(interval(*t_interval([runs.info[n][key] for n in names]), "{:.4f}"))
        nll = [runs.info[n]["forget_ood_nll"] - runs.info[n]["forget_ood_nll_base"] for n in names]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {interval(*t_interval(nll), '{:+.4f}')} |")
    return lines


# --------------------------------------------------------------------------- claims


def cll_separation(runs: Runs) -> tuple[str, str, list[str]]:
    """Own samples vs external references, both scored under the base weights (iteration 0)."""
    own, external = [], []
    for name in runs.info:
        for s in runs.samples(name):
            if s["iteration"] == 0 and s["avg_cll"] is not None:
                (own if s["source"] in OWN_SOURCES else external if s["source"] in EXTERNAL_SOURCES else []).append(s["avg_cll"])
    if not own or not external:
        return "inconclusive", "no run with both own samples and references yet", []
    score, low, high = auroc_interval(own, external)
    lines = [f"own samples: n={len(own)}, mean avg CLL {mean(own):+.3f}, share above {IN_DISTRIBUTION_CLL}: "
             f"{sum(c >= IN_DISTRIBUTION_CLL for c in own) / len(own):.2f}",
             f"references: n={len(external)}, mean avg CLL {mean(external):+.3f}, share above {IN_DISTRIBUTION_CLL}: "
             f"{sum(c >= IN_DISTRIBUTION_CLL for c in external) / len(external):.2f}"]
    word = verdict(low - 0.5, high - 0.5)
    return word, f"AUROC of avg CLL, own (positive) vs reference: {score:.3f} [{low:.3f}, {high:.3f}]", lines


def hinted_in_distribution(runs: Runs) -> tuple[str, str, list[str]]:
    differences, rewrites = [], []
    for name in runs.of("answer-first"):
        by_problem = defaultdict(dict)
        for s in runs.samples(name):
            if s["avg_cll"] is None:
                continue
            if s["source"] == "hinted" and s["dropped"] not in ("no_header", "repetition"):
                by_problem[(s["iteration"], s["problem"])]["hinted"] = s["avg_cll"]
            elif s["source"] == "reference":
                by_problem[(s["iteration"], s["problem"])]["reference"] = s["avg_cll"]
        for pair in by_problem.values():
            if "hinted" in pair and "reference" in pair:
                differences.append(pair["hinted"] - pair["reference"])
                rewrites.append(pair["hinted"])
    if not differences:
        return "inconclusive", "no answer-first run with decoded rewrites yet", []
    centre, low, high = paired_bootstrap(differences)
    word = verdict(low, high)
    if word == "supports" and mean(rewrites) < IN_DISTRIBUTION_CLL:
        word = "inconclusive"  # closer than the references, but still outside the authors' in-distribution band
    return word, (f"rewrite minus reference avg CLL on the same problem: {interval(centre, low, high)} (n={len(differences)}); "
                  f"mean rewrite CLL {mean(rewrites):+.3f} (in distribution: >= {IN_DISTRIBUTION_CLL})"), []


def idft_vs_sft(runs: Runs) -> tuple[str, str, list[str]]:
    target = runs.difference("idft", "sft", "greedy")
    seeds = sorted(set(runs.info[n]["seed"] for n in runs.of("idft")) & set(runs.info[n]["seed"] for n in runs.of("sft")))
    if not target or not seeds:
        return "inconclusive", "idft and sft not both run yet", []
    kl = t_interval([runs.info[f"idft-seed{s}"]["forget_kl"] - runs.info[f"sft-seed{s}"]["forget_kl"] for s in seeds])
    worse_target = target[2] < 0
    less_forgetting = kl[2] < 0
    more_forgetting = kl[1] > 0
    word = "contradicts" if (worse_target or more_forgetting) else "supports" if less_forgetting else "inconclusive"
    return word, (f"pass@1 IDFT - SFT: {interval(*target[:3])} (paired bootstrap, {target[3]} problems); "
                  f"forget_kl IDFT - SFT: {interval(*kl, '{:+.5f}')} (t interval over {len(seeds)} seed pairs)"), []


def onpolicy_transfer(runs: Runs) -> tuple[str, str, list[str]]:
    gains = {m: runs.difference(m, BASE, "transfer") for m in ("onpolicy-idft", "sft")}
    between = runs.difference("onpolicy-idft", "sft", "transfer")
    if not between or not all(gains.values()):
        return "inconclusive", "onpolicy-idft and sft not both run yet", []
    return verdict(between[1], between[2]), (
        f"transfer pass@1 on-policy IDFT - SFT: {interval(*between[:3])}; gain vs base: on-policy IDFT "
        f"{interval(*gains['onpolicy-idft'][:3])}, SFT {interval(*gains['sft'][:3])}"), []


def rpo_vs_dpo(runs: Runs) -> tuple[str, str, list[str]]:
    target = runs.difference("rpo", "dpo", "greedy")
    if not target:
        return "inconclusive", "rpo and dpo not both run yet", []
    return verdict(target[1], target[2]), f"held-out pass@1 RPO - DPO: {interval(*target[:3])} ({target[3]} problems)", []


CLAIMS = (
    ("CLL separates the model's own data from external data", cll_separation,
     "supports if the AUROC interval lies above 0.5, contradicts if below, else inconclusive"),
    ("Hinted rewrites are in-distribution", hinted_in_distribution,
     "supports if rewrites sit above their references (interval > 0) and their mean CLL is >= -0.1; "
     "contradicts if below their references"),
    ("IDFT >= SFT on the target task, with less forgetting", idft_vs_sft,
     "contradicts if IDFT is significantly worse on pass@1 or forgets significantly more; supports if it forgets "
     "significantly less and is not significantly worse; else inconclusive"),
    ("On-policy training transfers, SFT does not", onpolicy_transfer,
     "supports if on-policy IDFT's transfer pass@1 is significantly above SFT's, contradicts if below"),
    ("RPO beats DPO", rpo_vs_dpo, "supports if RPO's held-out pass@1 is significantly above DPO's, contradicts if below"),
)


# --------------------------------------------------------------------------- the page


def budget_lines(runs: Runs) -> list[str]:
    """The budget each method ran with, from the specs the runs recorded (one line per distinct budget)."""
    seen: dict[str, list[str]] = defaultdict(list)
    for method in METHODS:
        for name in runs.of(method):
            b = runs.info[name].get("budget") or {}
            shared = {k: v for k, v in b.items() if k not in ("mode", "lr")}
            seen[", ".join(f"{k} {v}" for k, v in shared.items())].append(
                f"{name} ({b.get('mode')}, lr {b.get('lr')})")
    return [f"- budget: {text or 'not recorded'}; runs: {', '.join(names)}" for text, names in seen.items()]


def plot(runs: Runs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "seed-study"
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for index, method in enumerate((BASE,) + METHODS):
        names = runs.of(method)
        if names:
            axes.scatter([runs.info[n]["forget_kl"] or 0.0 for n in names],
                         [runs.info[n]["heldout_pass1"] for n in names], label=method, color=f"C{index}",
                         marker="*" if method == BASE else "o", s=90 if method == BASE else 30)
    axes.set_xlabel("forget_kl: KL(base || trained) per token on out-of-domain text")
    axes.set_ylabel("held-out pass@1")
    axes.set_title("Gain against forgetting, one point per run")
    axes.legend(fontsize=7)
    figure.savefig(path, format="svg", metadata={"Date": None})


def write_report(results: Path) -> None:
    runs = Runs(results)
    summary = [{key: runs.info[name].get(key) for key in SUMMARY_KEYS} for method in (BASE,) + METHODS
               for name in runs.of(method)]
    write_json(results / "summary.json", {"runs": summary})
    page = results.parent / "seed-study.md"
    if runs.info:
        plot(runs, results.parent / "seed-study.svg")
    base = runs.info.get(BASE)
    commits = sorted({i["commit"][:7] for i in runs.info.values()})
    lines = [
        "# The seed study: do the seeds' claims hold on a real model?",
        "",
        "Generated by `python -m bench.seed_study --report` from the files in `docs/results/seed-study/`; "
        "do not edit by hand. Runs: `python -m bench.seed_study --model MODEL_DIR` (resumable: finished runs are "
        "skipped). Every run is a `python -m jobs.run` job of `configs/study-<method>-smollm2.yaml`.",
        "",
        "**Setup.** SmolLM2-135M-Instruct (the dequantised PyPI GGUF, docs/results.md) on `builtin:word-problems`: "
        "one- to three-step word problems whose worked solutions were written by a program (jobs/core/word_problems.py), "
        "so SFT trains on text the model did not write; one budget for every method (below, as each run's spec "
        "recorded it). Eval after the last iteration: greedy pass@1 on the held-out problems (another data seed; "
        "no question is shared with training), greedy pass@1 on a task that is never trained on (transfer), and "
        "forgetting against the base model on passages of Python standard-library docstrings. Intervals are 95%: "
        "Wilson for one proportion, a paired bootstrap over problems (2000 resamples, each method's seeds averaged "
        "per problem) for differences, Student's t over seeds for forgetting.",
        "",
        "**Why this task.** A comparison needs a task the base model partly solves: the earlier real-model runs "
        "(docs/results.md) used reasoning-gym `gsm_symbolic` and `basic_arithmetic`, where this model scored 0/24 "
        "and 0/100, so no method could be told from another. Short word problems with small numbers are within "
        "its reach some of the time (the base score is below), their answers are checked exactly, and their worked "
        "solutions have a style of their own (one computation per line, \"The answer is N.\"), unlike the model's "
        "chatty replies. `chain_sum` (bare sums and differences) shares the arithmetic but not the wording, so a "
        "gain there is transfer.",
        "",
        *budget_lines(runs),
        "",
        f"Runs finished: {len(runs.info)} ({', '.join(f'{m}: {len(runs.of(m))}' for m in (BASE,) + METHODS)}). "
        f"Commits: {', '.join(commits) or 'none'}.",
        "",
    ]
    if base:
        lines += [f"Base model: held-out pass@1 {base['heldout_pass1']:.3f} ({base['heldout_correct']}/{base['heldout_n']}), "
                  f"transfer pass@1 {fmt(base['transfer_pass1'])} ({base['transfer_correct']}/{base['transfer_n']}).", ""]
    lines += ["## Verdicts", "", "| claim | figure | verdict | rule |", "|---|---|---|---|"]
    details = []
    for claim, judge, rule in CLAIMS:
        word, figure, extra = judge(runs)
        lines.append(f"| {claim} | {figure} | **{word}** | {rule} |")
        details += [f"- {claim}: {line}" for line in extra]
    lines += [""] + details + ([""] if details else [])
    lines += ["## Target task and transfer, by method", ""] + methods_table(runs)
    lines += ["", "## Method against method (paired by problem, each side's seeds averaged)", ""] + pairwise_table(runs)
    lines += ["", "## Forgetting, by method (out-of-domain text)", ""] + forgetting_table(runs)
    lines += ["", "## Every run", ""] + runs_table(runs)
    if runs.info:
        lines += ["", "![held-out pass@1 against forget_kl, one point per run](seed-study.svg)"]
    page.write_text("\n".join(lines) + "\n")
