"""The operator: thin kopf handlers feed a work queue; reconcilers read the cache, call the
pure core, and write the result through :mod:`kubetasks.kube`."""
