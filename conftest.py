"""Repository-level pytest settings. The plugin itself is not listed here: it loads by its ``pytest11``
entry point (``scopebench.plugin``), as in any project that installs scopebench. This file only stops
a run early, naming the fix, when that did not happen (a stale install without the entry point, or
``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set), instead of failing later on unknown options or fixtures."""
import pytest

PLUGIN = "scopebench.plugin"


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    if not pluginmanager.has_plugin(PLUGIN):
        raise pytest.UsageError(f"scopebench's pytest plugin is not loaded: reinstall the package "
                                f"(pip install -e .) so its pytest11 entry point exists, or pass -p {PLUGIN} "
                                f"(needed when PYTEST_DISABLE_PLUGIN_AUTOLOAD is set)")
