"""The orchestrator: plans work, runs it on a backend, watches it and reads results back."""
