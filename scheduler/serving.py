"""Serve jobs: a workload's replicas behind an HTTP endpoint (Ray Serve), with a health check.

One Serve application per workload (``gpu-supply-<name>``), at the job's route (default
``/<name>``):

- one deployment per placement, ``num_replicas`` = its replicas. Each replica is an actor with
  the placement's ``label_selector`` and ``num_gpus`` = its tensor-parallel degree, so it lands
  only on matching nodes; Serve's controller replaces a replica whose node dies on another
  matching node. Its ``check_health`` runs a one-token generation, so a replica whose model no
  longer answers fails the check and is replaced. Concurrent requests are batched per replica
  (``serve.batch``, up to the job's ``batch_size``).
- an ingress router: ``POST <route>/generate`` with ``{"prompt": ...}`` or ``{"prompts": [...]}``
  (and optional ``max_new_tokens``) goes to the placements in proportion to their replicas;
  ``GET <route>/health`` answers 200 while every placement has a running replica, else 503.

``ServeJob`` is the driver's side: it deploys, keeps the ``job_replica`` rows in step with the
replicas Serve runs (a replica gone with its node is recorded ``preempted`` on spot, ``failed``
otherwise, and its replacement as the next attempt), re-plans placements that no live node can
take any more, and stops the application.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable

from gpu_supply.errors import UserError
from scheduler.cluster import cluster_nodes, placement_selector, unsatisfiable
from scheduler.replica import InferenceRunner, ReplicaSpec
from scheduler.state import FINAL, JobStore, ReplicaPlace, State

HEALTH_CHECK_PERIOD_S = 5.0
HEALTH_CHECK_TIMEOUT_S = 60.0
# How long a batch waits for more concurrent requests before it runs.
BATCH_WAIT_S = 0.005
# How often the driver brings the replica rows up to date while it serves.
WATCH_PERIOD_S = 1.0
REGISTRY_NAMESPACE = "gpu-supply"
# Ray Serve's replica actors are named SERVE_REPLICA::<app>#<deployment>#<id> in its namespace.
SERVE_NAMESPACE, SERVE_REPLICA_PREFIX = "serve", "SERVE_REPLICA::"


def app_name(workload: Any) -> str:
    return f"gpu-supply-{workload.name}"


def route_of(workload: Any) -> str:
    return workload.job.route or f"/{workload.name}"


def deployment_name(placement: Any) -> str:
    text = f"{placement.provider}-{placement.region}-{placement.instance_type}-{placement.pricing}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def registry_name(workload: Any) -> str:
    return f"{app_name(workload)}-replicas"


def _registry(workload: Any) -> Any:
    """The application's replica registry: each replica reports its node here once its model is
    loaded (Ray's state API would need the dashboard, which a cluster may not run). It lives on the
    driver's node, never on a GPU node whose loss or preemption it must outlive."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    class ReplicaRegistry:
        def __init__(self) -> None:
            self.nodes: dict[str, str] = {}

        def report(self, replica: str, node: str) -> None:
            self.nodes[replica] = node

        def replicas(self) -> dict[str, str]:
            return dict(self.nodes)

    return ReplicaRegistry.options(name=registry_name(workload), namespace=REGISTRY_NAMESPACE, lifetime="detached",
                                   get_if_exists=True, scheduling_strategy=NodeAffinitySchedulingStrategy(
                                       ray.get_runtime_context().get_node_id(), soft=False)).remote()


def _placement_fields(placement: Any) -> dict[str, str]:
    return {"provider": placement.provider, "region": placement.region, "offer": placement.instance_type,
            "market": placement.pricing}


def _application(workload: Any, spec: ReplicaSpec, placements: list[Any]) -> Any:
    """The Serve application: a deployment per placement behind the router."""
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    @serve.deployment(health_check_period_s=HEALTH_CHECK_PERIOD_S, health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S)
    class PlacementReplica:
        """A replica of one placement: the model on a node with the placement's labels."""

        def __init__(self, spec: ReplicaSpec, placement: dict[str, str], registry: str, gpus: int) -> None:
            self.runner = InferenceRunner(spec, gpus=gpus)
            self.lock = threading.Lock()  # the decoder runs one batch at a time
            node = ray.get_runtime_context().get_node_id()
            self.where = {**placement, "node": node}
            self.generate.set_max_batch_size(spec.max_batch)
            replica = serve.get_replica_context().replica_id.to_full_id_str()  # also its actor's name
            ray.get(ray.get_actor(registry, namespace=REGISTRY_NAMESPACE).report.remote(replica, node))

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=BATCH_WAIT_S)
        async def generate(self, requests: list[tuple[str, int]]) -> list[dict[str, Any]]:
            return await asyncio.get_running_loop().run_in_executor(None, self._answer, requests)

        def _answer(self, requests: list[tuple[str, int]]) -> list[dict[str, Any]]:
            answers: list[dict[str, Any]] = [{} for _ in requests]
            by_length: dict[int, list[int]] = {}
            for index, (_, max_new_tokens) in enumerate(requests):
                by_length.setdefault(max_new_tokens, []).append(index)
            with self.lock:
                for max_new_tokens, indices in by_length.items():
                    results = self.runner.generate([(str(i), requests[i][0]) for i in indices], max_new_tokens)
                    for index, result in zip(indices, results, strict=True):
                        answers[index] = {"completion": result["completion"], "tokens": result["tokens"],
                                          **self.where}
            return answers

        def check_health(self) -> None:
            with self.lock:
                self.runner.generate([("health", "ok")], 1)

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Router:
        """The workload's endpoint: generate (spread over placements by replicas) and health."""

        def __init__(self, app: str, backends: dict[str, Any], weights: dict[str, int], max_new_tokens: int) -> None:
            self.app, self.backends, self.weights = app, backends, weights
            self.max_new_tokens = max_new_tokens
            self.credit = dict.fromkeys(weights, 0)

        def _next_backend(self) -> str:
            """Smooth weighted round robin: placements take turns in proportion to their replicas."""
            for name, weight in self.weights.items():
                self.credit[name] += weight
            chosen = max(self.credit, key=self.credit.__getitem__)
            self.credit[chosen] -= sum(self.weights.values())
            return chosen

        async def __call__(self, request: Request) -> JSONResponse:
            path = request.url.path.removeprefix(request.scope.get("root_path", "")).rstrip("/")
            if path == "/health" and request.method == "GET":
                return self._health()
            if path == "/generate" and request.method == "POST":
                return await self._generate(request)
            return JSONResponse({"error": f"no {request.method} {path or '/'} here",
                                 "fix": "POST <route>/generate or GET <route>/health"}, status_code=404)

        def _health(self) -> JSONResponse:
            status = serve.status().applications.get(self.app)
            placements = {}
            for name, wanted in self.weights.items():
                deployment = status.deployments.get(name) if status else None
                running = deployment.replica_states.get("RUNNING", 0) if deployment else 0
                placements[name] = {"running": running, "wanted": wanted}
            healthy = all(entry["running"] > 0 for entry in placements.values())
            degraded = any(entry["running"] < entry["wanted"] for entry in placements.values())
            return JSONResponse({"status": "degraded" if healthy and degraded else "ok" if healthy else "down",
                                 "placements": placements}, status_code=200 if healthy else 503)

        async def _generate(self, request: Request) -> JSONResponse:
            try:
                body = await request.json()
            except ValueError:
                return _bad_request("body", "is not JSON", 'send {"prompt": "..."}')
            if not isinstance(body, dict):
                return _bad_request("body", "is not a JSON object", 'send {"prompt": "..."}')
            prompts = body.get("prompts", [body.get("prompt")] if "prompt" in body else None)
            if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
                return _bad_request("prompt", "missing, or not a string (prompts: a list of strings)",
                                    'send {"prompt": "..."} or {"prompts": ["...", "..."]}')
            max_new_tokens = body.get("max_new_tokens", self.max_new_tokens)
            if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or \
                    not 1 <= max_new_tokens <= self.max_new_tokens:
                return _bad_request("max_new_tokens", f"must be an integer from 1 to {self.max_new_tokens}",
                                    "leave it out for the job's max_new_tokens")
            answers = await asyncio.gather(*(self.backends[self._next_backend()].generate.remote(
                (prompt, max_new_tokens)) for prompt in prompts))
            return JSONResponse(answers[0] if "prompt" in body and "prompts" not in body
                                else {"completions": list(answers)})

    def _bad_request(field: str, problem: str, fix: str) -> JSONResponse:
        return JSONResponse({"error": f"{field}: {problem}", "fix": fix}, status_code=400)

    backends = {
        deployment_name(p): PlacementReplica.options(
            name=deployment_name(p), num_replicas=p.replicas,
            ray_actor_options={"num_gpus": p.tensor_parallel, "num_cpus": 0, "label_selector": placement_selector(p)},
        ).bind(spec, _placement_fields(p), registry_name(workload), p.tensor_parallel)
        for p in placements}
    weights = {deployment_name(p): p.replicas for p in placements}
    return Router.bind(app_name(workload), backends, weights, workload.job.max_new_tokens)


