"""One Ray placement group per job: every actor's resources reserved, on chosen nodes, before any actor starts.

The bundle layout is a pure function of the spec (`layout`). `JobPlacement.create` turns it
into a placement group, failing at once when a bundle is bigger than every node;
`wait_until_placed` waits for the reservation and fails after placement.timeout_seconds, naming the
bundles and the nodes, when the cluster cannot hold it now. Either is a SpecError: one line.

Bundles, in order:

- without `placement.colocate`: one per rollout worker (`rollout.cpus_per_worker`,
  `rollout.gpus_per_worker`), then one per learner rank, then one for the reward actor
  (only with `reward.sources`), then one for the eval actor (only with `eval.every`); no
  rollout bundles when the spec uses no rollout;
- with `placement.colocate`: rollout worker i and learner rank i share bundle i, which holds
  the sum of both requests, so the two always land on the same node; workers or ranks
  beyond the shorter of the two lists get bundles of their own. Each actor still holds its
  own share of the bundle. On CPU the job's phases alternate (generate, then train), so the
  pair time-shares that node's cores. On GPU, sharing one device with each phase getting all
  of it needs the engine to free its memory while the learner trains (vLLM sleep/wake;
  a no-op on CPU): that belongs to the GPU path, not here.

`placement.strategy` maps to Ray's soft strategies: pack -> PACK (as few nodes as
possible), spread -> SPREAD (one bundle on every node first, largest bundles first, then
each further bundle on the node left relatively emptiest). Neither fails for lack of
nodes: on one node both put everything there.

Every actor group asks `options(role, index)` for the scheduling strategy of its actors,
merged into its own `.options(...)`. The driver holds one job's placement at a time (the
`active` one, set by `JobPlacement.create`, cleared by `remove`); groups created without
one (unit tests) schedule as Ray pleases. A replacement actor takes the same bundle as
the one it replaces.

Threads follow from the placement too (`phase_threads`): Ray's CPU counts are what an actor
reserves for its whole life, but a synchronous job's phases take turns, so the engines
generating and the ranks training may each use every core of their node.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from jobs.core.errors import SpecError
from jobs.core.spec import JobSpec

# A free cluster places a group in well under a second; longer means the resources are
# held by someone else (or the bundles cannot be packed onto the nodes), and the job fails
# with the numbers instead of waiting for ever.
READY_TIMEOUT_S = 30.0

ROLLOUT, LEARNER, REWARD, EVAL = "rollout worker", "learner rank", "reward actor", "eval actor"
STRATEGIES = {"pack": "PACK", "spread": "SPREAD"}


def label(role: str, index: int | None = None) -> str:
    """The actor's name in progress lines and placement.json: "rollout worker 0", "reward actor"."""
    return role if index is None else f"{role} {index}"


def role_of(name: str) -> str:
    """The role of an actor label: "rollout worker 1" -> "rollout worker"."""
    return next(r for r in (ROLLOUT, LEARNER, REWARD, EVAL) if name.startswith(r))


def resources(cpus: float, gpus: float) -> dict[str, float]:
    """A bundle's resources, zero entries left out (Ray wants none of them)."""
    return {name: float(amount) for name, amount in (("CPU", cpus), ("GPU", gpus)) if amount > 0}


@dataclass
class Layout:
    strategy: str  # as the spec says: pack or spread
    colocate: bool
    bundles: list[dict[str, float]] = field(default_factory=list)
    # Actor label -> its bundle index; None for an actor that asks for no resources at all.
    slots: dict[str, int | None] = field(default_factory=dict)
    # Actor label -> what it asks for itself (its share of its bundle).
    requests: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ray_strategy(self) -> str:
        return STRATEGIES[self.strategy]

    def members(self, bundle: int | None) -> list[str]:
        return [name for name, slot in self.slots.items() if slot == bundle]

    def add(self, requests: dict[str, dict[str, float]]) -> None:
        """One bundle shared by the actors in `requests` (label -> resources), summed.

        Ray rejects a bundle whose resources are all zero ("Bundles cannot be an empty
        dictionary or resources with only 0 values"), and an actor that asks for nothing
        reserves nothing, so there is nothing to place: such actors get no bundle and Ray
        schedules them as it would without a placement group (slot None). A zero-CPU actor
        that shares a bundle with one that asks for something still lands in that bundle,
        on its partner's node.
        """
        total: dict[str, float] = {}
        for request in requests.values():
            for name, amount in request.items():
                total[name] = total.get(name, 0.0) + amount
        slot = len(self.bundles) if total else None
        if total:
            self.bundles.append(total)
        for name, request in requests.items():
            self.slots[name] = slot
            self.requests[name] = request

    def total(self, resource: str) -> float:
        return sum(bundle.get(resource, 0.0) for bundle in self.bundles)

    def lines(self) -> list[str]:
        """One line per bundle, its actors and their shares; then the actors placed outside the group."""
        lines = [
            f"bundle {i} ({describe(bundle)}): "
            + " + ".join(f"{name} ({describe(self.requests[name])})" for name in self.members(i))
            for i, bundle in enumerate(self.bundles)
        ]
        unplaced = self.members(None)
        if unplaced:
            lines.append(f"no bundle (asks for nothing; Ray places it): {', '.join(unplaced)}")
        return lines


