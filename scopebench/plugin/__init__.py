"""scopebench's pytest plugin: one package, registered by the ``pytest11`` entry point ``scopebench.plugin``.

``pip install scopebench`` is all a project needs for ``pytest --sae ...``, ``claim_report`` and the
claims table; nothing has to be listed in a conftest.  The entry point is named after this module, so
``-p scopebench.plugin`` or ``pytest_plugins = ["scopebench.plugin"]`` on top of the autoload is a
no-op rather than a second registration; with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` pass
``-p scopebench.plugin``, and ``-p no:scopebench.plugin`` turns it off.

Parts (each a pytest plugin module, registered by the list below):

- :mod:`~scopebench.plugin.options`: every option, defined once (the ``scopebench`` CLI reuses the rows);
- :mod:`~scopebench.plugin.session`: inputs checked at startup (weights, cache, device), session fixtures;
- :mod:`~scopebench.plugin.bench`: the claims suite (SAE options, parametrisation, ``workbench``);
- :mod:`~scopebench.plugin.reporter`: ``claim_report``, the claims table, result files.

This module imports nothing, so ``scopebench.plugin.options`` stays light for the CLI.
"""
pytest_plugins = [
    "scopebench.plugin.options",
    "scopebench.plugin.session",
    "scopebench.plugin.bench",
    "scopebench.plugin.reporter",
]
