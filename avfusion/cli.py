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


def _progress_printer(label: str) -> Callable[..., None]:
    """A progress callback ``(done, total, *what)`` that redraws one bar on the terminal."""
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

    def update(done: int, total: int, *what: object) -> None:
        if not task:
            progress.start()
            task.append(progress.add_task(label, total=total))
        detail = f"{label} {what[0]}" if what else label
        progress.update(task[0], completed=done, total=total, description=detail)
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
            help="Label errors to inject: 'none', 'default' or e.g. 'missing=0.1,id_switch=1' "
            "(see sample_data/README.md).",
        ),
    ] = None,
) -> None:
    """Generate a deterministic synthetic driving log with exact ground truth."""
    from avfusion.synth import generate

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
    console.print(summary.as_dict())


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
    from avfusion.io import open_log
    from avfusion.synth import ensure_sample_data

    console.print("[bold]sample data[/] (synthetic world, generated once, about 30-60 s)")
    nuscenes_root = ensure_sample_data(data, progress=_progress_printer("simulating"))
    console.print(f"[green]✓[/] log: {nuscenes_root}")
    with _stage("read the log"):
        log = open_log(nuscenes_root)
        frame = log[0]
    _print_log_summary(log, nuscenes_root)
    console.print(
        f"  frame 0: {len(frame.points)} point clouds, {len(frame.images)} images, "
        f"{0 if frame.boxes3d is None else len(frame.boxes3d)} 3D boxes, "
        f"{sum(len(b) for b in frame.boxes2d.values())} 2D boxes"
    )
    if hasattr(log, "aggregate_sweeps"):
        mid = len(log) // 2
        with _stage(f"aggregate 10 LiDAR sweeps at keyframe {mid}"):
            agg = log.aggregate_sweeps(mid, n_sweeps=10)
        console.print(
            f"  {len(agg)} points from {int(agg.attrs['sweep'].max()) + 1} sweeps in LIDAR_TOP at t={agg.t_ns} ns"
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