def layout(spec: JobSpec) -> Layout:
    """The job's bundles and which actor goes into which; no Ray calls."""
    plan = Layout(spec.placement.strategy, spec.placement.colocate)
    worker = resources(spec.rollout.cpus_per_worker, spec.rollout.gpus_per_worker)
    rank = resources(spec.learner.cpus_per_rank, spec.learner.gpus_per_rank)
    workers = spec.rollout.workers if spec.uses_rollout else 0
    ranks = spec.learner.ranks
    shared = min(workers, ranks) if spec.placement.colocate else 0
    for i in range(shared):
        plan.add({label(ROLLOUT, i): worker, label(LEARNER, i): rank})
    for i in range(shared, workers):
        plan.add({label(ROLLOUT, i): worker})
    for i in range(shared, ranks):
        plan.add({label(LEARNER, i): rank})
    if spec.reward.sources:
        plan.add({label(REWARD): resources(spec.reward.cpus, spec.reward.gpus)})
    if spec.eval.every:
        plan.add({label(EVAL): resources(spec.eval.cpus, spec.eval.gpus)})
    return plan


def phase_threads(spec: JobSpec, plan: Layout, bundle_nodes: dict[int, str], node_cpus: dict[str, float]) -> dict[str, int]:
    """CPU threads of every actor in `plan`, by label.

    In a synchronous job the rollout workers generate while the learner ranks wait, and then
    the other way round, so the actors of one phase share their node's cores between them.
    With rollout.max_policy_lag > 0 both phases run at once and share the cores together.
    The reward and eval actors run beside the phases and keep their own CPU share (at least 1).
    An actor without a bundle (it reserves nothing) or a spec that names a count overrides this.
    """
    phase_of = {ROLLOUT: ROLLOUT, LEARNER: LEARNER}
    if spec.rollout.max_policy_lag > 0:
        phase_of[ROLLOUT] = LEARNER
    fixed = {ROLLOUT: spec.rollout.threads_per_worker, LEARNER: spec.learner.threads_per_rank, EVAL: spec.eval.threads}
    share = {ROLLOUT: spec.rollout.cpus_per_worker, LEARNER: spec.learner.cpus_per_rank,
             REWARD: spec.reward.cpus, EVAL: spec.eval.cpus}

    sharing: dict[tuple[str, str], int] = {}  # (node, phase) -> actors of that phase on that node
    for name, slot in plan.slots.items():
        if role_of(name) in phase_of and slot is not None and slot in bundle_nodes:
            key = (bundle_nodes[slot], phase_of[role_of(name)])
            sharing[key] = sharing.get(key, 0) + 1
    threads = {}
    for name, slot in plan.slots.items():
        kind = role_of(name)
        node = bundle_nodes.get(slot) if slot is not None else None
        if fixed.get(kind):
            threads[name] = fixed[kind]
        elif kind in phase_of and node is not None and node_cpus.get(node):
            threads[name] = max(1, int(node_cpus[node] // sharing[(node, phase_of[kind])]))
        else:
            threads[name] = max(1, round(share[kind]))
    return threads


def describe(amounts: dict[str, float]) -> str:
    return ", ".join(f"{name} {amount:g}" for name, amount in amounts.items()) or "nothing"


class JobPlacement:
    """The job's placement group on a running Ray cluster."""

    active: "JobPlacement | None" = None

    def __init__(self, spec: JobSpec, plan: Layout, group, bundle_nodes: dict[int, str]):
        self.spec = spec
        self.plan = plan
        self.group = group  # None when no actor asks for any resource
        self.bundle_nodes = bundle_nodes  # bundle index -> node id, once placed
        self.node_addresses: dict[str, str] = {}
        self.threads = phase_threads(spec, plan, {}, {})  # label -> CPU threads; final once placed

    @classmethod
    def create(cls, spec: JobSpec) -> "JobPlacement":
        """Ask Ray for every bundle and make this the active placement; `wait_until_placed` waits for them.

        A bundle that no node could hold even when idle fails here, at once (SpecError).
        """
        import ray
        from ray.util import placement_group

        plan = layout(spec)
        group = None
        if plan.bundles:
            nodes = [node for node in ray.nodes() if node.get("Alive")]
            for index, bundle in enumerate(plan.bundles):
                if not any(all(node["Resources"].get(k, 0) >= v for k, v in bundle.items()) for node in nodes):
                    raise SpecError(
                        f"no Ray node can hold bundle {index} ({' + '.join(plan.members(index))}: {describe(bundle)}); "
                        f"{cls._nodes_text(nodes)}; {cls._bundles_text(plan)}"
                    )
            group = placement_group(plan.bundles, strategy=plan.ray_strategy, name=f"hintflow-{spec.name}")
        placement = cls(spec, plan, group, {})
        JobPlacement.active = placement
        return placement

    def wait_until_placed(self, timeout_s: float = READY_TIMEOUT_S, stopping: Callable[[], bool] = lambda: False) -> bool:
        """True once every bundle is reserved, False if `stopping()` turned true first.

        Not placed within `timeout_s`: the group is removed and SpecError names the bundles and the nodes.
        """
        import ray

        if self.group is None:
            return True
        from ray.util import placement_group_table

        started = time.monotonic()
        while not self.group.wait(timeout_seconds=min(1.0, timeout_s)):
            if stopping():
                self.remove()
                return False
            if time.monotonic() - started >= timeout_s:
                self.remove()
                free = {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
                raise SpecError(
                    f"the job's placement group ({self.plan.ray_strategy}) was not placed within "
                    f"{time.monotonic() - started:.0f}s: {self._bundles_text(self.plan)}; "
                    f"{self._nodes_text(ray.nodes())}; free in the cluster now: {describe(free)} "
                    f"(other jobs hold the rest, or the bundles do not pack onto the nodes)"
                )
        table = placement_group_table(self.group)["bundles_to_node_id"]
        self.bundle_nodes = {int(index): node for index, node in table.items()}
        nodes = ray.nodes()
        self.node_addresses = {node["NodeID"]: node.get("NodeManagerAddress") for node in nodes}
        node_cpus = {node["NodeID"]: node["Resources"].get("CPU", 0.0) for node in nodes}
        self.threads = phase_threads(self.spec, self.plan, self.bundle_nodes, node_cpus)
        return True

    @staticmethod
    def _bundles_text(plan: Layout) -> str:
        return "bundles: " + "; ".join(
            f"{i} ({' + '.join(plan.members(i))}) {describe(bundle)}" for i, bundle in enumerate(plan.bundles)
        )

    @staticmethod
    def _nodes_text(nodes: list[dict]) -> str:
        alive = [node for node in nodes if node.get("Alive")]
        return "nodes: " + "; ".join(
            f"{node['NodeID'][:8]} at {node.get('NodeManagerAddress', '?')} has "
            f"{describe({k: v for k, v in node['Resources'].items() if k in ('CPU', 'GPU')})}"
            for node in alive
        )

    def options(self, role: str, index: int | None = None) -> dict:
        """Extra `.options(...)` for this actor: its bundle, or nothing for an actor outside the group."""
        slot = self.plan.slots.get(label(role, index))
        if slot is None:
            return {}
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=slot)}

    def record(self) -> dict:
        """What placement.json holds: where every actor landed (node_id None: no bundle, Ray chose)."""
        return {
            "strategy": self.plan.strategy,
            "colocate": self.plan.colocate,
            "bundles": self.plan.bundles,
            "nodes": {node: self.node_addresses.get(node) for node in sorted(set(self.bundle_nodes.values()))},
            "actors": {
                name: {"bundle": slot, "node_id": None if slot is None else self.bundle_nodes.get(slot),
                       "threads": self.threads[name]}
                for name, slot in self.plan.slots.items()
            },
        }

    def write(self, path: Path) -> None:
        from jobs.core.atomic_files import write_atomically

        write_atomically(Path(path), json.dumps(self.record(), indent=2) + "\n")

    def remove(self) -> None:
        """Give the reservation back (it would otherwise last as long as the driver's Ray session)."""
        if JobPlacement.active is self:
            JobPlacement.active = None
        import ray

        if self.group is not None and ray.is_initialized():
            from ray.util import remove_placement_group

            group, self.group = self.group, None
            remove_placement_group(group)


def options(role: str, index: int | None = None) -> dict:
    """Scheduling options for this actor under the active job placement; {} when there is none."""
    placement = JobPlacement.active
    return placement.options(role, index) if placement else {}


def thread_env(spec: JobSpec, role: str, index: int | None = None) -> dict[str, str]:
    """The environment that sets this actor's CPU threads (torch and vLLM's CPU backend read it at start)."""
    placement = JobPlacement.active
    threads = placement.threads if placement else phase_threads(spec, layout(spec), {}, {})
    return {"OMP_NUM_THREADS": str(threads[label(role, index)])}
