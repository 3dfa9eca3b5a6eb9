"""GPU Supply: compare, plan and run GPU capacity across clouds, GPU clouds and IDCs.

This package holds what every layer shares (the offer model, the GPU registry, geography,
settings, errors) and the CLI. The layers themselves are the top-level packages
``providers`` (supplier adapters), ``pricing`` (store, catalog, comparisons) and ``scheduler``.
"""
