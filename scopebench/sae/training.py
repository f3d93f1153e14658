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
from scopebench.sae.arch._base import L0TargetConfig
from scopebench.atomic import write_folder_atomic, write_json_atomic
from scopebench.sae.checkpoint import save_sae
from scopebench.sae.dictionary import DictionarySAE
from scopebench.sae.recipe import parse_recipe
from scopebench.sae.safetensors_io import read_safetensors
from scopebench.sae.token_sampling import PatchTokenSampler

# Bump when a change to training alters the SAE it produces: cached SAEs are keyed by it.
# 2: BatchTopK threshold calibrated after training; 3: small encoder at init; 4: the L0 forecast's horizon is the
# learning rate after the freeze (ReLU, JumpReLU)
TRAINER_VERSION = 4
SAE_DIR = "sae"
LOSS_LOG_FILE = "loss_log.json"
STATE_DIR = "train_state"
STATE_TENSORS = "state.safetensors"
_SCALE_SAMPLE = 8192


@dataclass
class TrainResult:
    sae: DictionarySAE
    loss_log: list[dict[str, float]] = field(default_factory=list)


#: smoothing of the L0 controller's running log-L0 and its trend (an EMA over ~20 steps)
L0_TREND_BETA = 0.95


@dataclass
class L0Controller:
    """Calibrates a penalty weight ``c`` (ReLU's ``l1_coeff``, JumpReLU's ``sparsity_coeff``) to a target L0.

    An integral controller on ``log c`` that steers the L0 the run is heading for at its last step, not
    the L0 of the moment.  Each training batch reports ``L0_t``, its mean number of active latents per
    token under the training rule, measured in the forward pass that trained with ``c_t``.  With
    ``lambda_t`` the learning-rate factor of step ``t`` (warm-up and decay, as ``_lr_factor``),
    ``beta = L0_TREND_BETA`` and ``y_t = log(L0_t + 1)``:

        m_t    = beta m_{t-1} + (1 - beta) y_t                    running log L0   (m = y at the first step)
        g_t    = beta g_{t-1} + (1 - beta) (m_t - m_{t-1}) / lambda_t      its trend per unit of learning rate
        f_t    = m_t + g_t * H,   H = sum_{s >= n_steps} lambda_s     forecast of log(L0 + 1) at the last step
        e_t    = clip(f_t - log(target_l0 + 1), -1, 1)
        log c_{t+1} = log c_t + gain * e_t

    for ``lr_warmup_steps <= t`` and ``t + 1 < n_steps`` (``m`` and ``g`` start at the first of those
    steps, with ``g = 0``); outside that window ``c`` is held.  ``c_0`` is the recipe's configured weight,
    ``gain = l0_calibration_gain`` and ``n_steps = ceil(l0_calibration_fraction * training steps)``: from
    step ``n_steps - 1`` on the weight is frozen, and that value is the one the trained SAE's config
    records (under the recipe's field name, with ``l0_calibration``: :meth:`record`).

    Why the forecast: the L0 answers a change of ``c`` slowly (Adam moves encoder biases and thresholds
    a bounded amount per step) and drifts on its own as the dictionary sharpens, so a controller on the
    current L0 keeps raising ``c`` while the L0 is still coming down from its initial value, and lands
    far below the target (JumpReLU on planted v9 at seed 0: 20 instead of 30, after 15 at step 300).  Why
    the horizon ``H`` is the learning rate left after the freeze, not all that is left: until the freeze
    the controller itself corrects whatever the L0 does, and much of the trend before it is the answer to
    the controller's own rising weight; extrapolating that over the rest of the run made it ease off early
    (planted v9, seed 0: ReLU at L0_A 38.7 and JumpReLU at 41.6; with ``H``, 27.2 and 27.4).  Only the drift
    after the freeze goes uncorrected, so that is what the forecast adds.  Updates wait
    for the end of the learning-rate warm-up, whose transient would read as a trend, so ``c_0`` must not
    be far above the calibrated weight: a ReLU SAE started 100x too high loses a third of its latents
    during the warm-up, before calibration acts (they never fire again).  The clip bounds a step's
    change of ``c`` to a factor ``exp(gain)``; ``+ 1`` keeps the error finite at L0 = 0.

    The state (``c``, ``m``, ``g``, the last L0) is plain floats, saved with the resumable training
    state; the update is a pure function of the batch L0s, so a seeded run, resumed or not, gives the
    same weights bit for bit.
    """

    coeff: str
    target_l0: float
    gain: float
    n_steps: int
    first_step: int
    initial: float
    #: the weight ``c_t`` the next step trains with (kept as the weight, not its log, so ``c_0`` is exact)
    weight: float
    #: ``H``: the learning rate (in units of the peak) left after the weight freezes
    horizon: float
    #: ``lambda_t`` for each training step ``t``
    lr_factors: list[float]
    trend_mean: float | None = None
    trend_slope: float = 0.0
    last_l0: float | None = None

    @classmethod
    def for_recipe(cls, recipe: SAERecipeBase, d_sae: int, n_train_steps: int) -> L0Controller | None:
        """The controller ``recipe`` asks for, or None (a fixed weight: no ``target_l0``, or no penalty weight)."""
        if not isinstance(recipe, L0TargetConfig) or recipe.target_l0 is None:
            return None
        name = recipe.calibrated_coeff
        start = float(getattr(recipe, name))
        if start <= 0:
            raise ValueError(f"{name}: {start} cannot be calibrated to target_l0={recipe.target_l0}; give it a "
                             "starting value > 0, or set target_l0 to null to keep it fixed")
        if recipe.target_l0 >= d_sae:
            raise ValueError(f"target_l0: {recipe.target_l0} is not below d_sae={d_sae}; expected a number in "
                             f"(0, {d_sae}): the active latents per token")
        factors = [_lr_factor(step, n_train_steps, recipe) for step in range(n_train_steps)]
        n_steps = math.ceil(recipe.l0_calibration_fraction * n_train_steps)
        return cls(name, float(recipe.target_l0), float(recipe.l0_calibration_gain), n_steps,
                   recipe.lr_warmup_steps, start, start, math.fsum(factors[n_steps:]), factors)

    @property
    def value(self) -> float:
        return self.weight

    def update(self, step: int, l0: float) -> None:
        """Step ``step``'s batch had ``l0`` active latents per token: set the weight for step ``step + 1``."""
        self.last_l0 = l0
        if step < self.first_step or step + 1 >= self.n_steps:
            return
        y = math.log(l0 + 1.0)
        if self.trend_mean is None:
            self.trend_mean = y
        else:
            previous = self.trend_mean
            self.trend_mean = L0_TREND_BETA * previous + (1.0 - L0_TREND_BETA) * y
            rate = (self.trend_mean - previous) / self.lr_factors[step]
            self.trend_slope = L0_TREND_BETA * self.trend_slope + (1.0 - L0_TREND_BETA) * rate
        forecast = self.trend_mean + self.trend_slope * self.horizon
        error = max(-1.0, min(1.0, forecast - math.log(self.target_l0 + 1.0)))
        self.weight *= math.exp(self.gain * error)

    def record(self) -> dict[str, Any]:
        """What the trained SAE's config records besides the calibrated weight itself."""
        return {"target_l0": self.target_l0, "coeff": self.coeff, "initial": self.initial,
                "adjusted_from_step": self.first_step, "frozen_from_step": max(0, self.n_steps - 1),
                "last_batch_l0": self.last_l0}

    _STATE = ("weight", "trend_mean", "trend_slope", "last_l0")

    def state(self) -> dict[str, Any]:
        return {"coeff": self.coeff, **{name: getattr(self, name) for name in self._STATE}}

    def load(self, state: Any, path: Path) -> None:
        """Restore :meth:`state` from a resumable training state in ``path`` (refused, naming it, if malformed)."""
        optional = ("trend_mean", "last_l0")
        if not isinstance(state, dict) or state.get("coeff") != self.coeff or not all(
                isinstance(state.get(name), float) or (name in optional and state.get(name) is None)
                for name in self._STATE):
            raise _damaged(path, f"state.json: l0_controller is {state!r}, expected the {self.coeff} controller state")
        for name in self._STATE:
            setattr(self, name, state[name])