@dataclass
class _Slot:
    """A replica slot of a placement and its current attempt's row."""

    number: int
    placement: Any
    attempt: int = 0
    record_id: int | None = None
    replica_name: str | None = None


class ServeJob:
    """Deploys one workload's serve job and keeps its state rows in step with what Serve runs."""

    def __init__(self, jobs: JobStore, revision: str, workload: Any, spec: ReplicaSpec,
                 replan: Callable[[str, list[Any], int], list[Any]] | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.jobs, self.revision, self.workload, self.spec = jobs, revision, workload, spec
        self.replan = replan
        self.on_event = on_event or (lambda message: None)
        self.app = app_name(workload)
        self.placements: list[Any] = []
        self.slots: dict[str, list[_Slot]] = {}  # deployment -> its slots
        self.run_id: int | None = None
        self.replans = 0
        self.registry: Any = None

    def deploy(self, placements: list[Any]) -> None:
        """Fail fast on placements no live node can take, then deploy and wait until every replica runs."""
        from ray import serve

        reasons = unsatisfiable(placements, cluster_nodes())
        if reasons:
            raise UserError("placement", reasons[0], "start nodes with those labels (docs/ray.md), or re-plan")
        run = self.jobs.start_run(self.revision, self.workload.name, "serve")
        self.run_id = run.id
        stale = [row.id for row in self.jobs.replicas(run.id) if row.state not in FINAL]
        self.jobs.replicas_finished(stale, State.FAILED, "gone with an earlier deployment of this run")
        self.jobs.update_run(run.id, state=State.RUNNING, error=None)
        self._set_placements(placements)
        self.registry = _registry(self.workload)
        try:
            serve.run(_application(self.workload, self.spec, placements), name=self.app,
                      route_prefix=route_of(self.workload))
        except RuntimeError as error:  # the application failed to deploy (a replica's constructor raised)
            self.jobs.update_run(run.id, state=State.FAILED, error=str(error)[:500])
            raise UserError("run", f"{self.workload.name}: serve deployment failed ({str(error)[:200]})",
                            "see the replica logs (ray logs)") from None
        self.sync()

    def _set_placements(self, placements: list[Any]) -> None:
        """Slots per placement; new ones are numbered after every slot the run has had."""
        names = {deployment_name(p) for p in placements}
        for name in set(self.slots) - names:  # re-planned away
            open_rows = [slot.record_id for slot in self.slots.pop(name) if slot.record_id]
            self.jobs.replicas_finished(open_rows, State.FAILED, "no node left for its placement")
        numbers = [row.slot for row in self.jobs.replicas(self.run_id)]
        numbers += [slot.number for slots in self.slots.values() for slot in slots]
        next_slot = max(numbers, default=-1) + 1
        for placement in placements:
            name = deployment_name(placement)
            if name not in self.slots:
                self.slots[name] = [_Slot(next_slot + i, placement) for i in range(placement.replicas)]
                next_slot += placement.replicas
        self.placements = placements

    def sync(self) -> None:
        """Bring the replica rows up to date: a new running replica opens an attempt in a free slot, a
        gone one closes its attempt (``preempted`` on spot, ``failed`` otherwise)."""
        import ray

        alive = {actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
                 if actor["namespace"] == SERVE_NAMESPACE}
        nodes = ray.get(self.registry.replicas.remote())
        live_nodes = {node.node_id for node in cluster_nodes() if node.alive}
        for name, slots in self.slots.items():
            for slot in slots:
                if slot.replica_name and slot.replica_name not in alive:
                    lost_node = nodes.get(slot.replica_name) not in live_nodes
                    state = State.PREEMPTED if lost_node and slot.placement.pricing == "spot" else State.FAILED
                    reason = "node lost" if lost_node else "replica replaced (health check failed or it crashed)"
                    self.jobs.replicas_finished([slot.record_id], state, reason)
                    self.on_event(f"{self.workload.name}: replica {slot.number} ({slot.placement.instance_type}) "
                                  f"{state}: {reason}")
                    slot.replica_name = slot.record_id = None
            taken = {slot.replica_name for slot in slots}
            prefix = f"{SERVE_REPLICA_PREFIX}{self.app}#{name}#"
            fresh = sorted(replica for replica in nodes
                           if replica.startswith(prefix) and replica in alive and replica not in taken)
            for slot, replica in zip([slot for slot in slots if slot.replica_name is None], fresh):
                slot.attempt += 1
                slot.replica_name = replica
                slot.record_id = self.jobs.add_replicas(self.run_id, [(slot.number, ReplicaPlace.of(slot.placement),
                                                                      slot.attempt)])[0]
                self.jobs.replicas_running([slot.record_id], nodes[replica])
                if slot.attempt > 1:
                    self.on_event(f"{self.workload.name}: replica {slot.number} running again on node "
                                  f"{nodes[replica][:8]}")

    def running(self) -> int:
        return sum(1 for slots in self.slots.values() for slot in slots if slot.replica_name)

    def is_deployed(self) -> bool:
        from ray import serve

        status = serve.status().applications.get(self.app)
        return status is not None and status.status == "RUNNING"

    def tick(self) -> None:
        """One look while serving: rows in step, and placements no live node can take re-planned."""
        self.sync()
        stranded = [p for p in self.placements if unsatisfiable([p], cluster_nodes())]
        if stranded:
            self._replan(stranded)

    def _replan(self, stranded: list[Any]) -> None:
        from ray import serve

        keep = [p for p in self.placements if p not in stranded]
        added = self.replan(self.workload.name, stranded, sum(p.replicas for p in stranded)) if self.replan else []
        if not added:
            self.on_event(f"{self.workload.name}: no live node for {', '.join(p.instance_type for p in stranded)} "
                          "and no other supply; serving with the rest" if keep else
                          f"{self.workload.name}: no live node for any placement and no other supply")
            self.placements = keep or self.placements  # stop asking until supply changes
            if not keep:
                raise UserError("run", f"{self.workload.name}: lost every node of its placements and re-planning "
                                       "found no other supply", "add nodes or supply, then re-run")
            return
        self.replans += 1
        self.on_event(f"re-planned {self.workload.name}: " + ", ".join(
            f"{p.provider}/{p.region}/{p.instance_type} x{p.replicas}" for p in added))
        self._set_placements(keep + added)
        serve.run(_application(self.workload, self.spec, self.placements), name=self.app,
                  route_prefix=route_of(self.workload))
        self.sync()

    def stop(self, state: State = State.SUCCEEDED) -> None:
        """Delete the application; open attempts end with ``state`` (after a last sync, so replicas that
        came up since the last look are recorded)."""
        from ray import serve

        import ray

        if self.registry is not None:
            self.sync()
        open_rows = [slot.record_id for slots in self.slots.values() for slot in slots if slot.record_id]
        self.jobs.replicas_finished(open_rows, state)
        serve.delete(self.app)
        if self.registry is not None:
            ray.kill(self.registry)
        if self.run_id is not None:
            self.jobs.update_run(self.run_id, state=state)


def start_serve(local: bool, http_port: int) -> None:
    """Start Serve's HTTP proxy: on the head only for a local stand-in cluster (its nodes share one
    machine and so one port), on every node with replicas for a real cluster."""
    import logging

    from ray import serve

    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its per-step INFO lines are not ours to print
    serve.start(proxy_location="HeadOnly" if local else "EveryNode",
                http_options={"host": "127.0.0.1" if local else "0.0.0.0", "port": http_port})
