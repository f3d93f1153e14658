"""Hand-written result files for the leaderboard tests: one schema-2 record per call."""
from __future__ import annotations

import json
from pathlib import Path

ENV = {"python": "3.12.0", "device": "cpu", "date_utc": "2026-01-01T00:00:00Z"}


def write_result(folder: Path, backbone: str, sae: str | None, analyses: dict[str, dict],
                 claims: dict[str, bool] | None = None) -> None:
    """``<backbone>__<sae>.json`` (``<backbone>.json`` when ``sae`` is None) with these analysis outputs
    (analysis -> output fields) and claim verdicts."""
    payload = {
        "schema_version": 2, "backbone": {"name": backbone}, "sae": None if sae is None else {"name": sae},
        "analyses": {name: {"config": {}, "output": output} for name, output in analyses.items()},
        "environment": ENV,
        "claims": {cid: {"passed": ok, "detail": "", "source": "Table 6", "measured": {}}
                   for cid, ok in (claims or {}).items()},
    }
    (folder / (f"{backbone}.json" if sae is None else f"{backbone}__{sae}.json")).write_text(json.dumps(payload))
