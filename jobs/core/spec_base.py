"""The base of every spec section (jobs/core/spec.py, jobs/core/reward_spec.py)."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # Unknown keys are almost always typos of a real key; silently ignoring
    # them would run a different job from the one the user wrote.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
