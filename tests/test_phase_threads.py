"""Thread counts follow the placement: a phase gets its node's cores, shared by the actors running in it."""

from actors.placement import layout, phase_threads
from jobs.core.spec import JobSpec


def spec(**overrides) -> JobSpec:
    fields = {"name": "t", "model": {"path": "builtin:tiny-llama"}, "data": {"path": "builtin:arithmetic"},
              "rollout": {"workers": 2}, "learner": {"ranks": 2},
              "reward": {"sources": [{"kind": "math_answer"}], "cpus": 0.1}}
    for path, value in overrides.items():
        section, key = path.split(".")
        fields.setdefault(section, {})[key] = value
    return JobSpec.model_validate(fields)


def threads_on(job: JobSpec, nodes_of_bundles: list[str], cpus: dict[str, float]) -> dict[str, int]:
    plan = layout(job)
    return phase_threads(job, plan, dict(enumerate(nodes_of_bundles)), cpus)


def test_synchronous_phases_each_share_the_whole_node():
    # bundles: rollout 0, rollout 1, rank 0, rank 1, reward
    threads = threads_on(spec(), ["a"] * 5, {"a": 8.0})
    assert threads == {"rollout worker 0": 4, "rollout worker 1": 4, "learner rank 0": 4, "learner rank 1": 4,
                       "reward actor": 1}


def test_async_phases_share_the_node_together():
    threads = threads_on(spec(**{"rollout.max_policy_lag": 1}), ["a"] * 5, {"a": 8.0})
    assert [threads[f"rollout worker {i}"] for i in (0, 1)] == [2, 2]
    assert [threads[f"learner rank {i}"] for i in (0, 1)] == [2, 2]


def test_each_node_counts_only_its_own_actors():
    # worker 0 alone on node a; worker 1 and both ranks on node b
    threads = threads_on(spec(), ["a", "b", "b", "b", "b"], {"a": 6.0, "b": 4.0})
    assert threads["rollout worker 0"] == 6 and threads["rollout worker 1"] == 4
    assert threads["learner rank 0"] == 2 and threads["learner rank 1"] == 2


def test_never_below_one_and_the_spec_overrides():
    threads = threads_on(spec(**{"rollout.workers": 4}), ["a"] * 7, {"a": 2.0})
    assert all(threads[f"rollout worker {i}"] == 1 for i in range(4))
    threads = threads_on(spec(**{"rollout.threads_per_worker": 3, "learner.threads_per_rank": 5}), ["a"] * 5, {"a": 8.0})
    assert threads["rollout worker 1"] == 3 and threads["learner rank 0"] == 5


def test_the_eval_actor_keeps_its_share_unless_the_spec_names_its_threads():
    on = {"eval.every": 1, "eval.cpus": 0.25}
    assert threads_on(spec(**on), ["a"] * 6, {"a": 8.0})["eval actor"] == 1
    assert threads_on(spec(**on, **{"eval.threads": 2}), ["a"] * 6, {"a": 8.0})["eval actor"] == 2


def test_without_a_placement_the_cpu_share_decides():
    job = spec(**{"learner.cpus_per_rank": 2.0})
    threads = phase_threads(job, layout(job), {}, {})
    assert threads["rollout worker 0"] == 1 and threads["learner rank 1"] == 2
