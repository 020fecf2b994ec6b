"""Mirror: many repositories, described in a TOML file, copied as one job.

For operators: one file says what to mirror, one run copies everything that
changed (an up-to-date target costs HEAD requests only, so re-running is
safe and cheap), every item is reported, and any failure makes the run fail
without stopping the others. The file (TOML, read with the standard
library's ``tomllib``)::

    [limits]                  # optional: Limits fields
    transfers = 16
    per_host = 8

    [hosts."registry.example:5000"]   # optional: HostConfig fields
    ca_file = "/etc/ssl/private-ca.pem"

    [defaults]                # optional: CopyOptions fields for every sync
    referrers = true

    [[sync]]
    source = "localhost:5000/library/alpine"
    target = "localhost:5001/mirror/alpine"
    tags = ["3.19", "3.20"]   # or: tags_regex = "^3\\." ; neither: every tag
    platforms = ["linux/amd64", "linux/arm64"]   # any CopyOptions field overrides
    filter_index = true

Parsing is pure (`parse_config`); `run_mirror` lists tags where needed and
runs every copy through `Client.copy_many` in keep-going mode.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ..config import HostConfig, Limits
from ..errors import AsyncregError, ConfigError
from ..options import CopyOptions
from ..reference import Reference

if TYPE_CHECKING:
    from ..client import Client, CopyOutcome
    from ..engine.progress import Progress

__all__ = ["MirrorConfig", "SyncRule", "load_config", "parse_config", "report", "run_mirror"]

_OPTION_FIELDS = {f.name for f in fields(CopyOptions)}
_SYNC_FIELDS = {"source", "target", "tags", "tags_regex"}


@dataclass(frozen=True, slots=True)
class SyncRule:
    """One repository to mirror: which tags, and with which copy options."""

    source: Reference
    target: Reference
    tags: tuple[str, ...] = ()
    tags_regex: re.Pattern[str] | None = None
    options: CopyOptions = field(default_factory=CopyOptions)


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    """A parsed mirror file."""

    syncs: tuple[SyncRule, ...]
    limits: Limits = field(default_factory=Limits)
    hosts: Mapping[str, HostConfig] = field(default_factory=dict)


def load_config(path: str | Path) -> MirrorConfig:
    """Read and parse a mirror file; `ConfigError` names the file and the problem."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return parse_config(doc)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _table(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}] must be a table")
    return value


def _build(kind: type[Any], values: Mapping[str, Any], where: str) -> Any:
    allowed = {f.name for f in fields(kind)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    try:
        return kind(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _options(values: Mapping[str, Any], where: str) -> CopyOptions:
    clean = dict(values)
    for key in ("platforms",):
        if key in clean:
            if not isinstance(clean[key], list) or not all(isinstance(p, str) for p in clean[key]):
                raise ConfigError(f"{where}: {key} must be a list of strings")
            clean[key] = tuple(clean[key])
    built: CopyOptions = _build(CopyOptions, clean, where)
    return built


def parse_config(doc: Mapping[str, Any]) -> MirrorConfig:
    """Turn a loaded TOML document into a `MirrorConfig` (pure)."""
    unknown = sorted(set(doc) - {"limits", "hosts", "defaults", "sync"})
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}")
    limits: Limits = _build(Limits, _table(doc, "limits"), "[limits]")
    hosts: dict[str, HostConfig] = {}
    for host, values in _table(doc, "hosts").items():
        if not isinstance(values, dict):
            raise ConfigError(f'[hosts."{host}"] must be a table')
        hosts[host] = _build(HostConfig, values, f'[hosts."{host}"]')
    defaults = _table(doc, "defaults")
    entries = doc.get("sync", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError("no [[sync]] entries: nothing to mirror")
    syncs = []
    for i, entry in enumerate(entries, 1):
        where = f"[[sync]] #{i}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table")
        for key in ("source", "target"):
            if not isinstance(entry.get(key), str):
                raise ConfigError(f"{where}: {key} (a repository, without tag) is required")
        source = Reference.parse(entry["source"])
        target = Reference.parse(entry["target"])
        if source.tag or source.digest or target.tag or target.digest:
            raise ConfigError(f"{where}: source and target name repositories; put tags in 'tags'")
        tags = entry.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f"{where}: tags must be a list of strings")
        regex = entry.get("tags_regex")
        if regex is not None and (tags or not isinstance(regex, str)):
            raise ConfigError(f"{where}: use either tags or tags_regex (a string)")
        try:
            pattern = re.compile(regex) if regex is not None else None
        except re.error as exc:
            raise ConfigError(f"{where}: tags_regex: {exc}") from exc
        overrides = {k: v for k, v in entry.items() if k not in _SYNC_FIELDS}
        options = _options({**defaults, **overrides}, where)
        for tag in tags:
            source.with_tag(tag)  # validates the tag
        syncs.append(SyncRule(source, target, tuple(tags), pattern, options))
    return MirrorConfig(tuple(syncs), limits, hosts)


async def _tags_for(client: Client, rule: SyncRule) -> list[str]:
    if rule.tags:
        return list(rule.tags)
    tags = await client.repo(rule.source).tags()
    if rule.tags_regex is not None:
        tags = [t for t in tags if rule.tags_regex.search(t)]
    return sorted(tags)


async def run_mirror(
    client: Client, config: MirrorConfig, *, progress: Progress | None = None
) -> list[CopyOutcome]:
    """Copy every tag of every sync; one job, keep-going. Listing failures are outcomes too."""
    from ..client import CopyOutcome

    failed: list[CopyOutcome] = []
    planned: list[list[tuple[str, str, CopyOptions]]] = [[] for _ in config.syncs]

    async def plan(i: int, rule: SyncRule) -> None:
        try:
            tags = await _tags_for(client, rule)
        except AsyncregError as exc:
            failed.append(CopyOutcome(str(rule.source), str(rule.target), error=exc))
            return
        planned[i] = [
            (str(rule.source.with_tag(t)), str(rule.target.with_tag(t)), rule.options) for t in tags
        ]

    async with anyio.create_task_group() as tg:
        for i, rule in enumerate(config.syncs):
            tg.start_soon(plan, i, rule)
    pairs = [pair for rule_pairs in planned for pair in rule_pairs]
    return failed + await client.copy_many(pairs, keep_going=True, progress=progress)


def report(outcomes: list[CopyOutcome]) -> dict[str, Any]:
    """A JSON-ready report: one entry per item and totals."""
    items = []
    for o in outcomes:
        item: dict[str, Any] = {"source": o.source, "target": o.target}
        if o.result is not None:
            r = o.result
            item.update(
                status="up-to-date" if r.skipped else "copied",
                digest=str(r.digest),
                blobs_moved=r.blobs_moved,
                blobs_skipped=r.blobs_skipped,
                blobs_mounted=r.blobs_mounted,
                bytes_moved=r.bytes_moved,
                seconds=round(r.duration, 3),
            )
        else:
            item.update(status="failed", error=str(o.error))
        items.append(item)
    statuses = [i["status"] for i in items]
    return {
        "items": items,
        "copied": statuses.count("copied"),
        "up_to_date": statuses.count("up-to-date"),
        "failed": statuses.count("failed"),
        "bytes_moved": sum(i.get("bytes_moved", 0) for i in items),
    }
