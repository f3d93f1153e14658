"""Training an SAE on cached patch tokens: seeded, resumable, logged."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from scopebench.sae.arch import SAERecipeBase, build_sae
from scopebench.atomic import write_folder_atomic, write_json_atomic
from scopebench.sae.checkpoint import save_sae
from scopebench.sae.dictionary import DictionarySAE
from scopebench.sae.recipe import parse_recipe
from scopebench.sae.safetensors_io import read_safetensors
from scopebench.sae.token_sampling import PatchTokenSampler

# Bump when a change to training alters the SAE it produces: cached SAEs are keyed by it.
TRAINER_VERSION = 3  # 2: BatchTopK threshold calibrated after training; 3: small encoder at init
SAE_DIR = "sae"
LOSS_LOG_FILE = "loss_log.json"
STATE_DIR = "train_state"
STATE_TENSORS = "state.safetensors"
_SCALE_SAMPLE = 8192


@dataclass
class TrainResult:
    sae: DictionarySAE
    loss_log: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _RunState:
    """Everything that changes during training besides the model parameters."""

    step: int
    scale: float
    tokens_since_fired: torch.Tensor
    loss_log: list[dict[str, float]]


def _read_tokens(tokens: Any, image_idx: np.ndarray, patch_idx: np.ndarray, scale: float) -> torch.Tensor:
    if isinstance(tokens, torch.Tensor):
        rows = tokens[torch.from_numpy(image_idx), torch.from_numpy(patch_idx)]
        return rows.to(torch.float32) * scale
    return torch.from_numpy(np.asarray(tokens[image_idx, patch_idx], dtype=np.float32)) * scale


def _lr_factor(step: int, n_steps: int, recipe: SAERecipeBase) -> float:
    """Linear warm-up, constant, then linear decay to 0 over the final ``lr_decay_fraction``."""
    warm = min(1.0, (step + 1) / recipe.lr_warmup_steps) if recipe.lr_warmup_steps else 1.0
    decay_steps = int(recipe.lr_decay_fraction * n_steps)
    decay = min(1.0, (n_steps - step) / decay_steps) if decay_steps else 1.0
    return warm * decay


def _fingerprint(config: dict[str, Any], seed: int, shape: tuple[int, ...], n_steps: int) -> dict[str, Any]:
    return {"config": config, "seed": seed, "tokens_shape": list(shape), "n_steps": n_steps}


def _save_state(path: Path, sae: DictionarySAE, opt: torch.optim.Optimizer, run: _RunState, fingerprint: dict) -> None:
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in sae.state_dict().items()}
    opt_state = opt.state_dict()
    for idx, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value).detach().clone().contiguous()
    tensors["tokens_since_fired"] = run.tokens_since_fired.clone()
    meta = {
        "fingerprint": fingerprint,
        "step": run.step,
        "scale": run.scale,
        "param_groups": opt_state["param_groups"],
        "loss_log": run.loss_log,
    }
    write_folder_atomic(
        path,
        {
            STATE_TENSORS: lambda f: save_file(tensors, str(f)),
            # written second: it records the sha256 of the tensors file beside it
            "state.json": lambda f: f.write_text(json.dumps({**meta, "state_sha256": _sha256(f.parent / STATE_TENSORS)})),
        },
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _damaged(path: Path, problem: str) -> ValueError:
    return ValueError(f"training state in {path} is damaged ({problem}); delete that folder to train again from "
                      "step 0 (training is seeded, so the SAE comes out the same)")


def _load_state(path: Path, sae: DictionarySAE, opt: torch.optim.Optimizer, fingerprint: dict) -> _RunState:
    """The resumable state, checked first: JSON, its fields, and the sha256 of the tensors file it records."""
    try:
        meta = json.loads((path / "state.json").read_text())
        fields = {"fingerprint", "step", "scale", "param_groups", "loss_log", "state_sha256"}
        if not isinstance(meta, dict) or not fields <= set(meta):
            raise ValueError(f"state.json lacks {sorted(fields - set(meta if isinstance(meta, dict) else {}))}")
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise _damaged(path, f"state.json: {err}") from None
    if not (path / STATE_TENSORS).is_file() or _sha256(path / STATE_TENSORS) != meta["state_sha256"]:
        raise _damaged(path, f"{STATE_TENSORS} is missing or its sha256 does not match state.json")
    if meta["fingerprint"] != fingerprint:
        raise ValueError(
            f"training state in {path} was made by a different run (recipe, seed, token shape or step count differ); "
            "use another checkpoint_dir or pass resume=False to start over"
        )
    tensors = read_safetensors(path / STATE_TENSORS)
    sae.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_states: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, idx, key = name.split(".", 2)
            opt_states.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": opt_states, "param_groups": meta["param_groups"]})
    return _RunState(meta["step"], meta["scale"], tensors["tokens_since_fired"], meta["loss_log"])


def _initial_state(sae: DictionarySAE, tokens: Any, recipe: SAERecipeBase, seed: int) -> _RunState:
    """Input scale (mean norm -> sqrt(d_in)) and data-mean decoder bias, from a seeded sample."""
    n_images, n_patches, d_in = tokens.shape
    rng = np.random.default_rng([seed, 2**31 - 1])
    flat = np.sort(rng.choice(n_images * n_patches, size=min(_SCALE_SAMPLE, n_images * n_patches), replace=False))
    sample = _read_tokens(tokens, flat // n_patches, flat % n_patches, 1.0)
    scale = math.sqrt(d_in) / float(sample.norm(dim=1).mean()) if recipe.normalize_activations else 1.0
    sae.initialise(torch.Generator().manual_seed(seed), data_mean=sample.mean(0) * scale)
    return _RunState(0, scale, torch.zeros(sae.d_sae, dtype=torch.long), [])


@torch.enable_grad()  # callers may sit inside no_grad (e.g. a lazily trained SAE used for inference)
def optimisation_step(
    sae: DictionarySAE, opt: torch.optim.Optimizer, x: torch.Tensor, dead: torch.Tensor, lr: float
) -> tuple[dict[str, float], torch.Tensor]:
    """One step: loss, backward, decoder-gradient projection, Adam, row renormalisation."""
    loss, parts, fired = sae.training_loss(x, dead)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sae.project_decoder_grad_()
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()
    sae.normalise_decoder_()
    return parts, fired


def train_sae(
    config: SAERecipeBase | dict[str, Any],
    tokens: Any,
    *,
    seed: int = 0,
    device: str = "cpu",
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    max_steps: int | None = None,
) -> TrainResult:
    """Train an SAE on ``tokens`` ``[n_images, n_patches, d_in]`` (e.g. a numpy memmap).

    Each epoch samples ``tokens_per_image`` random patches per image (seeded).  With
    ``checkpoint_dir`` the resumable state is saved every ``checkpoint_every`` steps and
    the final SAE goes to ``checkpoint_dir/sae`` with ``loss_log.json`` beside it.
    ``max_steps`` stops early after that global step, leaving a resumable state (for
    time-budgeted runs); the returned SAE is then the partially trained one.
    """
    recipe = config if isinstance(config, SAERecipeBase) else parse_recipe(dict(config))
    if len(getattr(tokens, "shape", ())) != 3:
        raise ValueError(f"tokens must be [n_images, n_patches, d_in], got shape {getattr(tokens, 'shape', None)}")
    n_images, n_patches, d_in = (int(s) for s in tokens.shape)
    sae_config = recipe.sae_config(d_in)
    sampler = PatchTokenSampler(n_images, n_patches, recipe.tokens_per_image, seed)
    total = recipe.n_tokens or recipe.epochs * sampler.tokens_per_epoch
    n_steps = max(1, total // recipe.batch_size)
    fingerprint = _fingerprint(sae_config, seed, (n_images, n_patches, d_in), n_steps)

    sae = build_sae(sae_config)
    opt = torch.optim.Adam(sae.parameters(), lr=recipe.lr, betas=recipe.adam_betas)
    state_dir = Path(checkpoint_dir) / STATE_DIR if checkpoint_dir is not None else None
    if state_dir is not None and resume and (state_dir / "state.json").is_file():
        run = _load_state(state_dir, sae, opt, fingerprint)
    else:
        run = _initial_state(sae, tokens, recipe, seed)
    sae.to(device).train()
    run.tokens_since_fired = run.tokens_since_fired.to(device)
    for state in opt.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)

    stop = n_steps if max_steps is None else min(n_steps, max_steps)
    for step in tqdm(range(run.step, stop), initial=run.step, total=n_steps, disable=not progress, desc="train SAE"):
        x = _read_tokens(tokens, *sampler.batch(step, recipe.batch_size), run.scale).to(device)
        dead = run.tokens_since_fired >= recipe.dead_after_tokens
        lr = recipe.lr * _lr_factor(step, n_steps, recipe)
        parts, fired = optimisation_step(sae, opt, x, dead, lr)
        run.tokens_since_fired += x.shape[0]
        run.tokens_since_fired[fired] = 0
        run.loss_log.append({"step": step, **parts, "dead_fraction": float(dead.float().mean()), "lr": lr})
        run.step = step + 1
        if state_dir is not None and (run.step % recipe.checkpoint_every == 0 or run.step == stop):
            _save_state(state_dir, sae, opt, run, fingerprint)

    # inference-only state (BatchTopK's threshold) from fresh batches of the same stream, final weights;
    # the architecture says how many (none for those whose inference rule is their training rule)
    sae.calibrate_(_read_tokens(tokens, *sampler.batch(step, recipe.batch_size), run.scale).to(device)
                   for step in range(n_steps, n_steps + recipe.n_calibration_batches))
    sae.eval()
    with torch.no_grad():
        sae.fold_input_scale_(run.scale)
    if checkpoint_dir is not None and run.step == n_steps:
        save_sae(sae, Path(checkpoint_dir) / SAE_DIR)
        write_json_atomic(Path(checkpoint_dir) / LOSS_LOG_FILE, run.loss_log)
    return TrainResult(sae=sae, loss_log=run.loss_log)
