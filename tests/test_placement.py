"""The job's placement group: bundle layout (pure), and the real thing on a one-node Ray.

The multi-node checks (spread over two raylets, a bundle that fits no node failing the CLI
with one line) are in tests/test_ray_job_submit.py, which starts a two-node cluster.
"""

from __future__ import annotations

import json
import time

import pytest

from actors import placement
from actors.placement import JobPlacement, layout
from jobs.core.errors import SpecError
from jobs.core.spec import load_spec, validate_spec

ONPOLICY = "configs/onpolicy_idft.yaml"


def onpolicy(*overrides: str):
    from tests.conftest import REPO

    return load_spec(REPO / ONPOLICY, list(overrides))


def test_pack_gives_every_actor_its_own_bundle_in_order():
    plan = layout(onpolicy())
    assert (plan.strategy, plan.ray_strategy, plan.colocate) == ("pack", "PACK", False)
    assert plan.bundles == [{"CPU": 0.25}] * 4 + [{"CPU": 0.1}]
    assert plan.slots == {"rollout worker 0": 0, "rollout worker 1": 1, "learner rank 0": 2, "learner rank 1": 3,
                          "reward actor": 4}


def test_spread_changes_only_the_strategy():
    pack, spread = layout(onpolicy()), layout(onpolicy("placement.strategy=spread"))
    assert spread.ray_strategy == "SPREAD"
    assert (spread.bundles, spread.slots) == (pack.bundles, pack.slots)


def test_colocate_puts_worker_i_and_rank_i_in_bundle_i_with_summed_resources():
    plan = layout(onpolicy("placement.colocate=true", "rollout.gpus_per_worker=0.5", "learner.gpus_per_rank=0.5"))
    assert plan.bundles == [{"CPU": 0.5, "GPU": 1.0}, {"CPU": 0.5, "GPU": 1.0}, {"CPU": 0.1}]
    assert plan.slots == {"rollout worker 0": 0, "learner rank 0": 0, "rollout worker 1": 1, "learner rank 1": 1,
                          "reward actor": 2}
    assert plan.members(0) == ["rollout worker 0", "learner rank 0"]


@pytest.mark.parametrize("workers, ranks", [(3, 2), (1, 2)])
def test_colocate_with_unequal_counts_gives_the_rest_their_own_bundles(workers, ranks):
    spec = validate_spec({"placement": {"colocate": True}, "rollout": {"workers": workers, "cpus_per_worker": 0.5},
                          "learner": {"ranks": ranks, "cpus_per_rank": 0.25}})
    plan = layout(spec)
    shared = min(workers, ranks)
    assert plan.bundles[:shared] == [{"CPU": 0.75}] * shared
    rest = [{"CPU": 0.5}] * (workers - shared) + [{"CPU": 0.25}] * (ranks - shared)
    assert plan.bundles[shared:] == rest
    for i in range(shared):
        assert plan.slots[f"rollout worker {i}"] == plan.slots[f"learner rank {i}"] == i
    assert sorted(slot for slot in plan.slots.values()) == sorted([*range(shared), *range(len(plan.bundles))])


def test_no_reward_sources_no_reward_bundle():
    plan = layout(validate_spec({"rollout": {"workers": 2}, "learner": {"ranks": 2}}))
    assert "reward actor" not in plan.slots and len(plan.bundles) == 4


def test_offline_preference_training_has_no_rollout_bundles():
    spec = validate_spec({"algorithm": "dpo", "preference": {"source": "dataset"}, "learner": {"ranks": 2},
                          "placement": {"colocate": True}})
    assert not spec.uses_rollout
    plan = layout(spec)
    assert plan.slots == {"learner rank 0": 0, "learner rank 1": 1} and plan.bundles == [{"CPU": 0.25}] * 2


def test_an_actor_that_asks_for_nothing_gets_no_bundle():
    spec = validate_spec({"rollout": {"workers": 2, "cpus_per_worker": 0}, "learner": {"ranks": 1, "gpus_per_rank": 1},
                          "reward": {"cpus": 0, "sources": [{"kind": "length_penalty"}]}})
    plan = layout(spec)
    assert plan.bundles == [{"CPU": 0.25, "GPU": 1.0}]  # zero entries are left out, never sent to Ray
    assert plan.slots == {"rollout worker 0": None, "rollout worker 1": None, "learner rank 0": 0, "reward actor": None}


def test_a_zero_cpu_worker_colocated_with_a_rank_rides_in_its_bundle():
    spec = validate_spec({"placement": {"colocate": True}, "rollout": {"workers": 1, "cpus_per_worker": 0},
                          "learner": {"ranks": 1, "cpus_per_rank": 0.5}})
    assert layout(spec).slots == {"rollout worker 0": 0, "learner rank 0": 0}
    assert layout(spec).bundles == [{"CPU": 0.5}]


