"""One module per orchestrator command; orchestrator.cli adds them to the group explicitly."""
