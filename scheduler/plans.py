"""A placement plan: what each workload gets, what stays unmet and why, and how sure the solver is."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Placement:
    workload: str
    provider: str
    region: str
    zones: tuple[str, ...]
    instance_type: str
    gpu: str
    gpu_count: int  # GPUs per node
    pricing: str
    nodes: int
    replicas: int
    tensor_parallel: int
    tokens_per_s: float | None  # output tokens/s these nodes serve (None for fixed-replica demand)
    cost_per_hour: float
    total_cost: float  # over the workload's hours, minimum terms in full; committed capacity costs 0
    committed: bool
    offer_keys: tuple[str, ...]


@dataclass(frozen=True)
class Unmet:
    workload: str
    missing_tokens_per_s: float | None
    missing_replicas: float | None
    reason: str


@dataclass(frozen=True)
class Explanation:
    workload: str
    chosen: tuple[str, ...]
    cheapest_rejected: str | None
    rejected_because: str | None
    single_type_gpu: str | None  # best plan using one GPU type only (ignoring other workloads)
    single_type_cost: float | None
    saving_vs_single_type: float | None


@dataclass(frozen=True)
class SolverReport:
    solver: str
    status: str
    objective: float | None
    bound: float | None
    gap: float | None
    seconds: float
    lp_bound: float | None  # proven lower bound on the final stage's LP relaxation over every feasible column
    lp_exact: bool  # column generation priced out every column: lp_bound is that LP's optimum itself
    columns: int
    stages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    currency: str
    placements: tuple[Placement, ...]
    unmet: tuple[Unmet, ...]
    explanations: tuple[Explanation, ...]
    solver: SolverReport
    assignment: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)  # (workload, supply) -> nodes

    @property
    def total_cost_per_hour(self) -> float:
        return sum(placement.cost_per_hour for placement in self.placements)

    @property
    def total_cost(self) -> float:
        return sum(placement.total_cost for placement in self.placements)

    def to_dict(self) -> dict:
        """The JSON contract of `gpu-supply plan --format json`."""
        return {
            "currency": self.currency,
            "placements": [{key: value for key, value in asdict(placement).items() if key != "offer_keys"}
                           for placement in self.placements],
            "unmet": [asdict(unmet) for unmet in self.unmet],
            "explanations": [asdict(explanation) for explanation in self.explanations],
            "total_cost_per_hour": round(self.total_cost_per_hour, 4),
            "total_cost": round(self.total_cost, 2),
            "solver": asdict(self.solver),
        }

    def to_frame(self):
        """Placements as a pandas DataFrame (one row per workload x offer)."""
        import pandas as pd

        return pd.DataFrame([asdict(placement) for placement in self.placements])
