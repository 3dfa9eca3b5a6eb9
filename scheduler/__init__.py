"""Placement of inference workloads on offers (OR-Tools optimizer) and their execution on Ray.

Not built yet: the optimizer is issue #3 and the Ray executor issue #5. Nothing here is
imported by the CLI's comparison commands.
"""
