"""Tests for the math final-answer verifier (actors/rewards/math_verifier.py)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from actors.rewards.math_verifier import answers_match, extract_final_answer, math_answer_score, parse_number

# (response, gold, expected score). Each row names the rule it pins down.
SCORE_CASES = [
    # --- plain integers, negatives ---
    ("The answer is 288.", "288", 1.0),
    ("The answer is 287.", "288", 0.0),  # wrong answer
    ("So the temperature drops. The answer is -12.", "-12", 1.0),
    ("The answer is 12.", "-12", 0.0),  # sign matters
    ("The answer is \u221212", "-12", 1.0),  # unicode minus
    # --- decimals ---
    ("The answer is 2.50", "2.5", 1.0),
    ("Answer: .5", "0.5", 1.0),
    ("The answer is 5.0", "5", 1.0),
    ("The answer is 5.01", "5", 0.0),
    # --- thousands separators ---
    ("The answer is 1,234,567.", "1234567", 1.0),
    ("#### 1,000", "1000", 1.0),
    ("The answer is 1,2", "12", 0.0),  # not a thousands-separated number
    ("The answer is $1,234.50.", "1234.5", 1.0),  # currency sign, separators, decimal, period
    # --- fractions vs decimals ---
    ("The answer is 3/4", "0.75", 1.0),
    ("The answer is 0.75", "3/4", 1.0),
    ("The answer is -3/4.", "-0.75", 1.0),
    (r"The answer is $\frac{3}{4}$.", "0.75", 1.0),
    (r"The answer is $\dfrac{3}{4}$", "3/4", 1.0),
    (r"The answer is $\tfrac{3}{4}$", "0.74", 0.0),
    # --- \boxed{} ---
    (r"So we get $\boxed{42}$.", "42", 1.0),
    (r"First guess \boxed{41}, corrected: \boxed{42}", "42", 1.0),  # last box wins
    (r"First guess \boxed{42}, corrected: \boxed{41}", "42", 0.0),  # last box wins
    (r"Hence $\boxed{\frac{3}{4}}$", "0.75", 1.0),  # nested braces
    (r"Hence $\boxed{-\dfrac{3}{4}}$", "-3/4", 1.0),
    (r"The answer is 7, so $\boxed{8}$", "8", 1.0),  # boxed outranks the phrase
    (r"The answer is 7, so $\boxed{8}$", "7", 0.0),
    (r"\boxed{12} and then an empty \boxed{}", "12", 1.0),  # empty box is skipped
    (r"Only an empty box \boxed{} but the answer is 12.", "12", 1.0),  # ... falls through to the phrase
    (r"Truncated: \boxed{1", "1", 0.0),  # unclosed box is no answer
    # --- phrases ---
    ("THE FINAL ANSWER IS 288", "288", 1.0),  # case-insensitive
    ("My first answer is 3, but the final answer is 5.", "5", 1.0),  # last phrase wins
    ("My first answer is 3, but the final answer is 5.", "3", 0.0),
    ("**Answer:** 42", "42", 1.0),  # markdown bold
    ("The answer is 42. Check: 6 * 7 = 42, and 41 is wrong.", "42", 1.0),  # prose after the sentence
    # --- GSM8K #### ---
    ("48 + 24 = 72\n#### 72", "72", 1.0),
    ("48 + 24 = 72\n#### 71", "72", 0.0),
    ("The answer is 5\n#### 6", "5", 1.0),  # phrase outranks ####
    # --- units, percentages, currency, trailing period ---
    ("The answer is 12 apples.", "12", 1.0),
    ("The answer is 60 km/h.", "60", 1.0),
    ("The answer is $18.", "18", 1.0),
    ("The answer is 50%.", "50", 1.0),  # percent is not scaled
    ("The answer is 50%.", "0.5", 0.0),
    # --- no explicit answer: no "last number" fallback ---
    ("6 * 48 = 288", "288", 0.0),
    ("I think it is 288.", "288", 0.0),
    ("", "288", 0.0),
    # --- non-numeric answers fall back to string comparison ---
    (r"\boxed{ x + 1 }", "x + 1", 1.0),
    ("The answer is Blue.", "blue", 1.0),
    ("The answer is red.", "blue", 0.0),
]


@pytest.mark.parametrize(("response", "gold", "expected"), SCORE_CASES)
def test_math_answer_score(response, gold, expected):
    assert math_answer_score(response, gold) == expected


def test_score_table_is_large_and_two_sided():
    scores = [expected for _, _, expected in SCORE_CASES]
    assert len(scores) >= 35
    assert 1.0 in scores and 0.0 in scores


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("288", Fraction(288)),
        ("-12", Fraction(-12)),
        ("\u221212", Fraction(-12)),
        ("0.75", Fraction(3, 4)),
        (".5", Fraction(1, 2)),
        ("-2.50", Fraction(-5, 2)),
        ("1,234,567", Fraction(1234567)),
        ("1,234.5", Fraction(2469, 2)),
        ("3/4", Fraction(3, 4)),
        ("-3/4", Fraction(-3, 4)),
        (r"\frac{3}{4}", Fraction(3, 4)),
        (r"-\dfrac{3}{4}", Fraction(-3, 4)),
        (r"\tfrac{-3}{4}", Fraction(-3, 4)),
        (r"\frac34", Fraction(3, 4)),
        (r"\frac{\frac{1}{2}}{3}", Fraction(1, 6)),
        ("$5$", Fraction(5)),
        (r"\(\frac{1}{2}\)", Fraction(1, 2)),
        ("5.", Fraction(5)),
        ("$18", Fraction(18)),
        ("-$5", Fraction(-5)),
        ("12 apples", Fraction(12)),
        (r"5 \text{ cm}", Fraction(5)),
        ("50%", Fraction(50)),
        (r"50\%", Fraction(50)),
        (r"90^\circ", Fraction(90)),
        ("1{,}000", Fraction(1000)),
        (r"1\,000", Fraction(1000)),
    ],
)
def test_parse_number_accepts(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "1,2",  # not a thousands-separated number
        "12,34",
        "1234,567",
        "3/0",
        r"\frac{1}{0}",
        "2x",  # an expression, not 2 of unit x
        "2 + 3",
        "1 1/2",  # mixed numbers are ambiguous
        "12 apples, 3 pears",
        r"\sqrt{2}",
        r"\frac{\sqrt{2}}{2}",
    ],
)
def test_parse_number_rejects(text):
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{1} then \boxed{\frac{3}{4}}", r"\frac{3}{4}"),
        (r"\boxed{ {a}{b} }", "{a}{b}"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the box
        (r"\boxed{5} and \boxed{  }", "5"),
        (r"\boxed{}", None),
        (r"\boxed{}  #### 9", "9"),
        (r"\boxed{7", None),
        ("The answer is: 42", "42"),
        ("Answer:\n\n42", "42"),  # answer on the following line
        ("Final Answer: -3/4.", "-3/4"),
        ("The answer is 3.5.", "3.5"),  # decimal point is not the sentence end
        ("The answer is 1,234, which is large", "1,234"),
        ("The answer is (1, 2).", "(1, 2)"),
        ("The answer is 5; done", "5"),
        ("Their answers: 1 and 2", None),  # "answers" is not the phrase
        ("The answer is\n", None),
        ("#### 72\n#### 73", "73"),
        ("It is 288.", None),  # no last-number fallback
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize(
    ("predicted", "gold", "expected"),
    [
        ("3/4", "0.75", True),
        (r"\frac{3}{4}", "3/4", True),
        ("1,000", "1000", True),
        ("5.0", "5", True),
        ("5", "6", False),
        ("  Hello   World. ", "hello world", True),
        ("$x+1$", "x+1", True),
        ("x+1", "x+2", False),
        ("5", "five", False),  # one side numeric, the other not: string comparison
    ],
)
def test_answers_match(predicted, gold, expected):
    assert answers_match(predicted, gold) is expected
