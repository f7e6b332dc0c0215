"""The ``avfusion`` command: one verb per job.

A thin layer: it parses options, calls the library, shows progress and maps every
``AVFusionError`` to a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import json
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
NOT_BUILT_YET: list[tuple[str, str]] = []


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


def _progress_printer(
    label: str, unit: str | None = None, *, transient: bool = True
) -> Callable[..., None]:
    """A progress callback ``(done, total, *what)`` that redraws one bar on the terminal.

    ``what[0]`` (when a non-empty string) is shown after the label. With ``unit`` the bar also
    shows done/total, the rate in ``unit``/s since the first call, and the elapsed time.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = ["[progress.description]{task.description}", BarColumn()]
    if unit is not None:
        columns += [MofNCompleteColumn(), TaskProgressColumn(), "{task.fields[rate]}",
                    TimeElapsedColumn(), "eta"]  # fmt: skip
    else:
        columns.append(TaskProgressColumn())
    columns.append(TimeRemainingColumn())
    progress = Progress(*columns, console=console, transient=transient)
    state: dict[str, Any] = {}

    def update(done: int, total: int, *what: object) -> None:
        if "task" not in state:
            progress.start()
            state.update(task=progress.add_task(label, total=total, rate=""),
                         start=time.perf_counter(), first=done)  # fmt: skip
        detail = f"{label} {what[0]}" if what and unit is None and what[0] else label
        ran, elapsed = done - state["first"], time.perf_counter() - state["start"]
        rate = f"{ran / elapsed:.2f} {unit}/s" if unit and ran and elapsed > 0 else ""
        progress.update(state["task"], completed=done, total=total, description=detail, rate=rate)
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
        Path,
        typer.Argument(
            help="A log: nuScenes-style root, KITTI folder, ROS1 .bag, rosbag2 folder or .mcap."
        ),
    ],
    rig: Annotated[
        Path | None,
        typer.Option(
            "--rig", help="Bags: also open the bag with this rig YAML and summarise its frames."
        ),
    ] = None,
    rig_out: Annotated[
        Path | None,
        typer.Option("--rig-out", help="Bags: write the suggested rig YAML to this file."),
    ] = None,
) -> None:
    """Print what a log holds: sensors, frames, time span. For a bag: topics, types, counts,
    rates, stamp ranges, tf frames and a suggested rig file."""
    from avfusion.io import open_log
    from avfusion.io.registry import detect_format

    fmt = detect_format(path) if path.exists() else None
    if fmt is not None and fmt.name in ("ros1", "mcap", "rosbag2"):
        _bag_info(path, rig, rig_out)
        return
    if rig_out is not None:
        from avfusion.errors import ConfigError

        raise ConfigError(f"--rig-out applies to bags; {path} is not a bag")
    log = open_log(path, rig=rig)
    _print_log_summary(log, path)


