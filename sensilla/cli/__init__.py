"""The `sensilla` command line."""
