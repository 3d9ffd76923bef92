"""Data for the tasks: synthetic sets built in code (the offline default) and local-file loaders."""
