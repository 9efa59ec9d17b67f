"""The ``tresen`` command line."""
