"""Job runs that more than one test module checks, beside conftest.py's `onpolicy_run` and `hinted_run`.

A module that uses one of these names this file in `pytest_plugins` (and does not import it).
pytest then registers the fixtures once, for the whole session, so each job runs once however many
modules ask for it; importing a fixture into two modules instead would run it once per module.
"""

from __future__ import annotations

import pytest

from tests.job_process import run_job


@pytest.fixture(scope="session")
def dpo_run(tmp_path_factory):
    """configs/dpo.yaml as shipped (online DPO, 8 iterations): test_preference_jobs.py and test_compare.py."""
    return run_job(tmp_path_factory, "dpo", "configs/dpo.yaml")
