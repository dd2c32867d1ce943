"""`hintflow score`: a data audit by CLL. Which examples of an SFT dataset sit outside the model's
distribution? (docs/algorithms.md section 1: the per-token CLL, phi_t = log p_t + H_t, of the response
under its prompt; the offline use the DDT authors make of it.)

    hintflow score --model DIR --data FILE [--prompt-column prompt] [--response-column solution]
                   [--workers N] [--out DIR] [--keep-above X | --keep-fraction F]

The data goes through the job's own loader (any format a job takes, with the same column options and
chat template). Each example's response is scored teacher-forced by N Ray actors (actors/score_worker.py),
batched, on CPU or GPU. Writes to --out:

    scores.jsonl       one line per input row, by its index: mean CLL, min CLL, the share of tokens below
                       -1 and the token count; or the reason the row could not be scored
    cll-histogram.png  the examples' mean CLL
    summary.md         quantiles, the 10 lowest and the 10 highest examples (shortened), the rows skipped;
                       with --group-column COL, the same by the column's values, and for two values the
                       AUROC: how often a row of the higher group outscores a row of the other
    kept.<ext>         with --keep-above X (mean CLL >= X) or --keep-fraction F (the top F by mean CLL):
                       the kept rows in the input's format (.jsonl, .json, .parquet; other sources: .jsonl)

A row without a prompt or response, with an empty one, or longer than --max-model-len is counted and
named in summary.md, not fatal, unless every row is such.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from jobs.core.data import indexed_rows, render_prompt, response_token_ids
from jobs.core.data_sources import column_value, response_text
from jobs.core.errors import DataError, HintflowError
from jobs.core.records import Sample
from jobs.core.spec import DataSpec

SHORT = 160  # characters of a prompt or response quoted in summary.md


@dataclass
class Scored:
    index: int
    row: dict
    sample: Sample | None = None  # None: skipped, for `reason`
    reason: str | None = None
    token_cll: list[float] | None = None
    group: str | None = None  # the row's --group-column value

    def record(self) -> dict:
        grouped = {} if self.group is None else {"group": self.group}
        if self.token_cll is None:
            return {"index": self.index, "error": self.reason, **grouped}
        cll = self.token_cll
        return {"index": self.index, "mean_cll": statistics.fmean(cll), "min_cll": min(cll),
                "frac_below_minus1": sum(phi < -1.0 for phi in cll) / len(cll), "tokens": len(cll), **grouped}


def auroc(positives: list[float], negatives: list[float]) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half (by ranks)."""
    if not positives or not negatives:
        raise ValueError("auroc needs both groups")
    ranked = sorted([(s, 1) for s in positives] + [(s, 0) for s in negatives])
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # average ranks over ties
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        rank_sum += (i + 1 + j) / 2 * sum(label for _, label in ranked[i:j])
        i = j
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def group_separation(records: list[dict]) -> tuple[str, str, float] | None:
    """(higher group, lower group, AUROC of the higher over the lower) when the scored rows fall in two groups."""
    groups: dict[str, list[float]] = {}
    for r in records:
        if "mean_cll" in r and "group" in r:
            groups.setdefault(r["group"], []).append(r["mean_cll"])
    if len(groups) != 2:
        return None
    low, high = sorted(groups, key=lambda g: (statistics.median(groups[g]), g))
    return high, low, auroc(groups[high], groups[low])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hintflow score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a local HF folder, a hub id, or builtin:tiny-llama")
    parser.add_argument("--data", required=True, help="what data.path takes: a file, a folder, a hub dataset, builtin:")
    parser.add_argument("--out", help="where the results go (default: runs/score-<data name>)")
    parser.add_argument("--prompt-column", default="prompt")
    parser.add_argument("--response-column", default="solution", help="the responses to score (a dotted path "
                        "reaches into a nested column)")
    parser.add_argument("--system-prompt")
    parser.add_argument("--chat-template", default="model", help="model (the tokenizer's), none, or a Jinja template")
    parser.add_argument("--split", default="train")
    parser.add_argument("--max-rows", type=int, help="score only the first N rows")
    parser.add_argument("--max-model-len", type=int, default=2048, help="prompt + response tokens at most")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--workers", type=int, default=1, help="Ray actors scoring in parallel")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--group-column", help="compare the rows by this column's values (e.g. where each "
                        "response came from); two values get an AUROC")
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--keep-above", type=float, metavar="X", help="write the rows whose mean CLL is at least X")
    keep.add_argument("--keep-fraction", type=float, metavar="F", help="write the top F (0-1] of rows by mean CLL")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.keep_fraction is not None and not 0 < args.keep_fraction <= 1:
        parser.error("--keep-fraction must lie in (0, 1]")
    return args


