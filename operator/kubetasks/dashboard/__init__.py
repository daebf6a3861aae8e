"""The dashboard: pages of runs and Tasks, served by ``kubetasks dashboard`` on the user's machine
from its own list and watch made with the user's kubeconfig: it reads as the user (see :mod:`.server`)."""
