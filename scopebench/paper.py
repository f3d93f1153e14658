"""The paper's own numbers, in one place: table -> backbone -> quantity -> value.

Sources: the supplement (Tables 4-9, ../shared/seeds/) and, for Table 3, the main paper's
numbers as DESIGN.md lists them. Table 5 (layers, tau) lives in the backbone registry, which
also reads CLIP's gamma from Table 4 here. Quantity names are those of the analysis outputs
(``scopebench.analyses``); shift-indexed ones are written ``name[s=N]``.
"""
from __future__ import annotations

from scopebench.keys import indexed


#: Active latents per token of the paper's SAEs (BatchTopK ``k``): the sparsity every SAE is compared at
#: (ReLU / JumpReLU calibrate their penalty to it, the leaderboard flags rows far from it).
PAPER_K = 30

_T6 = ("fvu_a", "fvu_o", "l0_a", "l0_o", "cs_a", "cs_o")
_T6_ROWS = {
    "clip-b16": (0.099, 0.021, 30.201, 13.064, 0.923, 0.998),
    "clip-l14": (0.176, 0.042, 29.307, 14.170, 0.873, 0.999),
    "clip-l14-336": (0.115, 0.028, 29.654, 16.391, 0.913, 0.999),
    "dinov2-b": (0.039, 0.001, 29.425, 7.298, 0.911, 0.999),
    "dinov2-l": (0.115, 0.001, 30.416, 15.334, 0.917, 0.999),
    "dinov2-g": (0.062, 0.002, 30.664, 28.709, 0.912, 0.999),
    "deit3-s": (0.123, 0.081, 32.067, 20.318, 0.941, 0.956),
    "deit3-b": (0.215, 0.101, 32.293, 10.208, 0.900, 0.940),
    "deit3-l": (0.170, 0.096, 31.533, 16.113, 0.930, 0.953),
    "siglip2-b": (0.030, 0.001, 29.982, 13.183, 0.948, 0.999),
    "siglip2-l": (0.042, 0.001, 29.628, 13.573, 0.925, 0.999),
    "siglip2-g": (0.116, 0.001, 30.144, 10.202, 0.918, 0.999),
}
_T9_NON = (1.490, 1.745, 1.842, 1.855, 1.915, 1.958)
_T9_OUT = (5.179, 6.752, 6.869, 6.876, 5.811, 5.533)


def _probe_row(kind: str, values: tuple[float, float, float]) -> dict[str, float]:
    return dict(zip((f"{kind}_original", f"{kind}_high_removed", f"{kind}_low_removed"), values))


PAPER_TABLES: dict[str, dict[str, dict[str, float]]] = {
    "table3": {  # main paper; ImageNet top-1 / ADE20K mIoU / NYUd RMSE
        "clip-b16": {**_probe_row("cls_top1", (74.82, 75.54, 64.86)), **_probe_row("seg_miou", (25.87, 26.02, 11.65)),
                     **_probe_row("depth_rmse", (0.8841, 0.8616, 0.9481))},
        "clip-l14": {**_probe_row("cls_top1", (80.82, 81.28, 78.30)), **_probe_row("seg_miou", (26.66, 26.44, 13.89)),
                     **_probe_row("depth_rmse", (0.8029, 0.7994, 0.8878))},
    },
    "table4": {
        "clip-b16": {"dict_size": 24576, "gamma": 0.14, "n_low": 17329, "n_high": 7247},
        "clip-l14": {"dict_size": 32768, "gamma": 0.20, "n_low": 27887, "n_high": 4881},
        "clip-l14-336": {"dict_size": 32768, "gamma": 0.13, "n_low": 22323, "n_high": 10445},
    },
    "table6": {name: dict(zip(_T6, row)) for name, row in _T6_ROWS.items()},
    "table7": {
        "dinov2-b": {indexed("attn_emd_non", 1): 0.61, indexed("attn_emd_out", 1): 6.96},
        "deit3-b": {indexed("attn_emd_non", 1): 0.38, indexed("attn_emd_out", 1): 5.97},
        "siglip2-b": {indexed("attn_emd_non", 1): 3.75, indexed("attn_emd_out", 1): 7.18},
    },
    "table8": {
        "dinov2-b": {**_probe_row("seg_miou", (25.26, 26.11, 15.47)), **_probe_row("depth_rmse", (0.7500, 0.7539, 0.8402))},
        "deit3-b": {**_probe_row("seg_miou", (26.48, 26.26, 8.38)), **_probe_row("depth_rmse", (0.8444, 0.8391, 1.0607))},
        "siglip2-b": {**_probe_row("seg_miou", (35.62, 35.39, 16.93)),
                      **_probe_row("depth_rmse", (0.8178, 0.8123, 0.9205))},
    },
    "table9": {
        "clip-l14-336": {
            **{indexed("attn_emd_non", s): v for s, v in enumerate(_T9_NON, start=1)},
            **{indexed("attn_emd_out", s): v for s, v in enumerate(_T9_OUT, start=1)},
        },
    },
}



def paper_gamma(backbone: str) -> float | None:
    """The CDS threshold gamma the paper fixes for ``backbone`` (Table 4), or None."""
    return PAPER_TABLES["table4"].get(backbone, {}).get("gamma")


def paper_values(backbone: str, keys) -> dict[str, float]:
    """The paper's value of each of ``keys`` for ``backbone``, from whichever table reports it."""
    found: dict[str, float] = {}
    for rows in PAPER_TABLES.values():
        found.update({k: v for k, v in rows.get(backbone, {}).items() if k in keys})
    return found