def _bag_info(path: Path, rig: Path | None, rig_out: Path | None) -> None:
    """Topics of a bag, its tf frames and a suggested rig (written to ``rig_out`` when given)."""
    from avfusion.io.rosbag import inspect_bag, suggest_rig

    with console.status(f"reading {path} ..."):
        bag = inspect_bag(path)
    table = Table(title=f"{path} ({'ROS 1' if bag.ros1 else 'ROS 2'})")
    table.add_column("topic", no_wrap=True)
    table.add_column("type", overflow="fold")
    for col in ("msgs", "Hz (median)", "header stamps (s)", "rec − stamp (s)", "frame"):
        table.add_column(col, overflow="fold")
    for t in bag.topics:
        rng = t.stamp_range_ns
        delay = t.median_delay_ns
        table.add_row(
            t.topic,
            t.msgtype.replace("/msg/", "/"),
            str(t.count),
            "-" if not np.isfinite(t.rate_hz) else f"{t.rate_hz:.2f}",
            "-" if rng is None else f"{rng[0] / 1e9:.3f} .. {rng[1] / 1e9:.3f}",
            "-" if delay is None else f"{delay / 1e9:+.3f}",
            t.frame_id,
        )
    console.print(table)
    static = ", ".join(f"{p}→{c}" for p, c in sorted(bag.tf_static)) or "none"
    dynamic = ", ".join(f"{p}→{c} ({n})" for (p, c), n in sorted(bag.tf_dynamic.items())) or "none"
    console.print(f"/tf_static: {static}")
    console.print(f"/tf: {dynamic}")
    suggested, text = suggest_rig(bag)
    console.print("[bold]suggested rig[/]")
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    if rig_out is not None:
        if suggested is None:
            from avfusion.errors import ConfigError

            raise ConfigError(
                f"{path}: no rig to write to {rig_out}: the bag has no usable sensor topic"
            )
        rig_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = rig_out.with_name(rig_out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(rig_out)
        console.print(f"[green]✓[/] wrote {rig_out}")
    if rig is not None:
        from avfusion.io.rosbag import BagLog

        with BagLog(path, rig) as log:
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
    outputs = data / "outputs"
    _demo_time_sync(log, outputs)
    _demo_projection(log, outputs)
    _demo_occupancy(nuscenes_root, outputs)
    synced = _demo_calibration_check(log, nuscenes_root, outputs)
    findings = _demo_label_checks(log, outputs)
    index = _demo_report(synced, outputs, findings)
    for stage, issue in NOT_BUILT_YET:
        console.print(f"[yellow]•[/] {stage}: not built yet ({issue})")
    console.print(
        f"demo finished in {time.perf_counter() - start:.1f} s; log: {nuscenes_root.resolve()}; "
        f"outputs: {outputs.resolve()}"
    )
    console.print(f"[bold]QA report:[/] open {index.resolve()}")


def _demo_calibration_check(log: Any, nuscenes_root: Path, outputs: Path) -> Any:
    """Calibration check of every camera against the LiDAR, with the clock offsets estimated
    earlier in the demo (clock_offsets.json); returns the log with those offsets."""
    from avfusion.calibration.extrinsics import SensorCalibration
    from avfusion.calibration.validation import check_calibration, check_settings
    from avfusion.io import open_log
    from avfusion.runner import atomic_write

    lidar = next((n for n, s in sorted(log.sensors.items()) if s.modality == "lidar"), None)
    cameras = [n for n, s in sorted(log.sensors.items()) if s.is_image]
    if lidar is None or not cameras:
        return log
    offsets_path = outputs / "clock_offsets.json"
    estimates = json.loads(offsets_path.read_text()) if offsets_path.is_file() else {}
    override = {}
    for name, s in log.sensors.items():
        est = estimates.get(name) or {}
        offset = est.get("offset_ns") if est.get("observable") else None
        override[name] = SensorCalibration(
            name, s.ego_from_sensor, int(offset) if offset is not None else s.time_offset_ns
        )
    synced = open_log(nuscenes_root, calibration=override)
    with _stage(f"calibration check of {len(cameras)} cameras against {lidar} (edge alignment)"):
        checks = check_calibration(synced, lidar=lidar, settings=check_settings(max_frames=20))
    doc = {"format_version": 1, "log": str(nuscenes_root), "lidar": lidar,
           "clock_offsets": "estimated (clock_offsets.json)",
           "sensors": {n: c.as_dict() for n, c in checks.items()}}  # fmt: skip
    path = outputs / "calibration_check.json"
    atomic_write(path, (json.dumps(doc, indent=1) + "\n").encode())
    for name, c in checks.items():
        mark = "[green]ok[/]" if c.ok else "[red]check[/]"
        flagged = f"{100 * c.flagged_fraction:.0f}% flagged"
        console.print(f"  {name}: {mark} ({c.n_frames} frames, {flagged})")
    console.print(f"  {path}")
    return synced


def _demo_label_checks(log: Any, outputs: Path) -> Path:
    """Cross-modal label checks over every keyframe -> findings.json."""
    from avfusion.fusion.consistency.check import run_checks
    from avfusion.fusion.consistency.report import write_findings_json
    from avfusion.viz.report import load_findings

    console.print("[bold]label checks[/] (boxes against LiDAR, radar, 2D boxes, tracks, occupancy)")
    report = run_checks(
        log, occupancy_dir=outputs / "occupancy",
        progress=_progress_printer("label checks", "frames", transient=False),
    )  # fmt: skip
    path = outputs / "findings.json"
    write_findings_json(path, report)
    levels = [f.level for f in load_findings(path)]
    console.print(
        f"[green]✓[/] {len(levels)} findings ({levels.count('high')} high, "
        f"{levels.count('medium')} medium, {levels.count('low')} low): {path}"
    )
    return path


def _demo_report(log: Any, outputs: Path, findings: Path | None) -> Path:
    """The HTML QA report of every keyframe from what the demo wrote (two worker processes)."""
    import os

    from avfusion.viz.report import build_report

    console.print("[bold]QA report[/] (overlays, BEV, occupancy, findings; self-contained HTML)")
    calib = outputs / "calibration_check.json"
    index = build_report(
        log, outputs / "report", findings=findings,
        calibration_check=calib if calib.is_file() else None,
        sync_report=outputs / "sync_report.json", occupancy_dir=outputs / "occupancy",
        progress=_progress_printer("rendering", "frames", transient=False),
        workers=min(2, os.cpu_count() or 1),
    )  # fmt: skip
    console.print(f"[green]✓[/] report: {index}")
    return index


def _demo_occupancy(nuscenes_root: Path, outputs: Path) -> None:
    from avfusion.fusion.occupancy import OccupancyJob
    from avfusion.runner import run_job

    console.print(
        "[bold]occupancy ground truth[/] (Occ3D labels.npz, ±10 sweeps, LiDAR and camera masks)"
    )
    out = outputs / "occupancy"
    summary = run_job(
        OccupancyJob(str(nuscenes_root)),
        out,
        progress=_progress_printer("occupancy", "frames", transient=False),
    )
    if summary.failed:
        raise AVFusionError(
            f"occupancy failed for {len(summary.failed)} keyframes: {summary.failed}"
        )
    manifest = json.loads((out / "manifest.json").read_text())
    first = next(iter(manifest["tasks"].values()))["info"]
    console.print(
        f"[green]✓[/] {summary.done} keyframes written, {summary.skipped} already done "
        f"({summary.seconds_per_frame:.2f} s per frame) into {out}/gts/; e.g. "
        f"{first['occupied_voxels']} occupied voxels from {first['points']['read']} points of "
        f"{first['sweeps']} sweeps, {first['camera_observed_voxels']} voxels seen by the cameras"
    )


def _demo_time_sync(log: Any, outputs: Path) -> None:
    """Sync report, deskew of one sweep and clock offsets estimated from the data."""
    import json

    from avfusion.calibration.clockoffset import estimate_clock_offsets
    from avfusion.calibration.syncreport import sync_report, write_sync_report
    from avfusion.fusion.deskew import deskew_cloud

    with _stage("sync report"):
        path = write_sync_report(sync_report(log), outputs)
    console.print(f"  {path}")
    lidar = next((n for n, s in sorted(log.sensors.items()) if s.modality == "lidar"), None)
    if lidar is not None and hasattr(log, "frame"):
        mid = len(log) // 2
        cloud = log.frame(mid, with_boxes=False).points.get(lidar)
        if cloud is not None and "point_time_ns" in cloud.attrs:
            with _stage(f"deskew the {lidar} sweep of keyframe {mid}"):
                moved = np.linalg.norm(deskew_cloud(cloud, log.poses).xyz - cloud.xyz, axis=1)
            console.print(
                f"  {len(cloud)} points moved to the sweep time: mean {100 * moved.mean():.1f} cm, "
                f"max {100 * moved.max():.1f} cm"
            )
    cameras = [n for n, s in sorted(log.sensors.items()) if s.is_image]
    if lidar is None or not cameras:
        return
    with _stage(f"estimate the clock offsets of {len(cameras)} cameras from the data"):
        estimates = estimate_clock_offsets(log, cameras, lidar=lidar)
    table = Table(title=f"clock offsets relative to {lidar} (t_ego = t_stamp + offset)")
    for col in ("sensor", "believed (ms)", "estimated (ms)", "± (ms)", "confidence"):
        table.add_column(col)
    for name, est in estimates.items():
        if est.observable and est.offset_ns is not None:
            table.add_row(
                name, f"{est.believed_offset_ns / 1e6:.1f}", f"{est.offset_ns / 1e6:+.2f}",
                f"{(est.std_ns or 0) / 1e6:.2f}", f"{est.confidence:.2f}",
            )  # fmt: skip
        else:
            table.add_row(
                name, f"{est.believed_offset_ns / 1e6:.1f}", "not observable", "-", est.reason
            )
    console.print(table)
    outputs.mkdir(parents=True, exist_ok=True)
    path = outputs / "clock_offsets.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({n: e.as_dict() for n, e in estimates.items()}, indent=1) + "\n")
    tmp.replace(path)
    console.print(f"  {path}")


def _demo_projection(log: Any, outputs: Path) -> None:
    """Project the middle keyframe's LiDAR into every camera (motion-compensated, occlusion-aware)
    and write one sparse depth map per camera (float32 metres, 0 = no return) as .npy."""
    from avfusion.fusion.projection import depth_map, project_to_all_cameras

    lidar = next((n for n, s in sorted(log.sensors.items()) if s.modality == "lidar"), None)
    frame = log[len(log) // 2]
    if lidar is None or lidar not in frame.points or not frame.images:
        return
    with _stage(f"project {lidar} into {len(frame.images)} cameras (frame {frame.index})"):
        projections = project_to_all_cameras(frame, lidar, log.poses)
        outputs.mkdir(parents=True, exist_ok=True)
        for name, proj in projections.items():
            cam = frame.sensors[name].camera
            if cam is not None:
                np.save(outputs / f"depth_{name}.npy", depth_map(proj, cam.height, cam.width))
    for name, proj in projections.items():
        console.print(
            f"  {name}: {int(proj.valid.sum())} visible points, {int(proj.occluded.sum())} occluded"
        )
    console.print(f"  depth maps: {outputs}/depth_<camera>.npy")
    _demo_painting_and_boxes(log, frame, lidar, outputs)


def _demo_painting_and_boxes(log: Any, frame: Any, lidar: str, outputs: Path) -> None:
    """Colour the LiDAR from the RGB cameras and the thermal camera's temperatures, and project
    the frame's 3D boxes into each camera (near-plane clipped 2D hulls)."""
    from avfusion.fusion import paint_colour, project_boxes_into_image

    cloud = frame.points[lidar]
    rgb = {n: im for n, im in frame.images.items() if im.sensor.modality == "camera"}
    with _stage(
        f"paint {lidar} from {len(rgb)} cameras and project {len(frame.boxes3d or [])} boxes"
    ):
        paint = paint_colour(cloud, rgb, log.poses)
        np.save(outputs / f"painted_rgb_{lidar}.npy", paint.rgb)
        visible = {
            name: project_boxes_into_image(frame.boxes3d, image, log.poses)
            for name, image in frame.images.items()
        } if frame.boxes3d is not None and len(frame.boxes3d) else {}  # fmt: skip
    console.print(
        f"  {int(paint.painted.sum())} of {len(cloud)} points painted "
        f"({int((paint.n_cameras > 1).sum())} seen by two cameras, rule 'border'): "
        f"{outputs}/painted_rgb_{lidar}.npy"
    )
    for name, boxes in visible.items():
        console.print(f"  {name}: {int(boxes.visible.sum())} boxes visible")


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


@app.command()
def convert(
    bag: Annotated[Path, typer.Argument(metavar="BAG", help="ROS1 .bag, rosbag2 folder or .mcap.")],
    rig: Annotated[Path, typer.Option("--rig", help="Rig YAML mapping topics to sensors.")],
    out: Annotated[Path, typer.Option("--out", help="Empty folder for the nuScenes-style log.")],
    version: Annotated[str, typer.Option(help="Table folder name (v1.0-*).")] = "v1.0-mini",
    keyframe_hz: Annotated[
        float,
        typer.Option(
            "--keyframe-hz",
            min=0.0,
            help="Samples (keyframes) per second: the reference frames nearest a grid at this rate, "
            "plus every labelled frame. 0 = every reference frame.",
        ),
    ] = 2.0,
) -> None:
    """Convert a bag into a nuScenes-style log: one sample_data row per message, samples at
    --keyframe-hz (2 Hz, as nuScenes) plus the labelled frames."""
    from avfusion.io.convert import convert_bag
    from avfusion.io.rosbag import BagLog

    start = time.perf_counter()
    with BagLog(bag, rig) as log:
        summary = convert_bag(
            log, out, version=version, keyframe_hz=keyframe_hz,
            progress=_progress_printer("converting"),
        )  # fmt: skip
    console.print(
        f"[green]✓[/] wrote {summary.n_samples} samples, {sum(summary.n_sample_data.values())} sample_data rows "
        f"({sum(summary.n_keyframes.values())} keyframes), "
        f"{summary.n_annotations} annotations to [bold]{out}[/] in {time.perf_counter() - start:.1f} s"
    )
    if summary.n_shared_skipped:
        boxes = f"; {summary.skipped_box2d} 2D boxes not written" if summary.skipped_box2d else ""
        console.print(
            f"[yellow]shared[/] {sum(summary.n_shared_skipped.values())} keyframe selections name "
            f"another sample's keyframe; those samples list the channel as missing "
            f"{summary.n_shared_skipped}{boxes}"
        )
    if summary.skipped_frames or summary.skipped_messages:
        console.print(
            f"[yellow]skipped[/] {summary.skipped_frames} frames and {summary.skipped_messages} "
            "messages without an ego pose (see the log messages with -v)"
        )


# ---- sync-report (issue 5) -------------------------------------------------------------------


@app.command("sync-report")
def sync_report_cmd(
    log_path: Annotated[
        Path, typer.Argument(metavar="LOG", help="A log: nuScenes-style root, bag, MCAP ...")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder to write sync_report.json into (format_version 1)."),
    ] = None,
    rig: Annotated[
        Path | None, typer.Option("--rig", help="Rig YAML (sensors, extrinsics) for bags.")
    ] = None,
    ref: Annotated[
        str | None,
        typer.Option("--ref", help="Reference sensor (default: the first LiDAR)."),
    ] = None,
    tolerance_ms: Annotated[
        float, typer.Option("--tolerance-ms", help="Pair matching tolerance in milliseconds.")
    ] = 50.0,
    gap_factor: Annotated[
        float, typer.Option("--gap-factor", help="A gap is a period > this × the median period.")
    ] = 1.5,
) -> None:
    """Report stream timing (rate, jitter, gaps, drops, duplicates, reversals, pose coverage)
    and the time differences of every sensor matched to the reference sensor."""
    from avfusion.calibration.syncreport import sync_report, write_sync_report
    from avfusion.errors import ConfigError
    from avfusion.io import open_log

    if not np.isfinite(tolerance_ms) or tolerance_ms < 0:
        raise ConfigError(f"--tolerance-ms must be a finite number >= 0, got {tolerance_ms}")
    if not np.isfinite(gap_factor) or gap_factor <= 1.0:
        raise ConfigError(f"--gap-factor must be a finite number > 1, got {gap_factor}")
    log = open_log(log_path, rig=rig)
    report = sync_report(
        log,
        ref_sensor=ref,
        tolerance_ns=round(tolerance_ms * 1e6),
        gap_factor=gap_factor,
        name=str(log_path),
    )
    _print_sync_report(report)
    if out is not None:
        path = write_sync_report(report, out)
        console.print(f"[green]✓[/] wrote {path}")


@app.command()
def occupancy(
    log_path: Annotated[Path, typer.Argument(metavar="LOG", help="A nuScenes-style log root.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Output folder (gts/<scene>/<token>/labels.npz, manifest.json)."
        ),
    ],
    sweeps: Annotated[
        int, typer.Option("--sweeps", help="LiDAR sweeps gathered on each side of a keyframe (±K).")
    ] = 10,
    executor: Annotated[
        str, typer.Option("--executor", help="'local' (processes) or 'ray'.")
    ] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster address (with --executor ray).")
    ] = None,
    workers: Annotated[
        int,
        typer.Option("--workers", help="Worker processes (local) or CPUs of a local Ray instance."),
    ] = 1,
    scene: Annotated[
        str | None, typer.Option("--scene", help="Only this scene (name or token).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Only the first N keyframes.")
    ] = None,
    camera_stride: Annotated[
        int | None,
        typer.Option(
            "--camera-stride",
            help="Camera-mask rays every N pixels (1 = every pixel, as Occ3D; default: automatic).",
        ),
    ] = None,
) -> None:
    """Occupancy ground truth (Occ3D-nuScenes labels.npz with LiDAR and camera masks) for every
    keyframe; resumable: frames already written and verified are skipped."""
    from avfusion.errors import ConfigError
    from avfusion.fusion.occupancy import OccupancyJob, OccupancyOptions
    from avfusion.runner import run_job

    if sweeps < 0:
        raise ConfigError(f"--sweeps must be >= 0, got {sweeps}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    options = OccupancyOptions(camera_stride_px=camera_stride).with_sweeps(sweeps)
    job = OccupancyJob(str(log_path), options, scene=scene, limit=limit)
    progress = _progress_printer("occupancy", "frames", transient=False)
    summary = run_job(
        job, out, executor=executor, workers=workers, address=address, progress=progress
    )
    console.print(
        f"[green]✓[/] occupancy: {summary.done} frames written, {summary.skipped} already done "
        f"and verified, {len(summary.failed)} failed; {summary.seconds_per_frame:.2f} s per frame, "
        f"{summary.wall_s:.1f} s in all ({executor}, {workers} worker{'s' if workers > 1 else ''})"
    )
    for key, reason in sorted(summary.failed.items()):
        err_console.print(f"[red]failed[/] {key}: {reason}", highlight=False, soft_wrap=True)
    console.print(f"  outputs: {Path(out).resolve()} (manifest.json, run_summary.json)")
    if summary.failed:
        raise typer.Exit(1)


def _print_sync_report(report: Any) -> None:
    def ms(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value / 1e6:.{digits}f}"

    table = Table(title=f"streams of {report.log}")
    table.add_column("sensor", no_wrap=True)
    for col in ("n", "Hz", "jitter σ ms", "gap/drop", "dup/rev", "rec delay ms", "poses"):
        table.add_column(col)
    for name, s in report.streams.items():
        delay = s.record_delay
        cov = s.pose_coverage
        table.add_row(
            name,
            str(s.count),
            "-" if s.rate_hz is None else f"{s.rate_hz:.2f}",
            ms(s.jitter_std_ns, 2),
            f"{len(s.gaps)}/{s.drops}",
            f"{s.duplicates.size}/{s.reversals.size}",
            "-" if delay is None else f"{ms(delay['median_ns'])}/{ms(delay['max_ns'])}",
            "-" if cov is None or cov["fraction"] is None else f"{100 * cov['fraction']:.0f}%",
        )
    console.print(table)
    pairs = Table(title=f"matched to {report.ref_sensor} (nearest, ego clock, Δt = other − ref)")
    pairs.add_column("sensor", no_wrap=True)
    for col in ("matched", "tol ms", "Δt median ms", "Δt p5/p95 ms", "max |Δt| ms"):
        pairs.add_column(col)
    for p in report.pairs:
        pairs.add_row(
            p.other,
            f"{p.n_matched}/{p.n_ref}",
            f"{p.tolerance_ns / 1e6:g}",
            ms(p.dt_median_ns),
            f"{ms(p.dt_p5_ns)}/{ms(p.dt_p95_ns)}",
            ms(p.dt_max_abs_ns),
        )
    console.print(pairs)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")


# ---- calib (issue 8) ---------------------------------------------------------------------------

calib_app = typer.Typer(
    help="LiDAR→camera / LiDAR→thermal extrinsics: check (is it still right?) and refine.",
    no_args_is_help=True,
)
app.add_typer(calib_app, name="calib")

_CalibrationOpt = Annotated[
    Path | None,
    typer.Option(
        "--calibration",
        help="calibration.json whose extrinsics (and clock offsets) replace the log's.",
    ),
]
_SyncOpt = Annotated[
    bool,
    typer.Option(
        "--sync/--no-sync",
        help="Estimate every camera's clock offset from the data first and use it (a wrong "
        "clock offset otherwise looks like a translation along the direction of travel).",
    ),
]


def _calib_log(log_path: Path, calibration: Path | None, sync: bool, lidar: str) -> Any:
    """The log to check or refine: with a calibration override and/or estimated clock offsets."""
    from avfusion.calibration.clockoffset import estimate_clock_offsets
    from avfusion.calibration.extrinsics import SensorCalibration
    from avfusion.io import open_log

    log: Any = open_log(log_path, calibration=calibration)
    if not sync:
        return log
    cameras = sorted(n for n, s in log.sensors.items() if s.modality in ("camera", "thermal"))
    with _stage(f"estimate the clock offsets of {len(cameras)} cameras from the data"):
        estimates = estimate_clock_offsets(log, cameras, lidar=lidar)
    override = {}
    for name, s in log.sensors.items():
        est = estimates.get(name)
        offset = est.offset_ns if est is not None and est.observable else None
        if est is not None and offset is None:
            console.print(f"[yellow]note:[/] clock offset of {name} not observable: {est.reason}")
        override[name] = SensorCalibration(
            name, s.ego_from_sensor, offset if offset is not None else s.time_offset_ns
        )
    return open_log(log_path, calibration=override)


@calib_app.command("check")
def calib_check_cmd(
    log_path: Annotated[Path, typer.Argument(metavar="LOG", help="A nuScenes-style log.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder to write calibration_check.json into.")
    ] = None,
    lidar: Annotated[str, typer.Option("--lidar", help="Reference LiDAR.")] = "LIDAR_TOP",
    max_frames: Annotated[int, typer.Option("--max-frames", help="Frames per sensor.")] = 20,
    calibration: _CalibrationOpt = None,
    sync: _SyncOpt = False,
) -> None:
    """Edge alignment of LiDAR depth edges and image edges for every camera and thermal
    camera: per-frame flags and the best nearby extrinsic over the log."""
    import json

    from avfusion.calibration.validation import check_calibration, check_settings
    from avfusion.errors import ConfigError

    if max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {max_frames}")
    log = _calib_log(log_path, calibration, sync, lidar)
    with _stage("calibration check"):
        checks = check_calibration(log, lidar=lidar, settings=check_settings(max_frames=max_frames))
    table = Table(title=f"calibration check of {log_path} (reference {lidar})")
    for col in ("sensor", "ok", "frames", "flagged", "rotation to best °", "translation cm"):
        table.add_column(col)
    for name, c in checks.items():
        table.add_row(
            name,
            "yes" if c.ok else "[red]no[/]",
            str(c.n_frames),
            f"{100 * c.flagged_fraction:.0f}%",
            " ".join(f"{v:+.2f}" for v in c.correction_rotation_deg),
            " ".join(f"{100 * v:+.1f}" for v in c.correction_translation_m),
        )
    console.print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "calibration_check.json"
        doc = {"format_version": 1, "log": str(log_path), "lidar": lidar,
               "sensors": {n: c.as_dict() for n, c in checks.items()}}  # fmt: skip
        path.write_text(json.dumps(doc, indent=1) + "\n")
        console.print(f"[green]✓[/] wrote {path}")


@calib_app.command("refine")
def calib_refine_cmd(
    log_path: Annotated[Path, typer.Argument(metavar="LOG", help="A nuScenes-style log.")],
    sensor: Annotated[
        str, typer.Option("--sensor", help="Camera, thermal camera or radar to refine.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder to write calibration.json into.")
    ] = None,
    lidar: Annotated[str, typer.Option("--lidar", help="Reference LiDAR.")] = "LIDAR_TOP",
    calibration: _CalibrationOpt = None,
    sync: _SyncOpt = False,
) -> None:
    """Targetless refinement of one sensor against the LiDAR over several frames (cameras:
    6-DoF; radar: yaw and planar translation); writes calibration.json (nuScenes
    calibrated_sensor + ROS /tf_static) when the data constrain it, else exits with status 1."""
    from avfusion.calibration.extrinsics import (
        calibration_record,
        refine_extrinsic,
        refine_radar,
        write_calibration,
    )

    log = _calib_log(log_path, calibration, sync, lidar)
    is_radar = sensor in log.sensors and log.sensors[sensor].modality == "radar"
    with _stage(f"refine {sensor}"):
        est: Any = (
            refine_radar(log, sensor, lidar) if is_radar else refine_extrinsic(log, sensor, lidar)
        )
    if not est.observable or est.ego_from_sensor is None:
        console.print(f"[yellow]{sensor} not observable:[/] {est.reason}")
        raise typer.Exit(1)
    if is_radar:
        t = est.correction.translation
        console.print(
            f"{sensor}: correction yaw {est.correction_yaw_deg:+.3f}° ± {est.std_yaw_deg:.3f}°, translation "
            f"{100 * t[0]:+.1f} / {100 * t[1]:+.1f} cm ± {100 * est.std_translation_m[0]:.1f} / "
            f"{100 * est.std_translation_m[1]:.1f} cm ({est.n_points} static detections)"
        )
    else:
        console.print(repr(est))
        console.print(
            "std rotation ° " + " ".join(f"{v:.3f}" for v in est.std_rotation_deg)
            + "; std translation cm " + " ".join(f"{100 * v:.2f}" for v in est.std_translation_m)
        )  # fmt: skip
    if out is not None:
        s = log.sensors[sensor]
        rec = calibration_record(
            sensor, est.ego_from_sensor,
            camera_intrinsic=None if s.camera is None else s.camera.K,
            time_offset_ns=s.time_offset_ns, estimate=est.as_dict(),
        )  # fmt: skip
        path = write_calibration({sensor: rec}, out, source={"log": str(log_path)})
        console.print(f"[green]✓[/] wrote {path}")


# ---- qa (issue 10) -----------------------------------------------------------------------------


@app.command()
def check(
    log_path: Annotated[Path, typer.Argument(metavar="LOG", help="A nuScenes-style log root.")],
    out: Annotated[
        Path, typer.Option("--out", help="findings.json to write (schema avfusion.findings/1).")
    ],
    checks: Annotated[
        str,
        typer.Option(
            "--checks",
            help="Comma list of box_lidar, unlabelled, box_radar, box_2d, temporal, occupancy "
            "(default: all).",
        ),
    ] = "all",
    occupancy: Annotated[
        Path | None,
        typer.Option(
            "--occupancy", help="Occupancy folder (<sample>/labels.npz) to check against."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Only the first N keyframes.")
    ] = None,
    worst: Annotated[
        int, typer.Option("--worst", help="How many of the worst findings to print.")
    ] = 10,
) -> None:
    """Cross-modal label consistency: 3D boxes against LiDAR, radar, every camera's 2D boxes,
    the tracks over time and occupancy; writes findings.json and prints the worst findings."""
    from avfusion.errors import ConfigError
    from avfusion.fusion.consistency.check import parse_checks, run_checks
    from avfusion.fusion.consistency.report import write_findings_json
    from avfusion.io import open_log

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if worst < 0:
        raise ConfigError(f"--worst must be >= 0, got {worst}")
    names = parse_checks(checks)
    start = time.perf_counter()
    log: Any = open_log(log_path)
    tokens = list(getattr(log, "sample_tokens", []))
    if not tokens:
        raise ConfigError(f"{log_path}: the log has no keyframes (samples) to check")
    report = run_checks(
        log, checks=names, sample_tokens=tokens if limit is None else tokens[:limit],
        occupancy_dir=occupancy, progress=_progress_printer("checks", "frames", transient=False),
    )  # fmt: skip
    path = write_findings_json(out, report)
    summary = report.summary
    table = Table(title="label consistency", title_justify="left")
    for col in ("check", "items", "flagged", "findings", "rate"):
        table.add_column(col, justify="left" if col == "check" else "right")
    for name, b in summary["by_check"].items():
        rate = b["rate"]
        table.add_row(
            name, str(b["items"]), str(b["flagged_items"]), str(b["findings"]),
            "-" if rate != rate else f"{rate:.1%}",
        )  # fmt: skip
    console.print(table)
    kappa = report.confusion.kappa
    if report.confusion.pairs:
        console.print(
            f"camera vs LiDAR class: {report.confusion.pairs} matched pairs, Cohen's kappa "
            f"{kappa:.3f}"
        )
    if report.findings and worst:
        console.print(
            f"[bold]worst findings[/] ({min(worst, len(report.findings))} of {len(report.findings)}):"
        )
        for f in report.worst(worst):
            where = f" {f.sensor}" if f.sensor and not f.message.startswith(f.sensor) else ""
            console.print(
                f"  {f.severity:.2f} {f.level:<6} {f.kind:<20} {f.sample_token[:8]}{where}: {f.message}",
                highlight=False, soft_wrap=True,
            )  # fmt: skip
    console.print(
        f"[green]✓[/] {summary['findings']} findings on {summary['flagged_items']} of "
        f"{summary['items']} items in {time.perf_counter() - start:.1f} s: {path}"
    )


@app.command()
def qa(
    log_path: Annotated[Path, typer.Argument(metavar="LOG", help="A nuScenes-style log root.")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the report (index.html, frames/, img/).")
    ],
    findings: Annotated[
        Path | None, typer.Option("--findings", help="findings.json of avfusion check.")
    ] = None,
    occupancy: Annotated[
        Path | None,
        typer.Option("--occupancy", help="Output folder of avfusion occupancy (labels.npz)."),
    ] = None,
    calibration_check: Annotated[
        Path | None,
        typer.Option("--calibration-check", help="calibration_check.json of avfusion calib check."),
    ] = None,
    sync_report_path: Annotated[
        Path | None,
        typer.Option("--sync-report", help="sync_report.json of avfusion sync-report."),
    ] = None,
    rerun_out: Annotated[
        Path | None,
        typer.Option("--rerun", help="Also write the log as a rerun recording (.rrd) here."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Only the first N keyframes.")
    ] = None,
) -> None:
    """Visual QA: a self-contained HTML report (summary tables, one page per frame with
    overlays, BEV and occupancy views, sortable and filterable findings) and, with --rerun,
    the log as a rerun recording for interactive 3D review."""
    from avfusion.errors import ConfigError
    from avfusion.io import open_log
    from avfusion.viz.report import build_report

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    start = time.perf_counter()
    log: Any = open_log(log_path)
    tokens = None if limit is None else list(getattr(log, "sample_tokens", []))[:limit]
    index = build_report(
        log, out, findings=findings, calibration_check=calibration_check,
        sync_report=sync_report_path, occupancy_dir=occupancy, sample_tokens=tokens,
        progress=_progress_printer("rendering", "frames", transient=False),
    )  # fmt: skip
    console.print(
        f"[green]✓[/] QA report in {time.perf_counter() - start:.1f} s: open "
        f"[bold]{index.resolve()}[/]"
    )
    failed = json.loads((out / "img" / "run_summary.json").read_text()).get("failed", {})
    for key, reason in sorted(failed.items()):
        err_console.print(f"[red]not rendered[/] {key}: {reason}", highlight=False, soft_wrap=True)
    if rerun_out is not None:
        from avfusion.viz.rerun import export_rerun

        with _stage(f"rerun recording {rerun_out}"):
            export_rerun(
                log, rerun_out, sample_tokens=tokens, occupancy_dir=occupancy, findings=findings
            )
        console.print(f"  view it with: rerun {rerun_out.resolve()}")
    if failed:
        raise typer.Exit(1)


def main() -> None:
    """Entry point: run the app, mapping library errors to one line and exit code 2."""
    try:
        app()
    except AVFusionError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":  # pragma: no cover
    main()
