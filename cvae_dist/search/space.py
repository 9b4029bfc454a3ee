"""Search files: the settings a search varies, those it holds fixed, its objective, budget, sampler and pruner.

```yaml
n_trials: 16              # the budget, counted over every worker
objective: best           # best: a trial's best per-epoch validation PSNR (val/psnr); last: its last epoch's
sampler: {name: TPE, seed: 0}                 # a class of optuna.samplers, less "Sampler", and its arguments
pruner: {name: Median, n_startup_trials: 4}   # a class of optuna.pruners, less "Pruner" (Median, Hyperband, ...), or None
heartbeat_interval: 60    # seconds between a running trial's heartbeats
grace_period: 300         # seconds without one after which a running trial is dead: failed, then retried
max_retry: 2              # how often a dead trial is retried
fixed:                    # settings of every trial, named as in --config files
  preset: tiny
space:                    # the settings searched, each an Optuna distribution
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}     # also: step
  kl_anneal_cycle: {type: int, low: 1, high: 4}               # also: log, step
  kl_anneal_type: {type: categorical, choices: [Cyclical, Monotonic]}
enqueue:                  # trials to run first, before the sampler proposes any (a known recipe, say)
  - {lr: 0.002, kl_anneal_cycle: 1, kl_anneal_type: Monotonic}
```

Every setting and every bound or choice is checked against the training flags when the file is
read (with the fixed settings, so that the rules between settings hold too), so a typo or a bound
training would refuse fails before a worker starts.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from cvae_dist.config import current_name, options, read_yaml, resolve
from cvae_dist.errors import UserError
from cvae_dist.sweep import point_flags

# Settings the search sets for each trial itself: where it writes, and whether it resumes.
MANAGED = ("save_root", "logging_dir", "resume_from_checkpoint", "overwrite", "test")
OBJECTIVES = ("best", "last")
KINDS = {"float": (FloatDistribution, ("low", "high", "log", "step")), "int": (IntDistribution, ("low", "high", "log", "step"))}
KINDS["categorical"] = (CategoricalDistribution, ("choices",))
KEYS = ("n_trials", "objective", "sampler", "pruner", "heartbeat_interval", "grace_period", "max_retry", "fixed", "space", "enqueue")


@dataclass(frozen=True)
class Search:
    """A search file, checked against the training flags."""

    path: Path
    """The file."""
    name: str
    """The Optuna study's name: the file's stem."""
    fixed: dict[str, Any]
    """Settings of every trial, by their current names."""
    space: dict[str, BaseDistribution]
    """The settings searched, each as the Optuna distribution its values are drawn from."""
    n_trials: int = 16
    """The budget: trials run by all workers together (a dead trial's retry does not count again)."""
    objective: str = "best"
    """`best`: a trial's best per-epoch validation PSNR; `last`: the PSNR of its last epoch."""
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "TPE", "seed": 0})
    """An Optuna sampler: `name` (class of optuna.samplers less "Sampler") and its arguments."""
    pruner: dict[str, Any] | None = field(default_factory=lambda: {"name": "Median"})
    """An Optuna pruner, as `sampler` (None: trials are never pruned); it sees each epoch's validation PSNR."""
    heartbeat_interval: int = 60
    """Seconds between the heartbeats a worker records for its running trial."""
    grace_period: int = 300
    """Seconds without a heartbeat after which a running trial counts as dead (its worker killed outright)."""
    max_retry: int = 2
    """How many times a dead trial is retried; the retry goes on from the dead trial's checkpoint."""
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    """Trials to run before the sampler proposes any, each a mapping of searched setting -> value."""

    def make_sampler(self, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
        """The sampler; with a seed, seeded with seed + `seed_offset` (workers pass distinct offsets)."""
        kwargs = {k: v for k, v in self.sampler.items() if k != "name"}
        if kwargs.get("seed") is not None:
            kwargs["seed"] += seed_offset
        return _optuna_class("sampler", self.sampler["name"], self.path)(**kwargs)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        """The pruner (Optuna's NopPruner for none); Hyperband's budget defaults to the trials' --num_epoch."""
        if self.pruner is None:
            return optuna.pruners.NopPruner()
        kwargs = {k: v for k, v in self.pruner.items() if k != "name"}
        if self.pruner["name"] == "Hyperband":
            kwargs.setdefault("max_resource", resolve({k: (v, "fixed") for k, v in self.fixed.items()}).train.num_epoch)
        return _optuna_class("pruner", self.pruner["name"], self.path)(**kwargs)

    def trial_settings(self, params: dict[str, Any]) -> dict[str, Any]:
        """The settings of a trial with these searched values."""
        return {**self.fixed, **params}

    def trial_flags(self, params: dict[str, Any]) -> list[str]:
        """cvae_dist/train.py flags of a trial with these searched values."""
        return point_flags(self.trial_settings(params))

    def identity(self) -> dict[str, Any]:
        """What makes a study this search: its fixed settings, space and objective (a budget may grow)."""
        return {
            "fixed": {k: repr(v) for k, v in sorted(self.fixed.items())},
            "space": {k: optuna.distributions.distribution_to_json(d) for k, d in sorted(self.space.items())},
            "objective": self.objective,
        }


def load_search(path: str | Path) -> Search:
    """Read and check a search file."""
    path = Path(path)
    data = read_yaml(path, label=f"search {path}")
    for key in data:
        if key not in KEYS:
            raise UserError(f"{path}: unknown key {key!r}{_did_you_mean(str(key), KEYS)}; a search file has {', '.join(KEYS)}")
    if not isinstance(data.get("space"), dict) or not data["space"]:
        raise UserError(f"{path}: 'space' must be a non-empty mapping of setting: {{type: float|int|categorical, ...}}")
    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise UserError(f"{path}: 'fixed' must be a mapping of setting: value")
    fixed = {_setting(path, "fixed", k): v for k, v in fixed.items()}
    resolve({k: (v, f"{path} fixed") for k, v in fixed.items()})  # raises a UserError naming the setting
    space = {}
    for raw_name, spec in data["space"].items():
        name = _setting(path, "space", raw_name)
        if name in fixed:
            raise UserError(f"{path}: {name} is both fixed and searched")
        if options()[name].bookkeeping:
            raise UserError(f"{path} space: {name} says where or how often a run writes, not what it learns; it cannot be searched")
        space[name] = _distribution(path, name, spec, fixed)
    search = Search(
        path=path,
        name=path.stem,
        fixed=fixed,
        space=space,
        **{k: data[k] for k in ("n_trials", "objective", "heartbeat_interval", "grace_period", "max_retry") if k in data},
        **{k: _class_spec(path, k, data[k]) for k in ("sampler", "pruner") if k in data},
        enqueue=_enqueued(path, data.get("enqueue") or [], space),
    )
    _check_numbers(search)
    search.make_sampler(), search.make_pruner()  # wrong arguments fail now, not in a worker
    return search


def _setting(path: Path, where: str, name: Any) -> str:
    """A setting's current name, or a UserError for one training does not have."""
    name = current_name(str(name))
    if name not in options():
        raise UserError(f"{path} {where}: unknown setting {name!r}{_did_you_mean(name, options())}")
    if name in MANAGED:
        raise UserError(f"{path} {where}: {name} is set by the search for each trial (its run folder, and whether it resumes)")
    return name


def _did_you_mean(name: str, names) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _distribution(path: Path, name: str, spec: Any, fixed: dict[str, Any]) -> BaseDistribution:
    """A searched setting's Optuna distribution, every bound or choice checked as a training value."""
    label = f"{path} space: {name}"
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        raise UserError(f"{label}: expected {{type: float|int|categorical, ...}}, got {spec!r}")
    kind = spec["type"]
    cls, allowed = KINDS[kind]
    extra = set(spec) - {"type", *allowed}
    if extra:
        raise UserError(f"{label}: a {kind} distribution takes {', '.join(allowed)}, not {', '.join(sorted(extra))}")
    option = options()[name]
    base = option.base_type
    if kind != "categorical" and base is not (float if kind == "float" else int):
        wanted = {float: "float", int: "int"}.get(base, "categorical")
        raise UserError(f"{label}: the setting is {option.type if wanted == 'categorical' else wanted}: use type: {wanted}")
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    if kind == "categorical":
        if not isinstance(kwargs.get("choices"), list) or not kwargs["choices"]:
            raise UserError(f"{label}: choices must be a non-empty list")
        kwargs["choices"] = [option.coerce(choice, label) for choice in kwargs["choices"]]
        values = kwargs["choices"]
    else:
        if "low" not in kwargs or "high" not in kwargs:
            raise UserError(f"{label}: a {kind} distribution needs low and high")
        for bound in ("low", "high"):  # YAML reads 1e-4 (no dot) as text: convert it as training would
            kwargs[bound] = option.coerce(kwargs[bound], f"{label} {bound}")
        values = [kwargs["low"], kwargs["high"]]
    for value in values:
        resolve({**{k: (v, f"{path} fixed") for k, v in fixed.items()}, name: (value, f"{path} space")})
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:  # low > high, log with low <= 0, log with a step, a choice of a list
        raise UserError(f"{label}: {err}") from None


def _class_spec(path: Path, key: str, spec: Any) -> dict[str, Any] | None:
    """`{name: TPE, seed: 0}` (or just `TPE`) as a mapping; `None` only for a pruner."""
    if key == "pruner" and spec in (None, "None", "none"):
        return None
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise UserError(f"{path}: {key} must be a name or a mapping with 'name' and the {key}'s arguments, got {spec!r}")
    _optuna_class(key, spec["name"], path)
    return spec


def _optuna_class(kind: str, name: str, path: Path) -> type:
    """The class optuna.samplers.<name>Sampler (or pruners.<name>Pruner), checked to exist."""
    module = optuna.samplers if kind == "sampler" else optuna.pruners
    suffix = kind.capitalize()
    names = [n[: -len(suffix)] for n in dir(module) if n.endswith(suffix) and not n.startswith("Base")]
    cls = getattr(module, f"{name}{suffix}", None)
    if not inspect.isclass(cls) or name not in names:
        raise UserError(f"{path}: {kind} {name!r} is not one of Optuna's: {', '.join(sorted(names))}")
    return cls


def _enqueued(path: Path, trials: Any, space: dict[str, BaseDistribution]) -> list[dict[str, Any]]:
    if not isinstance(trials, list) or not all(isinstance(t, dict) for t in trials):
        raise UserError(f"{path}: enqueue must be a list of mappings of searched setting: value")
    checked = []
    for index, trial in enumerate(trials):
        label = f"{path} enqueue {index}"
        values = {}
        for raw_name, value in trial.items():
            name = _setting(path, f"enqueue {index}", raw_name)
            if name not in space:
                raise UserError(f"{label}: {name} is not searched (only the space's settings can be enqueued)")
            value = options()[name].coerce(value, f"{label}: {name}")
            distribution = space[name]
            inside = (
                value in distribution.choices if isinstance(distribution, CategoricalDistribution) else distribution.low <= value <= distribution.high
            )
            if not inside:
                raise UserError(f"{label}: {name} {value!r} is outside its distribution {distribution}")
            values[name] = value
        checked.append(values)
    return checked


def _check_numbers(search: Search) -> None:
    for key in ("n_trials", "heartbeat_interval", "grace_period", "max_retry"):
        value, least = getattr(search, key), 0 if key == "max_retry" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UserError(f"{search.path}: {key} must be a whole number >= {least}, got {value!r}")
    if search.grace_period <= search.heartbeat_interval:
        raise UserError(
            f"{search.path}: grace_period ({search.grace_period} s) must be longer than heartbeat_interval ({search.heartbeat_interval} s)"
        )
    if search.objective not in OBJECTIVES:
        raise UserError(f"{search.path}: objective must be one of {', '.join(OBJECTIVES)}, got {search.objective!r}")


def describe(search: Search) -> str:
    """The budget, space, fixed settings, objective, sampler and pruner, for --list."""
    lines = [f"study {search.name}: {search.n_trials} trials, maximising the {search.objective} per-epoch validation PSNR (val/psnr)"]
    lines.append(f"sampler {_spec_text(search.sampler)}; pruner {_spec_text(search.pruner)} (steps: epochs)")
    lines.append(
        f"a running trial without a heartbeat for {search.grace_period} s (one every {search.heartbeat_interval} s) is retried, up to {search.max_retry} times"
    )
    lines.append("space:")
    lines += [f"  {name}\t{distribution}" for name, distribution in search.space.items()]
    lines.append(f"fixed: {' '.join(point_flags(search.fixed)) or '(nothing)'}")
    lines += [f"enqueued {index}: {' '.join(point_flags(trial))}" for index, trial in enumerate(search.enqueue)]
    return "\n".join(lines)


def _spec_text(spec: dict[str, Any] | None) -> str:
    if spec is None:
        return "None"
    arguments = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}({arguments})"
