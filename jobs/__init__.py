"""Jobs that run inside a container or as a local process: train, evaluate, average.

`jobs` never imports `orchestrator`; the two share only the specs (jobs.spec) and the
object-store layout (jobs.layout, jobs.results).
"""
__version__ = "0.1.0"
