"""The steering core: experiment spec, GP engine, acquisition, planner.

No web framework, SQL or Redis imports live here (``tests/test_no_heavy_imports.py``).
"""
