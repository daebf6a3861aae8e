"""The ``kubetasks`` command line (``kubetasks.cli.main:main``)."""