def examples(data: DataSpec, tokenizer, max_model_len: int) -> list[Scored]:
    """Every row, as a sample to score or with the reason it cannot be."""
    found = []
    for index, row in indexed_rows(data):
        try:
            text, token_ids, _ = render_prompt(row, index, data, tokenizer)
            response = response_text(row, index, data.solution_column)
        except DataError as exc:
            found.append(Scored(index, row, reason=str(exc)))
            continue
        response_ids = response_token_ids(response, tokenizer)
        if len(token_ids) + len(response_ids) > max_model_len:
            found.append(Scored(index, row, reason=f"data row {index}: {len(token_ids)} prompt + {len(response_ids)} "
                                f"response tokens; at most {max_model_len} fit (--max-model-len)"))
            continue
        found.append(Scored(index, row, Sample(iteration=-1, prompt_index=index, prompt=text,
                                               prompt_token_ids=list(token_ids), response=response,
                                               response_token_ids=response_ids, finish_reason="stop",
                                               source="dataset")))
    return found


def score_all(args, model_path: str, pad_id: int, scored: list[Scored]) -> None:
    """Shard the examples over the workers, longest first so the shards even out; fill token_cll."""
    import ray

    from actors.score_worker import ScoreWorker

    todo = sorted((s for s in scored if s.sample), key=lambda s: -s.sample.num_tokens)
    threads = max(1, int(args.cpus_per_worker))
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level="ERROR", log_to_driver=False)
    else:
        ray.init(address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        remote = ray.remote(ScoreWorker).options(num_cpus=args.cpus_per_worker, num_gpus=args.gpus_per_worker)
        workers = [remote.remote(model_path, args.dtype, args.batch_size, pad_id, threads, args.trust_remote_code)
                   for _ in range(args.workers)]
        shards = [todo[w::args.workers] for w in range(args.workers)]
        results = ray.get([worker.score.remote([s.sample for s in shard]) for worker, shard in zip(workers, shards)])
        for shard, token_clls in zip(shards, results):
            for item, token_cll in zip(shard, token_clls):
                item.token_cll = token_cll
    finally:
        ray.shutdown()


def shorten(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= SHORT else text[: SHORT - 1] + "…"


def cell(text: str) -> str:
    """Shortened, on one line, its pipes escaped: a markdown table cell."""
    return shorten(text).replace("|", "\\|")


def summary_md(args, records: list[dict], scored: list[Scored]) -> str:
    good = sorted((r for r in records if "mean_cll" in r), key=lambda r: r["mean_cll"])
    by_index = {s.index: s for s in scored}
    means = [r["mean_cll"] for r in good]
    cuts = statistics.quantiles(means, n=20, method="inclusive") if len(means) > 1 else means * 19
    lines = [f"# CLL audit of {args.data} under {args.model}", "",
             f"{len(good)} of {len(records)} rows scored (response column `{args.response_column}`); "
             f"`hintflow score` wrote this from scores.jsonl.", "",
             "| mean CLL | min | 5% | 25% | median | 75% | 95% | max |", "|---|---|---|---|---|---|---|---|",
             f"| {statistics.fmean(means):+.3f} | {means[0]:+.3f} | {cuts[0]:+.3f} | {cuts[4]:+.3f} | "
             f"{cuts[9]:+.3f} | {cuts[14]:+.3f} | {cuts[18]:+.3f} | {means[-1]:+.3f} |", ""]
    for title, chosen in (("lowest (furthest outside the model's distribution)", good[:10]),
                          ("highest", list(reversed(good[-10:])))):
        lines += [f"## The 10 {title}", "", "| row | mean CLL | share < -1 | prompt | response |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['index']} | {r['mean_cll']:+.3f} | {r['frac_below_minus1']:.2f} | "
                  f"{cell(by_index[r['index']].sample.prompt)} | {cell(by_index[r['index']].sample.response)} |"
                  for r in chosen]
        lines.append("")
    if args.group_column:
        lines += by_group(args.group_column, good)
    skipped = [r for r in records if "error" in r]
    lines += [f"## Rows not scored: {len(skipped)}", ""] + [f"- {shorten(r['error'])}" for r in skipped[:20]]
    if len(skipped) > 20:
        lines.append(f"- … {len(skipped) - 20} more (scores.jsonl has every one)")
    return "\n".join(lines) + "\n"


def by_group(column: str, good: list[dict]) -> list[str]:
    groups: dict[str, list[float]] = {}
    for r in good:
        groups.setdefault(r["group"], []).append(r["mean_cll"])
    lines = [f"## By `{column}`", "", "| value | rows | mean CLL | median | 5% | 95% |", "|---|---|---|---|---|---|"]
    for name, means in sorted(groups.items(), key=lambda item: -statistics.median(item[1])):
        cuts = statistics.quantiles(means, n=20, method="inclusive") if len(means) > 1 else means * 19
        lines.append(f"| {cell(name)} | {len(means)} | {statistics.fmean(means):+.3f} | "
                     f"{statistics.median(means):+.3f} | {cuts[0]:+.3f} | {cuts[18]:+.3f} |")
    separation = group_separation(good)
    if separation:
        high, low, area = separation
        lines += ["", f"AUROC {area:.3f}: a random `{cell(high)}` row's mean CLL is above a random "
                  f"`{cell(low)}` row's that often (0.5: the CLL cannot tell the two apart)."]
    return lines + [""]


def histogram(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    axes.hist([r["mean_cll"] for r in records if "mean_cll" in r], bins=40, color="#3b6ea5")
    axes.set_xlabel("mean CLL of the response (phi = log p + H)")
    axes.set_ylabel("examples")
    axes.set_title("CLL of the examples under the model")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_kept(args, records: list[dict], scored: list[Scored], out: Path) -> Path:
    good = [r for r in records if "mean_cll" in r]
    if args.keep_above is not None:
        kept = {r["index"] for r in good if r["mean_cll"] >= args.keep_above}
    else:
        ranked = sorted(good, key=lambda r: -r["mean_cll"])
        kept = {r["index"] for r in ranked[: math.ceil(args.keep_fraction * len(ranked))]}
    rows = [s.row for s in scored if s.index in kept]
    suffix = Path(args.data).suffix if Path(args.data).is_file() else ""
    if suffix == ".parquet":
        import pandas as pd

        path = out / "kept.parquet"
        pd.DataFrame(rows).to_parquet(path)
    elif suffix == ".json":
        path = out / "kept.json"
        path.write_text(json.dumps(rows, default=str))
    else:
        path = out / "kept.jsonl"
        path.write_text("".join(json.dumps(row, default=str) + "\n" for row in rows))
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    from jobs.run import load_tokenizer, model_folder, silence_deepspeed_cpu_notice

    silence_deepspeed_cpu_notice()
    out = Path(args.out or Path("runs") / f"score-{Path(args.data).stem or 'data'}").resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        model_path = model_folder(args.model, "--model", out)
        tokenizer = load_tokenizer(model_path, args.trust_remote_code)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        data = DataSpec(path=args.data, split=args.split, prompt_column=args.prompt_column,
                        solution_column=args.response_column, system_prompt=args.system_prompt,
                        chat_template=args.chat_template, shuffle=False, max_prompts=args.max_rows)
        scored = examples(data, tokenizer, args.max_model_len)
        if args.group_column:
            for item in scored:
                value = column_value(item.row, args.group_column)
                item.group = "(none)" if value is None else str(value)
        if not any(s.sample for s in scored):
            first = next((s.reason for s in scored), "no rows")
            raise DataError(f"--data {args.data}: none of its {len(scored)} row(s) can be scored; the first: {first}")
        print(f"hintflow score: {sum(1 for s in scored if s.sample)} of {len(scored)} rows to score on "
              f"{args.workers} worker(s)", flush=True)
        score_all(args, model_path, pad_id, scored)
    except (HintflowError, OSError) as exc:
        line = exc.one_line() if isinstance(exc, HintflowError) else f"error: {exc}"
        print(f"hintflow score: {line}", file=sys.stderr)
        return 2
    records = [s.record() for s in sorted(scored, key=lambda s: s.index)]
    (out / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    histogram(records, out / "cll-histogram.png")
    (out / "summary.md").write_text(summary_md(args, records, scored))
    kept = write_kept(args, records, scored, out) if (args.keep_above is not None or args.keep_fraction) else None
    skipped = sum("error" in r for r in records)
    separation = group_separation(records)
    print(f"hintflow score: {len(records) - skipped} scored, {skipped} skipped; {out / 'scores.jsonl'}, "
          f"{out / 'summary.md'}, {out / 'cll-histogram.png'}" + (f", {kept}" if kept else "")
          + (f"; AUROC {separation[0]} over {separation[1]}: {separation[2]:.3f}" if separation else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
