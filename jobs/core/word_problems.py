"""`builtin:word-problems`: short arithmetic word problems with worked solutions, generated here.

The evidence study (bench/seed_study.py) needs a task that SmolLM2-135M-Instruct partly
solves before any training, and whose reference solutions were written by something other
than the model: SFT trains on that external text, and CLL measures how far it sits from the
model. Each problem is one of a few templates (one to three steps, small numbers); its
`solution` is a worked solution written by this generator, one computation per line, ending
"The answer is N." -- a style of its own, not the model's.

Rows: `prompt`, `answer` (an integer, as text), `solution`, `template`. Problems are a pure
function of (seed, position). Small numbers make the same question likely to come up under two
seeds, so each question belongs to one seed class by a hash of its text (seed mod
SEED_CLASSES): the problems of two seeds in different classes never overlap, which keeps the
held-out set (data.seed + 1) apart from training. Within a seed no question repeats.
"""

from __future__ import annotations

import hashlib
import random

WORD_PROBLEMS = "builtin:word-problems"
DEFAULT_COUNT = 1000
SEED_CLASSES = 16

_NAMES = ["Tom", "Mia", "Sam", "Ana", "Leo", "Zoe", "Ben", "Ivy", "Max", "Eva", "Noah", "Lily", "Omar", "Ruth"]
_ITEMS = ["apples", "marbles", "stickers", "pencils", "cards", "books", "coins", "shells", "cookies", "stamps"]


def _buy_then_give(rng: random.Random, name: str, item: str) -> tuple[str, int, list[str]]:
    a, b = rng.randint(2, 9), rng.randint(1, 9)
    c = rng.randint(1, a + b - 1)
    question = (f"{name} has {a} {item}. {name} buys {b} more and then gives {c} to a friend. "
                f"How many {item} does {name} have now?")
    return question, a + b - c, [f"{name} starts with {a} {item}.", f"After buying {b} more: {a} + {b} = {a + b}.",
                                 f"After giving away {c}: {a + b} - {c} = {a + b - c}."]


def _groups(rng: random.Random, name: str, item: str) -> tuple[str, int, list[str]]:
    a, b = rng.randint(2, 5), rng.randint(2, 5)
    question = f"{name} has {a} boxes with {b} {item} in each box. How many {item} does {name} have in all?"
    return question, a * b, [f"There are {a} boxes of {b} {item}.", f"{a} x {b} = {a * b}."]


def _share(rng: random.Random, name: str, item: str) -> tuple[str, int, list[str]]:
    each, friends = rng.randint(2, 5), rng.randint(2, 4)
    total = each * friends
    question = f"{name} shares {total} {item} equally among {friends} friends. How many {item} does each friend get?"
    return question, each, [f"{total} {item} shared by {friends} friends.", f"{total} / {friends} = {each}."]


def _two_purchases(rng: random.Random, name: str, item: str) -> tuple[str, int, list[str]]:
    a, b = rng.randint(1, 12), rng.randint(1, 9)
    question = f"{name} had {a} {item} and found {b} more. How many {item} does {name} have now?"
    return question, a + b, [f"{a} + {b} = {a + b}."]


def _lose(rng: random.Random, name: str, item: str) -> tuple[str, int, list[str]]:
    a = rng.randint(5, 15)
    b = rng.randint(1, a - 1)
    question = f"{name} had {a} {item} and lost {b} of them. How many {item} are left?"
    return question, a - b, [f"{a} - {b} = {a - b}."]


def _packs_after_eating(rng: random.Random, name: str, item: str) -> tuple[str, int, list[str]]:
    a = rng.randint(3, 9)
    b = rng.randint(1, a - 1)
    c, d = rng.randint(2, 3), rng.randint(2, 4)
    question = (f"{name} had {a} {item} and gave away {b}. Then {name} got {c} packs with {d} {item} in each pack. "
                f"How many {item} does {name} have now?")
    return question, a - b + c * d, [f"After giving away {b}: {a} - {b} = {a - b}.",
                                     f"The packs hold {c} x {d} = {c * d}.",
                                     f"In total: {a - b} + {c * d} = {a - b + c * d}."]


TEMPLATES = {
    "buy_then_give": _buy_then_give,
    "groups": _groups,
    "share": _share,
    "two_purchases": _two_purchases,
    "lose": _lose,
    "packs_after_eating": _packs_after_eating,
}


def seed_class(question: str) -> int:
    return int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") % SEED_CLASSES


def word_problem_rows(count: int = DEFAULT_COUNT, seed: int = 0) -> list[dict]:
    """`count` distinct problems of `seed`'s class; each row: prompt, answer, solution, template."""
    rng = random.Random(f"word-problems:{seed}")
    names = sorted(TEMPLATES)
    rows, seen = [], set()
    for _ in range(200 * SEED_CLASSES * count):
        if len(rows) == count:
            return rows
        template = rng.choice(names)
        question, answer, steps = TEMPLATES[template](rng, rng.choice(_NAMES), rng.choice(_ITEMS))
        if question in seen or seed_class(question) != seed % SEED_CLASSES:
            continue
        seen.add(question)
        rows.append({"prompt": question, "answer": str(answer), "template": template,
                     "solution": "\n".join(steps + [f"The answer is {answer}."])})
    raise ValueError(f"builtin:word-problems has fewer than {count} distinct problems for seed {seed}")
