"""Quantity keys: a plain name (``fvu_a``) or an indexed one: by the SCC shift (``attn_emd_out[s=3]``), or by the
rank of a backbone within its family's sizes (``cls_top1_low_removal_gap[size=1]``, family claims only)."""
from __future__ import annotations

import re

_INDEXED = re.compile(r"^(?P<base>[a-z0-9_]+)\[(?P<index>[a-z]+)=(?P<value>-?\d+)\]$")


def indexed(name: str, s: int, index: str = "s") -> str:
    """Key of an indexed quantity: ``indexed("attn_emd_out", 1) == "attn_emd_out[s=1]"`` (``index``: its name)."""
    return f"{name}[{index}={s}]"


def index_of(key: str) -> tuple[str, str, int] | None:
    """``(base, index name, value)`` of an indexed key, None for a plain one."""
    match = _INDEXED.match(key)
    return (match["base"], match["index"], int(match["value"])) if match else None


def base_name(key: str) -> str:
    """``attn_emd_out`` for ``attn_emd_out[s=3]``; plain keys unchanged."""
    found = index_of(key)
    return found[0] if found else key