def test_nothing_asked_for_means_no_placement_group():
    spec = validate_spec({"rollout": {"cpus_per_worker": 0}, "learner": {"cpus_per_rank": 0}})
    assert layout(spec).bundles == []


def test_no_active_placement_means_no_extra_options():
    assert JobPlacement.active is None
    assert placement.options(placement.ROLLOUT, 0) == {} and placement.options(placement.REWARD) == {}


# --- on a real one-node Ray --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_cpu_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.integration
def test_the_group_is_placed_and_actors_land_in_their_bundles(two_cpu_ray, tmp_path):
    ray = two_cpu_ray
    from ray.util import placement_group_table
    from ray.util.placement_group import PlacementGroup

    spec = onpolicy("placement.colocate=true")
    job = JobPlacement.create(spec)
    try:
        assert JobPlacement.active is job
        assert job.wait_until_placed(timeout_s=30)
        node = ray.get_runtime_context().get_node_id()
        assert job.bundle_nodes == {0: node, 1: node, 2: node}

        @ray.remote(num_cpus=0.25)
        def where() -> tuple[str, str | None]:
            group = ray.util.get_current_placement_group()
            return ray.get_runtime_context().get_node_id(), group.id.hex() if group else None

        landed = ray.get(where.options(**placement.options(placement.LEARNER, 1)).remote(), timeout=60)
        assert landed == (node, job.group.id.hex())

        job.write(tmp_path / "placement.json")
        record = json.loads((tmp_path / "placement.json").read_text())
        assert (record["strategy"], record["colocate"]) == ("pack", True)
        # 2 cores on the node, 2 workers generating at once: one thread each (tests/test_phase_threads.py)
        assert record["actors"]["rollout worker 1"] == {"bundle": 1, "node_id": node, "threads": 1}
        assert record["actors"]["reward actor"] == {"bundle": 2, "node_id": node, "threads": 1}
        assert list(record["nodes"]) == [node]
        group_id = job.group.id
    finally:
        job.remove()
    assert JobPlacement.active is None and placement.options(placement.LEARNER, 1) == {}
    assert placement_group_table(PlacementGroup(group_id))["state"] == "REMOVED"


@pytest.mark.integration
def test_a_bundle_no_node_can_hold_fails_at_once_with_the_numbers(two_cpu_ray):
    from ray.util import placement_group_table

    # placement.timeout_seconds is how long a bundle that could fit would be waited for; this one never
    # could, so it is refused before any placement group is asked for (none is created).
    spec = onpolicy("rollout.workers=1", "rollout.cpus_per_worker=3", "placement.timeout_seconds=600")
    groups_before = set(placement_group_table())
    with pytest.raises(SpecError) as failure:
        JobPlacement.create(spec)
    assert set(placement_group_table()) == groups_before
    line = failure.value.one_line()
    assert "no Ray node can hold bundle 0 (rollout worker 0: CPU 3)" in line, line
    assert "has CPU 2" in line and "2 (learner rank 1) CPU 0.25" in line, line
    assert JobPlacement.active is None


@pytest.mark.integration
def test_a_group_that_cannot_be_placed_now_fails_after_the_timeout_and_is_removed(two_cpu_ray):
    ray = two_cpu_ray
    from ray.util import placement_group, remove_placement_group

    held = placement_group([{"CPU": 1.9}])  # another job holding most of the node
    assert held.wait(timeout_seconds=30)
    try:
        job = JobPlacement.create(onpolicy())
        with pytest.raises(SpecError) as failure:
            job.wait_until_placed(timeout_s=2)
        line = failure.value.one_line()
        assert "was not placed within 2s" in line and "free in the cluster now: CPU 0.1" in line, line
        assert "0 (rollout worker 0) CPU 0.25" in line and "4 (reward actor) CPU 0.1" in line, line
        assert JobPlacement.active is None and job.group is None
        assert ray.available_resources().get("CPU", 0) == pytest.approx(0.1)
    finally:
        remove_placement_group(held)


@pytest.mark.integration
def test_a_stop_while_waiting_gives_the_group_back(two_cpu_ray):
    from ray.util import placement_group, remove_placement_group

    held = placement_group([{"CPU": 2}])
    assert held.wait(timeout_seconds=30)
    try:
        job = JobPlacement.create(onpolicy())
        assert job.wait_until_placed(timeout_s=30, stopping=lambda: True) is False
        assert JobPlacement.active is None and job.group is None
    finally:
        remove_placement_group(held)
