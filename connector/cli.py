"""The ``connector-pipeline`` command. Thin: parse, call one library function, print.

Exit codes: 0 success; 1 the command ran and found a problem (corruption in
the WAL); 2 bad usage or input (missing directory, bad option); 3 an
unexpected internal error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from pipeline import bench as bench_mod
from pipeline import wal as wal_mod
from pipeline.errors import PipelineError

EXIT_PROBLEM = 1
EXIT_USAGE = 2


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _say(message: str) -> None:
    """Progress for humans, on stderr so ``--json`` output stays clean."""
    click.echo(message, err=True)


class _Failed(click.ClickException):
    exit_code = EXIT_USAGE


class _Group(click.Group):
    """Turns the project's expected errors into a one-line message and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PipelineError as exc:
            raise _Failed(str(exc)) from exc


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(package_name="connector-pipeline")
def main() -> None:
    """Crash-safe market-data connector: venue feeds -> shared-memory rings ->
    order books and a CRC-checked write-ahead log.

    Data directory: --data-dir where a command has it, else
    $CONNECTOR_PIPELINE_DATA_DIR, else ./data.
    """


# ---------------------------------------------------------------------------
# replay


@main.command()
@click.option(
    "--wal",
    "wal_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="WAL directory (e.g. data/market_data_wal).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Check every frame's CRC and every source's sequence (the default action).",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Zero a torn tail, pad corrupt regions so intact frames stay readable, then verify.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def replay(wal_dir: Path, verify: bool, repair: bool, as_json: bool) -> None:
    """Read a WAL back: verify it (and repair it) from the files alone.

    \b
    The report lists segments, frames and records, the torn tail (bytes of an
    interrupted write at the end, harmless: the writer zeroes it on start),
    every corruption with file and offset, and per source the first and last
    sequence number, gaps (declared by a STATUS/DROP record or not) and
    duplicates. Exit code 1 when corruption is found.
    """
    if not wal_dir.is_dir():
        raise click.UsageError(f"WAL directory {wal_dir} does not exist")
    repaired: dict[str, Any] | None = None
    if repair:
        repaired = wal_mod.repair(wal_dir)
    report = _verify_with_progress(wal_dir, show=not as_json)
    if repaired is not None:
        report["repair"] = repaired
    if as_json:
        _print_json(report)
    else:
        _print_verify(report)
    if not report["ok"]:
        sys.exit(EXIT_PROBLEM)


def _verify_with_progress(wal_dir: Path, show: bool) -> dict[str, Any]:
    if not (show and sys.stderr.isatty()):
        return wal_mod.verify(wal_dir)
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress(
        "verifying",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=_console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("verify", total=None)
        return wal_mod.verify(
            wal_dir, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )


def _print_verify(report: dict[str, Any]) -> None:
    from rich.table import Table

    con = _console()
    status = "[green]OK[/green]" if report["ok"] else "[red]CORRUPT[/red]"
    con.print(
        f"{status}  {report['segments']} segments, {report['frames']:,} frames, "
        f"{report['records']:,} records ({report['records_per_s']:,} records/s)"
    )
    if report["torn_tail_bytes"]:
        con.print(
            f"torn tail: {report['torn_tail_bytes']:,} bytes after the last good frame (zeroed by the writer on start)"
        )
    for c in report["corrupt"]:
        con.print(f"[red]corrupt[/red] {c['file']} offset {c['offset']}: {c['reason']}")
    if report.get("repair"):
        r = report["repair"]
        con.print(
            f"repair: zeroed {r['zeroed_tail_bytes']:,} tail bytes, padded {len(r['padded'])} corrupt regions, "
            f"removed {len(r['removed'])} files, rebuilt {len(r['rebuilt_headers'])} segment headers"
        )
    if report["sources"]:
        table = Table(
            "source", "first seq", "last seq", "records", "gaps", "undeclared", "duplicates"
        )
        for name, s in report["sources"].items():
            table.add_row(
                name,
                str(s["first_seq"]),
                str(s["last_seq"]),
                f"{s['records']:,}",
                str(len(s["gaps"])),
                str(len(s["undeclared_gaps"])),
                str(s["duplicates"]),
            )
        con.print(table)


# ---------------------------------------------------------------------------
# bench


@main.group(cls=_Group)
def bench() -> None:
    """Benchmarks. Each prints its figure beside a baseline measured in the same run, and the ratio."""


@bench.command("ring")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Length of each measured phase.",
)
@click.option(
    "--batch",
    "batches",
    type=click.Choice(["1", "16", "256"]),
    multiple=True,
    help="Only these batch sizes (default: all).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_ring(seconds: float, batches: tuple[str, ...], as_json: bool) -> None:
    """Shared-memory ring: producer + 2 gating consumers + 1 reader, each a process.

    \b
    Baseline: a bare two-process shared-memory copy loop (one counter, no
    protocol). Latency: publish -> gating consumer at a paced 10k records/s
    with the adaptive wait.
    """
    sizes = tuple(int(b) for b in batches) or bench_mod.RING_BATCHES
    result = bench_mod.bench_ring(seconds, sizes, progress=_say)
    if as_json:
        _print_json(result)
        return
    from rich.table import Table

    table = Table(
        "batch", "records/s", "baseline", "ratio", "p50 µs", "p99 µs", "drops", title="ring"
    )
    for r in result["results"]:
        table.add_row(
            str(r["batch"]),
            f"{r['records_per_s']:,}",
            f"{r['baseline_records_per_s']:,}",
            f"{r['ratio']:.2f}",
            f"{r['p50_latency_us']}",
            f"{r['p99_latency_us']}",
            str(r["drops"]),
        )
    _console().print(table)


@bench.command("wal")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write (default: the data dir). The baseline writes in the same place.",
)
@click.option("--keep", is_flag=True, help="Leave the WAL that was written for inspection.")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0.1),
    default=3.0,
    show_default=True,
    help="Write for at most this long.",
)
@click.option(
    "--mb",
    type=click.FloatRange(min=1),
    default=1024,
    show_default=True,
    help="Write at most this many MB.",
)
@click.option(
    "--fsync",
    type=click.Choice(wal_mod.FSYNC_POLICIES),
    default="interval",
    show_default=True,
    help="Durability policy to measure.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_wal(
    directory: Path | None, keep: bool, seconds: float, mb: float, fsync: str, as_json: bool
) -> None:
    """WAL append throughput vs. the same bytes written in 1 MiB blocks with one fdatasync."""
    from pipeline.paths import data_dir

    target = directory or data_dir() / "bench"
    result = bench_mod.bench_wal(
        target, seconds=seconds, max_mb=mb, fsync=fsync, keep=keep, progress=_say
    )
    if as_json:
        _print_json(result)
        return
    con = _console()
    con.print(
        f"wal ({result['fsync']}): {result['mb_per_s']:,} MB/s vs baseline {result['baseline_mb_per_s']:,} MB/s "
        f"= ratio {result['ratio']:.2f}; {result['records_per_s']:,} records/s; "
        f"verify {result['verify_records_per_s']:,} records/s"
    )
    if result["dir"]:
        con.print(f"kept: {result['dir']}")


if __name__ == "__main__":
    main()
