"""Backends run planned jobs: `local` (subprocesses, the default) and `k8s` (Kubernetes Jobs), both
behind the `Backend` protocol of `base` (one JobOutcome, BackendError); none of them imports click."""
