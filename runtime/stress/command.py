"""``wasmhive stress SCENARIO.toml``: the stress harness on the command line.

Exit status: 0 every invariant valid; 1 some invariant invalid; 2 a bad
scenario or bad options; 3 none invalid but some unknown; 4 the harness
itself failed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import click

from .daemon_target import DaemonTarget
from .embedded import EmbeddedTarget
from .progress import Progress
from .report import StressReport, exit_status
from .runner import run_stress
from .scenario import ScenarioError, load_scenario
from .target import Target

__all__ = ["stress"]

#: A bad scenario or bad options (as click's own usage errors).
EXIT_USAGE = 2
#: The harness failed (a bug, or the target could not be run).
EXIT_HARNESS = 4


@click.command("stress")
@click.argument("scenario_file", metavar="SCENARIO.toml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--target",
    default="embedded",
    show_default=True,
    help="Where the functions run: embedded (this process), daemon (a wasmhive serve the harness starts, "
    "kills and restarts), or the URL of a running daemon where they are deployed.",
)
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Measured seconds (after the warm-up).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Open loop at this many requests/s.")
@click.option("--concurrency", type=click.IntRange(min=1), help="Closed loop with this many callers.")
@click.option("--seed", type=int, help="The seed of the load and the fault schedule.  [default: the scenario's]")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write report.json and report.html here.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress display; only the verdicts.")
def stress(
    scenario_file: Path,
    target: str,
    duration: float | None,
    rate: float | None,
    concurrency: int | None,
    seed: int | None,
    report_dir: Path | None,
    quiet: bool,
) -> None:
    """Run a stress scenario: load, injected faults, and a check of every invariant.

    Exit status: 0 all invariants valid, 1 one is invalid, 2 bad scenario or
    options, 3 none invalid but some unknown, 4 the harness failed.  See
    docs/stress.md.
    """
    if rate is not None and concurrency is not None:
        raise click.UsageError("give --rate (open loop) or --concurrency (closed loop), not both")
    make_target = _target_factory(target)
    try:
        scenario = load_scenario(scenario_file).with_overrides(
            duration=duration, rate=rate, concurrency=concurrency, seed=seed
        )
    except ScenarioError as exc:
        click.echo(f"error: {scenario_file}: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    progress = Progress(refresh=0.25, every=5.0) if not quiet else None
    # Injected faults make the runtime log every crash and failing host call: keep the terminal readable.
    logging.getLogger("wasmhive").setLevel(logging.CRITICAL)

    async def main() -> StressReport:
        return await run_stress(scenario, target=make_target(), report_dir=report_dir, progress=progress)

    try:
        report = anyio.run(main, backend="trio")
    except ScenarioError as exc:
        click.echo(f"error: {scenario_file}: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except Exception as exc:
        click.echo(f"error: the stress harness failed: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_HARNESS)
    if quiet:
        for inv in report.invariants:
            click.echo(f"{inv.verdict.upper():8} {inv.name}: {inv.detail}")
        click.echo(f"verdict: {report.verdict}")
    if report_dir is not None:
        click.echo(f"report: {report_dir / 'report.html'}", err=True)
    sys.exit(exit_status(report.verdict))


def _target_factory(target: str) -> Callable[[], Target]:
    """What ``--target`` names: embedded, daemon, or the URL of a running daemon."""
    if target == "embedded":
        return EmbeddedTarget
    if target == "daemon":
        return DaemonTarget
    if target.startswith(("http://", "https://")):
        return lambda: DaemonTarget(target)
    raise click.UsageError(f"unknown target {target!r}: use embedded, daemon, or http://HOST:PORT")
