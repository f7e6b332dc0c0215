"""The ``avfusion`` command: one verb per job.

A thin layer: it parses options, calls the library, shows progress and maps every
``AVFusionError`` to a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

import avfusion
from avfusion.errors import AVFusionError

app = typer.Typer(
    name="avfusion",
    help="Multisensor fusion for autonomous driving: fused frames, occupancy ground truth, label and calibration QA.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

DEFAULT_SAMPLE_DATA = Path("sample_data")

#: The stages of the main job, in order, with the issue that builds each. `demo` runs the ones
#: that exist and names the rest; the list shrinks as the work lands.
NOT_BUILT_YET: list[tuple[str, str]] = [
    ("sync report, LiDAR deskew, clock-offset estimation", "issue 5"),
    ("motion-compensated projection, depth maps, painting", "issue 6"),
    ("occupancy ground truth", "issue 7"),
    ("calibration check", "issue 8"),
    ("cross-modal label checks", "issue 9"),
    ("HTML QA report", "issue 10"),
]


def _synth_entry(name: str) -> Callable[..., Any] | None:
    """An entry point of ``avfusion.synth`` (the synthetic world), or None while it is not built."""
    import importlib

    try:
        module = importlib.import_module("avfusion.synth")
    except ModuleNotFoundError:
        return None
    entry = getattr(module, name, None)
    return entry if callable(entry) else None


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"avfusion {avfusion.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@contextmanager
def _stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    with console.status(f"[bold]{name}[/] ..."):
        yield
    console.print(f"[green]✓[/] {name} [dim]({time.perf_counter() - start:.1f} s)[/]")


def _progress_printer(label: str) -> Callable[[int, int], None]:
    """A progress callback (done, total) that redraws one line on the terminal."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeRemainingColumn

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task: list[Any] = []

    def update(done: int, total: int) -> None:
        if not task:
            progress.start()
            task.append(progress.add_task(label, total=total))
        progress.update(task[0], completed=done, total=total)
        if done >= total:
            progress.stop()

    return update


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the synthetic log into.")],
    seconds: Annotated[float, typer.Option(help="Length of the recording in seconds.")] = 8.0,
    seed: Annotated[int, typer.Option(help="Random seed of the world and the sensor noise.")] = 0,
    inject_errors: Annotated[
        str | None,
        typer.Option(
            "--inject-errors",
            help="Label errors to inject, e.g. 'missing=2,shrink=1' (see README).",
        ),
    ] = None,
) -> None:
    """Generate a deterministic synthetic driving log with exact ground truth."""
    generate = _synth_entry("generate")
    if generate is None:
        raise AVFusionError("avfusion synth: the synthetic world is not built yet (issue 3)")
    start = time.perf_counter()
    summary = generate(
        out,
        seconds=seconds,
        seed=seed,
        inject_errors=inject_errors,
        progress=_progress_printer("simulating"),
    )
    console.print(
        f"[green]✓[/] wrote synthetic log to [bold]{out}[/] in {time.perf_counter() - start:.1f} s"
    )
    if summary:
        console.print(summary)


@app.command()
def info(
    path: Annotated[
        Path, typer.Argument(help="A log: nuScenes-style root (more formats as readers land).")
    ],
) -> None:
    """Print what a log holds: sensors, frames, time span."""
    from avfusion.io import open_log

    log = open_log(path)
    _print_log_summary(log, path)


def _print_log_summary(log: Any, path: Path) -> None:
    table = Table(title=f"{path}", show_lines=False)
    for col in ("sensor", "modality", "samples", "rate (Hz)", "camera"):
        table.add_column(col)
    for name, sensor in sorted(log.sensors.items()):
        t = log.timestamps(name)
        rate = (
            (len(t) - 1) / ((t[-1] - t[0]) / 1e9) if len(t) > 1 and t[-1] > t[0] else float("nan")
        )
        cam = (
            f"{sensor.camera.width}x{sensor.camera.height} {sensor.camera.distortion}"
            if sensor.camera
            else ""
        )
        table.add_row(
            name, sensor.modality, str(len(t)), "-" if np.isnan(rate) else f"{rate:.1f}", cam
        )
    console.print(table)
    poses = log.poses
    console.print(
        f"{len(log)} frames; pose track {len(poses)} samples over {(poses.end_ns - poses.start_ns) / 1e9:.2f} s"
    )


@app.command()
def demo(
    data: Annotated[
        Path, typer.Option(help="Where the sample log lives (generated when missing).")
    ] = DEFAULT_SAMPLE_DATA,
) -> None:
    """Run the main job end to end on sample_data/, as far as it is built, and say where outputs are."""
    start = time.perf_counter()
    console.print(f"[bold]avfusion {avfusion.__version__} demo[/] on {data}")
    ensure_sample_data = _synth_entry("ensure_sample_data")
    nuscenes_root: Path | None = None
    if ensure_sample_data is None:
        console.print("[yellow]•[/] synthetic sample data: not built yet (issue 3)")
    else:
        with _stage("sample data (synthetic world, generated once)"):
            nuscenes_root = ensure_sample_data(data)
        console.print(f"  log: {nuscenes_root}")
    if nuscenes_root is not None:
        from avfusion.io import open_log

        with _stage("read the log"):
            log = open_log(nuscenes_root)
            frame = log[0]
        _print_log_summary(log, nuscenes_root)
        console.print(
            f"  frame 0: {len(frame.points)} point clouds, {len(frame.images)} images, "
            f"{0 if frame.boxes3d is None else len(frame.boxes3d)} 3D boxes"
        )
        _demo_stream_matching(log)
    for stage, issue in NOT_BUILT_YET:
        console.print(f"[yellow]•[/] {stage}: not built yet ({issue})")
    console.print(
        f"demo finished in {time.perf_counter() - start:.1f} s; outputs: {data.resolve()}"
    )


def _demo_stream_matching(log: Any) -> None:
    """Match every stream to the reference LiDAR stream (nearest stamp, 50 ms) and print the spread."""
    from avfusion.calibration.timesync import match_nearest

    ref = next((n for n, s in log.sensors.items() if s.modality == "lidar"), None)
    if ref is None:
        return
    ref_t = log.timestamps(ref)
    table = Table(title=f"nearest-stamp matching to {ref} ({len(ref_t)} sweeps, tolerance 50 ms)")
    for col in ("sensor", "matched", "median |Δt| (ms)", "max |Δt| (ms)"):
        table.add_column(col)
    for name, sensor in sorted(log.sensors.items()):
        if name == ref:
            continue
        m = match_nearest(
            ref_t, log.timestamps(name) + sensor.time_offset_ns, 50_000_000, what=name
        )
        d = np.abs(m.diff_ns[m.matched]) / 1e6
        med = f"{np.median(d):.1f}" if d.size else "-"
        mx = f"{d.max():.1f}" if d.size else "-"
        table.add_row(name, f"{int(m.matched.sum())}/{len(ref_t)}", med, mx)
    console.print(table)


def main() -> None:
    """Entry point: run the app, mapping library errors to one line and exit code 2."""
    try:
        app()
    except AVFusionError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":  # pragma: no cover
    main()
