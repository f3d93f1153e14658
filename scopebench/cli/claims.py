"""``scopebench claims``: the paper's claims as the suite checks them, with the paper's own numbers."""
from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

from tabulate import tabulate

from scopebench.claims.registry import CLAIMS, Claim, evaluate, indexed

_WRAP = 48  # characters per line of the backbones cell


def _wrap_names(names: Sequence[str]) -> str:
    """Comma-separated names, broken between names (never inside one) into lines of about ``_WRAP`` chars."""
    lines: list[str] = []
    current = ""
    for name in names:
        joined = f"{current}, {name}" if current else name
        if current and len(joined) > _WRAP:
            lines.append(f"{current},")
            current = name
        else:
            current = joined
    lines.append(current)
    return "\n".join(lines)


def relation_text(claim: Claim) -> str:
    tolerance = f" (tol {claim.tolerance:g})" if claim.tolerance else ""
    return claim.relation.text() + tolerance


def _shifts(claim: Claim, values: dict[str, float]) -> list[int]:
    pattern = re.compile(rf"^{re.escape(claim.relation.a)}\[{claim.relation.for_every}=(-?\d+)\]$")
    return sorted(int(m[1]) for key in values if (m := pattern.match(key)))


def _cell(values: dict[str, float], key: str) -> str:
    return f"{values[key]:g}" if key in values else "–"


def _holds(claim: Claim, values: dict[str, float], a_key: str, b_key: str) -> str:
    """Whether the claim's relation holds on the paper's own two numbers ("–" when one is absent)."""
    if a_key not in values or b_key not in values:
        return "–"
    return "yes" if evaluate(claim, {a_key: values[a_key], b_key: values[b_key]}).passed else "NO"


def paper_rows(claim: Claim) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the paper's numbers for ``claim``: one row per backbone (and SCC shift)."""
    a, b, every = claim.relation.a, claim.relation.b, claim.relation.for_every
    rows: list[list[str]] = []
    if every is None:
        for backbone, values in claim.paper_values.items():
            rows.append([backbone, _cell(values, a), _cell(values, b), _holds(claim, values, a, b)])
        return ["backbone", a, b, "holds"], rows
    for backbone, values in claim.paper_values.items():
        for s in _shifts(claim, values):
            a_key, b_key = indexed(a, s), indexed(b, s)
            rows.append([backbone, str(s), _cell(values, a_key), _cell(values, b_key),
                         _holds(claim, values, a_key, b_key)])
    return ["backbone", every, a, b, "holds"], rows


def render_claims(claims: Sequence[Claim]) -> str:
    """Summary table of ``claims``, then the paper's numbers behind each claim that has any."""
    if not claims:
        return "(no claims)"
    summary = tabulate([[c.id, c.source, relation_text(c), _wrap_names(c.backbones)] for c in claims],
                       headers=["id", "source", "relation", "backbones"], disable_numparse=True)
    parts = [summary, "", "Paper values (holds: the relation on the paper's own numbers):"]
    for claim in claims:
        headers, rows = paper_rows(claim)
        parts += ["", f"{claim.id} — {claim.statement}"]
        if rows:
            parts.append(tabulate(rows, headers=headers, disable_numparse=True))
        else:
            parts.append(f"  (the paper gives no numbers for this {claim.source.split()[0].lower()})")
    return "\n".join(parts)


def _run(args: argparse.Namespace) -> int:
    claims = [c for c in CLAIMS if args.table is None or c.table == args.table]
    print(render_claims(claims))
    return 0


def register_claims(subparsers: argparse._SubParsersAction) -> None:
    """``scopebench claims [--table TABLE]``."""
    tables = sorted({claim.table for claim in CLAIMS})
    parser = subparsers.add_parser(
        "claims", help="list the paper's claims the suite checks, with the paper's own numbers",
        description="List every claim of the paper the bench checks: id, where the paper makes it, the relation "
                    "tested, the backbones it applies to, and the paper's numbers for it.")
    parser.add_argument("--table", choices=tables, default=None, help="only claims recorded under this table")
    parser.set_defaults(handler=_run)
