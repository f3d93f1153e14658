"""Package data, not code: this folder is installed as ``scopebench.baselines`` (see pyproject.toml,
``[tool.setuptools.package-dir]``) so the recipe JSON files ship in the wheel and are found with
importlib.resources (``scopebench.sae.recipe.baselines_dir``) from any install."""
