"""Final-answer verifier for math responses: did the model state the gold answer?

Used by the reward actor (score = 1.0 or 0.0 against a dataset's gold answer
column) and by the hinted-decoding pipeline. Pure stdlib, so it is cheap to
call in any actor.

Extraction (`extract_final_answer`), in priority order -- a higher rule wins
even if a lower rule's match appears later in the text:

1. ``\\boxed{...}``: the last non-empty one. Nested braces are matched, so
   ``\\boxed{\\frac{3}{4}}`` yields ``\\frac{3}{4}``. An empty box
   (``\\boxed{}``) or one left unclosed by a truncated response carries no
   answer and is skipped, as if it were not there; if no usable box remains we
   go on to rule 2.
2. "The answer is N" / "The final answer is N" / "Answer: N"
   (case-insensitive, the last phrase wins). N runs to the end of its
   sentence, so trailing prose after ". " is dropped, while units text
   ("12 apples") is kept and later ignored by `parse_number`.
3. GSM8K style "#### N", the last one.
4. Otherwise None.

There is deliberately NO fallback to "the last number in the text". A response
that never commits to an answer scores 0: otherwise the reward would pay for
reasoning that merely happens to end on the right number (e.g. a final
"check: 6 * 48 = 288"), and a policy trained on it learns to skip the answer.

Comparison (`answers_match`) is numeric when both sides parse as numbers
(`parse_number`: "3/4" == "0.75" == "\\frac{3}{4}", "1,000" == "1000",
"5.0" == "5", "$18" == "18", "12 apples" == "12"), otherwise a normalised
string comparison.

Percentages: "50%" parses as 50, not 0.5. Datasets state percentage answers as
the number of percent ("What percent ...? 50"), so the sign is treated like a
unit and dropped. A consequence is that "50%" does not match a gold "0.5".

Not numbers (left to the string comparison): mixed numbers ("1 1/2"),
expressions ("2x+3", "\\sqrt{2}"), numbers glued to letters ("5cm", which
cannot be told apart from "2x"), scientific notation.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["extract_final_answer", "parse_number", "answers_match", "math_answer_score"]


# ---------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------

_BOXED = re.compile(r"\\boxed\s*\{")
# Markers after which the answer is stated, up to the end of that line. The
# trailing \s* lets an answer sit on the next line ("Answer:\n42"). `\b` keeps
# "answers:" and "answered" out.
_ANSWER_PHRASE = re.compile(r"\banswer\s*(?:is\b\s*:?|:)\s*", re.IGNORECASE)
_HASHES = re.compile(r"####\s*")
# Where the stated answer ends: a period that is not a decimal point, a
# semicolon, or a comma followed by a word ("5, since ..."). A comma followed
# by a digit is kept so "1,234" and "(1, 2)" survive.
_ANSWER_END = re.compile(r"\.(?=\s|$)|;|,\s*(?=[^\W\d_])")


def _read_braced(text: str, open_index: int) -> tuple[str, int] | None:
    """Content of the brace group opening at `open_index`, and the index after it.

    Backslash-escaped braces (``\\{``) are literal and do not count. Returns None
    when the group is never closed (a truncated response).
    """
    depth = 0
    i = open_index
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : i], i + 1
        i += 1
    return None


def _clean_candidate(candidate: str) -> str:
    # Markdown bold ("**Answer:** 42") and a sentence-final period are
    # presentation, not part of the answer.
    candidate = candidate.strip().strip("*").strip()
    return candidate.rstrip(".").strip()


def _last_boxed(text: str) -> str | None:
    answer = None
    for match in _BOXED.finditer(text):
        group = _read_braced(text, match.end() - 1)
        if group is not None and group[0].strip():
            answer = group[0].strip()
    return answer


def _last_after(marker: re.Pattern[str], text: str) -> str | None:
    """The answer stated after the last `marker` that is followed by one."""
    answer = None
    # Markers are matched on their own, not with the line after them, so that
    # "my first answer is 3, but the final answer is 5" sees both.
    for match in marker.finditer(text):
        line = text[match.end() :].split("\n", 1)[0]
        stated = _clean_candidate(_ANSWER_END.split(line, maxsplit=1)[0])
        if stated:
            answer = stated
    return answer


def extract_final_answer(text: str) -> str | None:
    """The model's final answer, or None if it never states one (see module docstring).

    Rules in priority order: last non-empty ``\\boxed{}``; last "the answer is N" /
    "Answer: N"; last "#### N". No "last number in the text" fallback: an
    unstated answer must score 0.
    """
    answer = _last_boxed(text)
    if answer is None:
        answer = _last_after(_ANSWER_PHRASE, text)
    if answer is None:
        answer = _last_after(_HASHES, text)
    return answer


# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------

# A thousands-separated integer needs groups of exactly three digits, so
# "1,2" and "12,34" are not numbers (the leftover ",2" fails the unit check).
_DECIMAL = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_SIGN = r"[-+]?"
_SLASH_FRACTION = re.compile(rf"({_SIGN})\s*({_DECIMAL})\s*/\s*({_DECIMAL})")
_PLAIN_NUMBER = re.compile(rf"({_SIGN})\s*({_DECIMAL})")
_LATEX_FRACTION = re.compile(rf"({_SIGN})\s*\\[dt]?frac\s*")
_DELIMITERS = (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_TEXT_COMMAND = re.compile(r"\\(?:text|textrm|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_UNIT_WORDS = re.compile(r"[^\W\d_]+(?:[\s'’./-]+[^\W\d_]+)*")


def _strip_delimiters(text: str) -> str:
    """Remove surrounding math delimiters, repeatedly ("$$5$$", "$\\(5\\)$")."""
    text = text.strip()
    stripped = True
    while stripped:
        stripped = False
        for left, right in _DELIMITERS:
            if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
                text = text[len(left) : len(text) - len(right)].strip()
                stripped = True
    return text


def _normalise_numeric_text(text: str) -> str:
    text = text.replace("\u2212", "-")  # unicode minus sign
    text = _strip_delimiters(text)
    text = _TEXT_COMMAND.sub(r" \1", text)
    # LaTeX thousands separators: "1{,}000" and "1\,000" / "1\!000".
    text = text.replace("{,}", ",")
    text = re.sub(r"(?<=\d)\\[,!](?=\d{3})", "", text)
    text = re.sub(r"\\[,;:! ]", " ", text)
    text = text.replace("\\%", "%").replace("\\$", "$")
    text = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "°", text)
    text = text.strip().rstrip(".").strip()
    # A currency sign is not part of the value: "$18", "-$5".
    return re.sub(r"^([-+]?)\s*\$\s*", r"\1", text)


def _is_unit_suffix(rest: str) -> bool:
    """Whether the text after a number is only units: "", " apples", "%", "° F", " km/h".

    Words must be separated from the number by a space or a %/° sign: "2x" is an
    expression, not 2 of unit x. Digits and operators are never units, so
    "2 + 3" and "1 1/2" are not read as 2 or 1.
    """
    stripped = rest.strip()
    if not stripped:
        return True
    if stripped[0] in "%°":
        words = stripped[1:].strip()
    elif rest[0].isspace():
        words = stripped
    else:
        return False
    return not words or _UNIT_WORDS.fullmatch(words) is not None


def _decimal(digits: str) -> Fraction:
    return Fraction(digits.replace(",", ""))


def _signed(sign: str, value: Fraction) -> Fraction:
    return -value if sign == "-" else value


def _latex_fraction_argument(text: str, index: int) -> tuple[Fraction, int] | None:
    """One argument of \\frac: a braced number, or a single digit ("\\frac34")."""
    if index < len(text) and text[index] == "{":
        group = _read_braced(text, index)
        if group is None:
            return None
        value = _parse(group[0], allow_units=False)
        return None if value is None else (value, group[1])
    if index < len(text) and text[index].isdigit():
        return Fraction(int(text[index])), index + 1
    return None


def _leading_latex_fraction(text: str) -> tuple[Fraction, str] | None:
    match = _LATEX_FRACTION.match(text)
    if match is None:
        return None
    numerator = _latex_fraction_argument(text, match.end())
    if numerator is None:
        return None
    denominator = _latex_fraction_argument(text, numerator[1])
    if denominator is None or denominator[0] == 0:
        return None
    return _signed(match.group(1), numerator[0] / denominator[0]), text[denominator[1] :]


def _leading_number(text: str) -> tuple[Fraction, str] | None:
    """The number at the start of `text` and the text after it."""
    latex = _leading_latex_fraction(text)
    if latex is not None:
        return latex
    match = _SLASH_FRACTION.match(text)
    if match is not None:
        sign, numerator, denominator = match.groups()
        if _decimal(denominator) == 0:
            return None
        return _signed(sign, _decimal(numerator) / _decimal(denominator)), text[match.end() :]
    match = _PLAIN_NUMBER.match(text)
    if match is not None:
        return _signed(match.group(1), _decimal(match.group(2))), text[match.end() :]
    return None


def _parse(text: str, allow_units: bool) -> Fraction | None:
    parsed = _leading_number(_normalise_numeric_text(text))
    if parsed is None:
        return None
    value, rest = parsed
    if not rest.strip() or (allow_units and _is_unit_suffix(rest)):
        return value
    return None


def parse_number(text: str) -> Fraction | None:
    """The exact value of a numeric answer, or None if `text` is not a number.

    Accepts integers, signs (also U+2212 minus), decimals (".5", "-2.50"),
    thousands separators ("1,234,567" but not "1,2"), "3/4", ``\\frac{3}{4}``
    (``\\dfrac``, ``\\tfrac``, ``\\frac34``), surrounding ``$...$`` / ``\\(...\\)``,
    a trailing period, a leading currency "$", and trailing units
    ("12 apples", "50%", ``90^\\circ``). Percentages are NOT scaled: "50%" is 50.
    """
    return _parse(text, allow_units=True)


# ---------------------------------------------------------------------------
# Comparison and score
# ---------------------------------------------------------------------------


def _normalise_text(text: str) -> str:
    text = _strip_delimiters(text.strip().rstrip(".")).rstrip(".")
    return " ".join(text.casefold().split())


def answers_match(predicted: str, gold: str) -> bool:
    """Numeric equality when both sides are numbers, else normalised string equality."""
    predicted_value, gold_value = parse_number(predicted), parse_number(gold)
    if predicted_value is not None and gold_value is not None:
        return predicted_value == gold_value
    return _normalise_text(predicted) == _normalise_text(gold)


def math_answer_score(response: str, gold: str) -> float:
    """1.0 if the response's final answer matches `gold`, else 0.0 (also when none is stated)."""
    predicted = extract_final_answer(response)
    if predicted is None:
        return 0.0
    return 1.0 if answers_match(predicted, gold) else 0.0
