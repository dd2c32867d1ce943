"""Reward functions the tests hand to `reward.sources[].function`, as users hand theirs."""


def explode(prompt: str, response: str, row: dict) -> float:
    raise ValueError("this reward function always fails")
