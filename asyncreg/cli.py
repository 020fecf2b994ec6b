"""The ``asyncreg`` command line.

Results go to stdout (a digest, or JSON with ``--json``); progress and errors
go to stderr. The exit status is 0 on success, 1 when an operation failed
(with a one-line reason), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import TypeVar

import anyio
import orjson

from .client import Client
from .config import HostConfig, Limits
from .destination import decide
from .engine.failures import most_useful
from .engine.progress import Progress
from .errors import AsyncregError, ConfigError, Interrupted
from .options import CopyOptions, CopyResult
from .progressview import PlainView, TerminalView

__all__ = ["main"]

T = TypeVar("T")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asyncreg", description="Move container images between registries, concurrently."
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--concurrency", type=int, default=Limits().transfers, help="transfers in flight"
        )
        sp.add_argument(
            "--per-host", type=int, default=Limits().per_host, help="transfers per host"
        )
        sp.add_argument(
            "--plain-http",
            action="append",
            default=[],
            metavar="HOST",
            help="speak plain HTTP to HOST (loopback hosts do by default)",
        )
        sp.add_argument(
            "--tls-no-verify",
            action="append",
            default=[],
            metavar="HOST",
            help="use TLS to HOST but do not verify its certificate",
        )
        sp.add_argument(
            "--ca-file",
            action="append",
            default=[],
            metavar="HOST=PEM",
            help="trust the CA in PEM for HOST",
        )
        sp.add_argument("--json", action="store_true", help="print results as JSON")
        sp.add_argument(
            "--grace",
            type=float,
            default=20.0,
            metavar="SECONDS",
            help="on SIGTERM, let transfers in flight finish for at most this long (default 20)",
        )
        sp.add_argument(
            "--no-zero-copy",
            action="store_true",
            help="stream blobs through Python even between plain-HTTP registries",
        )

    cp = sub.add_parser("copy", help="copy an image or index from SRC to DST")
    cp.add_argument("src")
    cp.add_argument("dst")
    cp.add_argument("--platform", help="copy only the image for this platform (os/arch[/variant])")
    cp.add_argument("--platforms", default="", help="comma-separated index entries to copy")
    cp.add_argument(
        "--filter-index",
        action="store_true",
        help="push a new index holding only --platforms (new digest)",
    )
    cp.add_argument("--force-recursive", action="store_true", help="walk and repair every child")
    cp.add_argument("--include-external", action="store_true", help="copy foreign layers too")
    cp.add_argument("--referrers", action="store_true", help="copy referrers (signatures, SBOMs)")
    cp.add_argument("--digest-tags", action="store_true", help="copy sha256-<hex>* tags")
    cp.add_argument("--progress", choices=("auto", "tty", "plain", "none"), default="auto")
    common(cp)

    ex = sub.add_parser("export", help="write images to one tar (OCI layout + docker load)")
    ex.add_argument("refs", nargs="+", metavar="REF")
    ex.add_argument("dest", metavar="FILE|-")
    ex.add_argument("--platform", help="image of each index named in manifest.json")
    ex.add_argument(
        "--compress",
        choices=("gzip", "zstd"),
        default=None,
        help="compress the whole tar (zstd needs the optional zstandard package)",
    )
    ex.add_argument("--progress", choices=("auto", "tty", "plain", "none"), default="auto")
    common(ex)

    im = sub.add_parser("import", help="push the image(s) of a tar to a repository")
    im.add_argument("src", metavar="FILE|-")
    im.add_argument("dst", metavar="REF")
    im.add_argument("--name", help="the image of the tar to import (tag or full name)")
    im.add_argument("--all", action="store_true", help="import every named image, by tag")
    im.add_argument(
        "--no-compress", action="store_true", help="push legacy docker-save layers uncompressed"
    )
    im.add_argument("--progress", choices=("auto", "tty", "plain", "none"), default="auto")
    common(im)

    mi = sub.add_parser("mirror", help="mirror the repositories a TOML file lists")
    mi.add_argument("config", metavar="CONFIG.toml")
    mi.add_argument("--report", metavar="FILE", help="write the JSON report to FILE")
    mi.add_argument("--progress", choices=("auto", "tty", "plain", "none"), default="auto")

    tg = sub.add_parser("tags", help="list the tags of a repository")
    tg.add_argument("repo")
    common(tg)

    ca = sub.add_parser("catalog", help="list the repositories of a registry")
    ca.add_argument("host")
    common(ca)

    mf = sub.add_parser("manifest", help="print a manifest's raw bytes")
    mf.add_argument("ref")
    common(mf)
    return p


def _client(args: argparse.Namespace) -> Client:
    hosts: dict[str, HostConfig] = {}
    for host in args.plain_http:
        hosts[host] = HostConfig(plain_http=True)
    for host in args.tls_no_verify:
        hosts[host] = HostConfig(plain_http=False, tls_verify=False)
    for item in args.ca_file:
        host, sep, path = item.partition("=")
        if not sep:
            raise SystemExit("asyncreg: --ca-file wants HOST=PEM")
        if not os.path.isfile(path):
            raise ConfigError(f"--ca-file {item}: {path} is not a readable file")
        hosts[host] = HostConfig(plain_http=False, ca_file=path)
    limits = Limits(
        transfers=args.concurrency, per_host=args.per_host, zero_copy=not args.no_zero_copy
    )
    return Client(limits=limits, hosts=hosts)


async def _with_progress(
    args: argparse.Namespace,
    job: Callable[[Client, Progress], Awaitable[T]],
    client: Client | None = None,
) -> T:
    """Run ``job`` with a client, showing progress on stderr as ``--progress`` asks."""
    progress = Progress()
    mode = args.progress
    if mode == "auto":
        mode = "tty" if sys.stderr.isatty() else "plain"
    view: TerminalView | None = None
    if mode == "tty":
        view = TerminalView(progress)
    elif mode == "plain":
        progress.subscribe(PlainView())
    async with client or _client(args) as ready, anyio.create_task_group() as tg:
        if view is not None:
            tg.start_soon(view.run)
        work = anyio.CancelScope()
        tg.start_soon(_on_signals, ready, progress, work, getattr(args, "grace", 20.0))
        try:
            with work:
                result = await job(ready, progress)
        finally:
            tg.cancel_scope.cancel()
            if view is not None:
                view.render()
            unclean = progress.statistics().unclean
            if unclean:
                print(
                    f"asyncreg: {unclean} upload session(s) could not be cancelled; the"
                    " registry drops them when it purges stale uploads",
                    file=sys.stderr,
                )
        if work.cancelled_caught:
            raise Interrupted("interrupted: the transfers in flight were abandoned")
    return result


async def _on_signals(
    client: Client, progress: Progress, work: anyio.CancelScope, grace: float
) -> None:
    """First Ctrl-C (or SIGTERM, SIGHUP): stop gracefully; a second one abandons.

    A registry cannot cancel an upload whose one PUT broke off, so the first
    signal lets those finish; SIGTERM (what Kubernetes sends, killing 30 s
    later) waits at most ``grace`` seconds.
    """
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    with anyio.open_signal_receiver(*signals) as received:
        async for sig in received:
            if client.stopping:
                print("asyncreg: abandoning the transfers in flight", file=sys.stderr)
                work.cancel()
                return
            client.stop()
            _SIGNALS.append(int(sig))
            busy = progress.statistics().in_flight
            if sig == signal.SIGINT:
                print(
                    f"asyncreg: stopping: no new transfer starts; letting {busy} in flight"
                    " finish (Ctrl-C again abandons them)",
                    file=sys.stderr,
                )
                continue
            print(
                f"asyncreg: stopping: letting {busy} transfers in flight finish,"
                f" for at most {grace:g} s",
                file=sys.stderr,
            )
            work.deadline = min(work.deadline, anyio.current_time() + grace)


async def _export(args: argparse.Namespace) -> int:
    results = await _with_progress(
        args,
        lambda client, progress: client.export(
            args.refs,
            args.dest,
            platform=args.platform,
            compression=args.compress,
            progress=progress,
        ),
    )
    if args.dest != "-":
        for result in results:
            _print_result(result, as_json=args.json)
    return 0


async def _import(args: argparse.Namespace) -> int:
    results = await _with_progress(
        args,
        lambda client, progress: client.import_(
            args.src,
            args.dst,
            name=args.name,
            all_images=args.all,
            compress=not args.no_compress,
            progress=progress,
        ),
    )
    for result in results:
        _print_result(result, as_json=args.json)
    return 0


async def _mirror(args: argparse.Namespace) -> int:
    from .ops.mirror import load_config, report, run_mirror

    config = load_config(args.config)
    if args.report:
        decide(args.report)  # a report that cannot be written is refused before any work
    outcomes = await _with_progress(
        args,
        lambda client, progress: run_mirror(client, config, progress=progress),
        Client(limits=config.limits, hosts=config.hosts),
    )
    doc = report(outcomes)
    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    if args.report:
        await anyio.Path(args.report).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    for item in doc["items"]:
        if item["status"] == "failed":
            print(f"failed: {item['source']} -> {item['target']}: {item['error']}", file=sys.stderr)
    print(
        f"mirror: {doc['copied']} copied, {doc['up_to_date']} up to date, {doc['failed']} failed,"
        f" {doc['bytes_moved']} bytes moved",
        file=sys.stderr,
    )
    return 1 if doc["failed"] else 0


async def _copy(args: argparse.Namespace) -> int:
    options = CopyOptions(
        platform=args.platform,
        platforms=tuple(p for p in args.platforms.split(",") if p),
        filter_index=args.filter_index,
        force_recursive=args.force_recursive,
        include_external=args.include_external,
        referrers=args.referrers,
        digest_tags=args.digest_tags,
    )
    result = await _with_progress(
        args, lambda client, progress: client.copy(args.src, args.dst, options, progress=progress)
    )
    _print_result(result, as_json=args.json)
    return 0


def _print_result(result: CopyResult, *, as_json: bool) -> None:
    if as_json:
        doc = asdict(result)
        doc["digest"] = str(result.digest)
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        return
    print(result.digest)
    state = "up to date" if result.skipped else "copied"
    rate = result.bytes_moved / result.duration / 1e6 if result.duration > 0 else 0.0
    extra = "".join(
        f", {n} {label}"
        for n, label in (
            (result.retries, "retries"),
            (result.rate_limited, "rate-limited"),
            (result.fallbacks, "chunked fallbacks"),
        )
        if n
    )
    print(
        f"{state}: {result.blobs_moved} blobs moved, {result.blobs_skipped} skipped,"
        f" {result.blobs_mounted} mounted, {result.manifests_pushed} manifests pushed,"
        f" {result.bytes_moved} bytes in {result.duration:.2f}s ({rate:.1f} MB/s){extra}",
        file=sys.stderr,
    )


def _print_names(names: list[str], *, as_json: bool) -> int:
    if as_json:
        sys.stdout.write(orjson.dumps(names).decode() + "\n")
    else:
        for name in names:
            print(name)
    return 0


async def _tags(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        return _print_names(await client.repo(args.repo).tags(), as_json=args.json)


async def _catalog(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        return _print_names(await client.catalog(args.host), as_json=args.json)


async def _manifest(args: argparse.Namespace) -> int:
    from .reference import parse_location

    ref = parse_location(args.ref)
    async with _client(args) as client:
        manifest = await client.repo(ref).manifest_get(ref.digest or ref.reference)
    sys.stdout.buffer.write(manifest.raw + b"\n")
    return 0


#: Signals received by `_on_signals`, first first: the exit status names the first.
_SIGNALS: list[int] = []


def _one_line(exc: BaseException) -> str:
    """The error's message on one line."""
    return str(exc).replace("\n", " ")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args = _parser().parse_args(argv)
    handlers = {
        "copy": _copy,
        "export": _export,
        "import": _import,
        "mirror": _mirror,
        "tags": _tags,
        "catalog": _catalog,
        "manifest": _manifest,
    }
    try:
        try:
            return anyio.run(handlers[args.command], args)
        except BaseExceptionGroup as group:
            raise most_useful(group) from group
    except Interrupted as exc:
        print(f"asyncreg: {_one_line(exc)}", file=sys.stderr)
        # The shell's convention: 128 + the signal (130 SIGINT, 143 SIGTERM, 129 SIGHUP).
        return 128 + (_SIGNALS[0] if _SIGNALS else int(signal.SIGINT))
    except AsyncregError as exc:
        print(f"asyncreg: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        # A file system failure our own layers did not name (a full disk, a device
        # that refuses writes): still one line, never a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"asyncreg: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("asyncreg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
