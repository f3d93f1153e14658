"""The paper's claims, bound to the analysis outputs they check, and their evaluator (``registry``)."""
