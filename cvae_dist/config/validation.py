"""Whether a run's settings may go together: each setting by its meaning, then the rules between settings."""

from __future__ import annotations

from collections.abc import Iterator

from cvae_dist.config.option import is_flag, setting_label
from cvae_dist.config.sections import Config, options
from cvae_dist.errors import UserError


def validate(config: Config, sources: dict[str, str] | None = None) -> None:
    """Every setting by its meaning, then the rules between settings. The first broken rule is a
    UserError naming the setting; `sources` says where each explicit setting came from."""
    sources = sources or {}
    settings = config.flat()
    for name, option in options().items():
        problem = option.problem(settings[name])
        if problem:
            raise UserError(f"{setting_label(name, sources.get(name))} {problem}, got {settings[name]!r}")
    for names, problem in _conflicts(config):
        # Named as flags in the message; a file any of them came from goes in front.
        files = [source for n in names if (source := sources.get(n)) is not None and not is_flag(source)]
        raise UserError(f"{files[0]}: {problem}" if files else problem)


def _conflicts(config: Config) -> Iterator[tuple[tuple[str, ...], str]]:
    """The rules between settings: (the settings involved, what is wrong) for each one broken."""
    model, train = config.model, config.train
    fused = model.F_dim + model.L_dim + model.N_dim
    if fused % 4:
        yield ("F_dim", "L_dim", "N_dim"), f"--F_dim + --L_dim + --N_dim must be a multiple of 4 (the decoder fusion quarters it), got {fused}"
    if not model.logvar_min < model.logvar_max:
        yield ("logvar_min", "logvar_max"), f"--logvar_min ({model.logvar_min}) must be below --logvar_max ({model.logvar_max})"
    if train.compile_mode != "default" and train.compile_backend != "inductor":
        yield (
            ("compile_mode", "compile_backend"),
            f"--compile_mode {train.compile_mode} is inductor's: it needs --compile_backend inductor, got {train.compile_backend}",
        )
    if train.overwrite and train.resume_from_checkpoint:
        yield ("overwrite", "resume_from_checkpoint"), "--overwrite and --resume_from_checkpoint contradict each other: choose one"
