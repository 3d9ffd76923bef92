"""Backends run planned jobs: `local` (subprocesses, the default) and, later, Kubernetes Jobs."""
