"""The ``scopebench`` command line: one module per command group, wired in ``main``."""
