"""The dashboard: read-only pages of runs and Tasks, served by the operator on a loopback
address and reached through ``kubectl port-forward`` (see :mod:`.server`)."""