@dataclass
class _RunState:
    """Everything that changes during training besides the model parameters."""

    step: int
    scale: float
    tokens_since_fired: torch.Tensor
    loss_log: list[dict[str, float]]
    controller: L0Controller | None = None


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
        "l0_controller": run.controller.state() if run.controller is not None else None,
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


def _load_state(path: Path, sae: DictionarySAE, opt: torch.optim.Optimizer, fingerprint: dict,
                controller: L0Controller | None) -> _RunState:
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
    if controller is not None:
        controller.load(meta.get("l0_controller"), path)
    return _RunState(meta["step"], meta["scale"], tensors["tokens_since_fired"], meta["loss_log"], controller)


def _initial_state(sae: DictionarySAE, tokens: Any, recipe: SAERecipeBase, seed: int,
                   controller: L0Controller | None) -> _RunState:
    """Input scale (mean norm -> sqrt(d_in)), data-mean decoder bias and the recipe's encoder scale, from a seeded
    sample."""
    n_images, n_patches, d_in = tokens.shape
    rng = np.random.default_rng([seed, 2**31 - 1])
    flat = np.sort(rng.choice(n_images * n_patches, size=min(_SCALE_SAMPLE, n_images * n_patches), replace=False))
    sample = _read_tokens(tokens, flat // n_patches, flat % n_patches, 1.0)
    scale = math.sqrt(d_in) / float(sample.norm(dim=1).mean()) if recipe.normalize_activations else 1.0
    sae.initialise(torch.Generator().manual_seed(seed), data_mean=sample.mean(0) * scale,
                   encoder_scale=recipe.encoder_init_scale)
    return _RunState(0, scale, torch.zeros(sae.d_sae, dtype=torch.long), [], controller)


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

    Recipes with a penalty weight and ``target_l0`` (ReLU, JumpReLU) calibrate that weight during the
    first ``l0_calibration_fraction`` of the steps (:class:`L0Controller`); the SAE's config then holds
    the calibrated weight under the recipe's field name and ``l0_calibration`` (target, starting weight,
    calibration steps, last batch L0).
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
    controller = L0Controller.for_recipe(recipe, sae.d_sae, n_steps)
    opt = torch.optim.Adam(sae.parameters(), lr=recipe.lr, betas=recipe.adam_betas)
    state_dir = Path(checkpoint_dir) / STATE_DIR if checkpoint_dir is not None else None
    if state_dir is not None and resume and (state_dir / "state.json").is_file():
        run = _load_state(state_dir, sae, opt, fingerprint, controller)
    else:
        run = _initial_state(sae, tokens, recipe, seed, controller)
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
        if controller is not None:
            sae.hparams[controller.coeff] = controller.value
        parts, fired = optimisation_step(sae, opt, x, dead, lr)
        if controller is not None:
            parts[controller.coeff] = controller.value
            controller.update(step, parts["l0"])
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
    if controller is not None:  # the config records the weight the SAE was trained with last, and how it was set
        sae.hparams[controller.coeff] = controller.value
        sae.hparams["l0_calibration"] = controller.record()
    with torch.no_grad():
        sae.fold_input_scale_(run.scale)
    if checkpoint_dir is not None and run.step == n_steps:
        save_sae(sae, Path(checkpoint_dir) / SAE_DIR)
        write_json_atomic(Path(checkpoint_dir) / LOSS_LOG_FILE, run.loss_log)
    return TrainResult(sae=sae, loss_log=run.loss_log)
