"""GPU check of extraction with the loader: images/s of ViT-B/16 and ViT-L/14-336 at fp32 and bf16,
and the GPU's utilisation while they extract (meant to join the scale issue's prepared GPU check).

Run on a GPU machine: ``python -m bench.perf.gpu_loader_check --out gpu-loader.json`` (about a
minute per configuration).  Random-init CLIP models (the throughput does not depend on the
weights) on a tree of ImageNet-sized JPEGs written by the script (``jpeg_tree.py``), loaded by
``--workers`` DataLoader processes (default: the CPUs this process may use); each configuration
is timed by :func:`scopebench.pipeline.throughput.images_per_second` after a warm-up batch.
Utilisation is ``torch.cuda.utilization()`` (NVML, so ``pynvml`` must be installed) sampled every
50 ms during the measurement (its warm-up batch included, so slightly low): the share of time the
GPU had a kernel running.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import threading
from pathlib import Path

import torch

from bench.perf.jpeg_tree import write_jpeg_tree
from scopebench.backbones import load_backbone
from scopebench.pipeline.loader import available_cpus
from scopebench.pipeline.throughput import images_per_second

BACKBONES = ("clip-b16", "clip-l14-336")
PRECISIONS = ("fp32", "bf16")


class UtilisationSampler:
    """Samples ``torch.cuda.utilization()`` in a thread between ``start()`` and ``stop()``."""

    def __init__(self, device: torch.device, period_s: float = 0.05) -> None:
        self.device, self.period_s, self.samples = device, period_s, []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.period_s):
            self.samples.append(torch.cuda.utilization(self.device))

    def __enter__(self) -> "UtilisationSampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._done.set()
        self._thread.join()


def measure(backbones: tuple[str, ...], *, images: int, batch_size: int, workers: int,
            device: torch.device) -> list[dict]:
    """images/s of each backbone at each precision through the loader, with the GPU's mean utilisation."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        data = write_jpeg_tree(Path(folder), images + batch_size)
        for name in backbones:
            backbone = load_backbone(name, random_init=True, device=str(device))
            for precision in PRECISIONS:
                watch = UtilisationSampler(device) if device.type == "cuda" else contextlib.nullcontext()
                with watch as sampler:
                    measured = images_per_second(backbone, data, n_images=images, batch_size=batch_size,
                                                 workers=workers, precision=precision, device=device)
                utilisation = statistics.fmean(sampler.samples) if sampler and sampler.samples else None
                rows.append({"backbone": name, "precision": precision, "workers": workers,
                             "batch_size": batch_size, "images": measured.images, "seconds": measured.seconds,
                             "images_per_s": measured.images_per_s, "gpu_utilisation_pct": utilisation,
                             "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"})
                print(json.dumps(rows[-1]), flush=True)
            del backbone
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file of the measurements")
    parser.add_argument("--images", type=int, default=1024, help="timed images per configuration")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=available_cpus())
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backbones", default=",".join(BACKBONES), help="comma-separated registry names")
    args = parser.parse_args(argv)
    rows = measure(tuple(args.backbones.split(",")), images=args.images, batch_size=args.batch_size,
                   workers=args.workers, device=torch.device(args.device))
    args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
