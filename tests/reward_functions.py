"""Reward functions the tests hand to `reward.sources[].function`, as users hand theirs."""

import time

from jobs.core.builtin import digit_share

SLOW_SECONDS = 0.02  # x 128 samples (test_worker_faults): seconds of scoring to kill the actor in


def explode(prompt: str, response: str, row: dict) -> float:
    raise ValueError("this reward function always fails")


def slow_digit_share(prompt: str, response: str, row: dict) -> float:
    """The builtin digit share, slowed down so that a test can kill the reward actor while it scores."""
    time.sleep(SLOW_SECONDS)
    return digit_share(prompt, response, row)


SLEEPY_SECONDS = 0.25  # x 16 samples (test_progress_heartbeat): a reward phase of 4 s, 4 heartbeats at 1 s


def sleepy_digit_share(prompt: str, response: str, row: dict) -> float:
    """The builtin digit share, slow enough that the reward phase outlasts several heartbeats."""
    time.sleep(SLEEPY_SECONDS)
    return digit_share(prompt, response, row)
