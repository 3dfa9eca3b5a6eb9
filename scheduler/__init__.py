"""Placement of inference workloads on offers (OR-Tools optimizer), and running them on Ray (``runs``).

    import scheduler
    result = scheduler.plan(workloads, offers)      # -> scheduler.plans.Plan
    result.to_frame()

Loaded on first use: importing this package does not import OR-Tools.
"""

_API = {"plan": ("scheduler.optimizer", "plan"), "PlanOptions": ("scheduler.optimizer", "PlanOptions"),
        "load_workloads": ("scheduler.workloads", "load_workloads"),
        "parse_workloads": ("scheduler.workloads", "parse_workloads")}


def __getattr__(name: str):
    if name in _API:
        import importlib

        module, attribute = _API[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
