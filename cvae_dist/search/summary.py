"""A search's results: its trials as a table, best first, and Optuna's own figures of the study.

The table goes to stdout and to `<root>/search_summary.md`; the figures (Optuna's matplotlib
visualisation) to `<root>/optimization_history.png`, `param_importances.png` and `parallel_coordinate.png`.
Every trial is also an ordinary run folder, so `python -m cvae_dist.tb_summary ROOT` compares them
as it compares a sweep's points, with their settings from TensorBoard's HParams records.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cvae_dist.search.space import Search
from cvae_dist.search.study import AWAITING_REQUEUE, RUN, retry_history

SUMMARY = "search_summary.md"
FIGURES = ("optimization_history", "param_importances", "parallel_coordinate")
# Trials in the table: finished ones by value, best first; then the others by number.
ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.WAITING: 3, TrialState.FAIL: 4}


def rows(study: optuna.Study, search: Search) -> list[dict[str, str]]:
    """One row per trial: its number, state, PSNR, epochs run, searched values and run folder."""
    trials = study.get_trials(deepcopy=False)
    retries = {retry_history(t)[-1]: t.number for t in trials if retry_history(t)}
    ranked = sorted(trials, key=lambda t: (ORDER[t.state], -(t.value if t.value is not None else float("-inf")), t.number))
    table = []
    for trial in ranked:
        row = {"trial": str(trial.number), "state": _state(trial, retries), "PSNR (dB)": "" if trial.value is None else f"{trial.value:.2f}"}
        row["epochs"] = str(len(trial.intermediate_values))
        row.update({name: _value(trial.params.get(name)) for name in search.space})
        row["run"] = str(trial.user_attrs.get(RUN, ""))
        table.append(row)
    return table


def _state(trial: FrozenTrial, retries: dict[int, int]) -> str:
    text = trial.state.name.lower()
    if trial.state == TrialState.RUNNING and trial.user_attrs.get(AWAITING_REQUEUE):
        return f"{text} (awaiting its task's requeue)"
    if trial.state == TrialState.FAIL and trial.number in retries:
        return f"{text} (retried as {retries[trial.number]})"
    if trial.state == TrialState.FAIL and "exit_status" in trial.user_attrs:
        return f"{text} (exit {trial.user_attrs['exit_status']})"
    return text


def _value(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(table: list[dict[str, str]]) -> str:
    """The rows as a Markdown table."""
    header = list(table[0])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row[column] for column in header) + " |" for row in table]
    return "\n".join(lines) + "\n"


def summarise(study: optuna.Study, search: Search, root: Path) -> str:
    """The trials' table (also written to ROOT/search_summary.md) and the figures' notes, as printed."""
    table = rows(study, search)
    if not table:
        return f"study {search.name}: no trials yet\n"
    complete = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    head = f"study {search.name}: {len(table)} trials ({complete} complete) of a budget of {search.n_trials}; {search.objective} validation PSNR per trial\n\n"
    text = head + markdown(table)
    root.mkdir(parents=True, exist_ok=True)
    (root / SUMMARY).write_text(text)
    return text + "\n" + "\n".join(write_figures(study, root, complete)) + "\n"


def write_figures(study: optuna.Study, root: Path, complete: int) -> list[str]:
    """Optuna's figures of the study as PNGs under `root`; returns a line per figure (written, or why not)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    notes = []
    for name in FIGURES:
        path = root / f"{name}.png"
        needed = 2 if name == "param_importances" else 1
        if complete < needed:
            notes.append(f"{path.name}: skipped, it needs {needed} complete trials ({complete} so far)")
            continue
        # Optuna's plots switch the whole process to matplotlib's ggplot style (plt.style.use): kept to
        # these figures, so that the figures drawn after them in the same process (a report's) look as they should.
        with warnings.catch_warnings(), matplotlib.rc_context():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the plots' API may change; their files will not
            warnings.simplefilter("ignore", UserWarning)  # matplotlib's, for an axis whose trials all share one value
            try:
                axes = getattr(plots, f"plot_{name}")(study)
            except (RuntimeError, ValueError) as err:  # e.g. importances of values that do not vary
                notes.append(f"{path.name}: skipped ({err})")
                continue
            figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
            figure.savefig(path, dpi=120, bbox_inches="tight")
            plt.close(figure)
        notes.append(f"wrote {path}")
    return notes
