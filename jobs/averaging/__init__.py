"""Averaging snapshots: the methods and the average job, one concern per module.

- `methods`: the registry of averaging methods (id, table label, how each picks its members);
  light (no torch), so that the orchestrator and the tables import it.
- `members`: which inputs make which averaged model (per method and k of a draw, a run's CA,
  an explicit list), with the manifests the outputs get.
- `greedy`: greedy soup, whose members are picked by English dev forward passes.
- `inputs`: opening the input files and checking that they may be averaged together.
- `engine`: the streaming pass that computes every output in one read of the inputs.
- `job`: the average job itself (`python -m jobs average`; `jobs.average.run_average`).

This package file imports nothing: `import jobs.averaging.methods` stays cheap.
"""
