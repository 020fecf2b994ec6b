"""Every byte path obeys the same retry, Retry-After, host-pause, fallback and accounting rules.

The engine moves blob bytes on several paths and picks one by itself: a
``splice`` relay between plain-HTTP registries, ``sendfile`` from an OCI
layout or a tar being imported, worker-thread fetches into a layout or a tar,
and the aiohttp stream (forced with ``Limits(zero_copy=False)``, and always
taken for TLS). A fault must cost the same on each: one attempt budget per
blob, the same fallbacks, the same pause after a 429 and statistics that count
each byte and each blob once. So every test here is parametrized by path
(`PATHS`), a `FaultProxy` sits in front of the registry whose requests it
breaks, and the proxy's journal is the evidence.

One helper, `prepared`, builds the source a path needs (a registry seeded
with skopeo, a layout, a tar, a TLS registry) and names the target;
`Case.run` does the copy, import or export. Retries are fast (`FAST`): the
tests count attempts, they do not wait for backoff; the only timed asserts are
the quiet windows after a 429.
"""

from __future__ import annotations

import email.utils
import hashlib
import sys
import tarfile
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from asyncreg import Client, CopyResult, HostConfig, Limits, Progress, RetryPolicy
from asyncreg.engine.progress import Event
from asyncreg.errors import ArchiveError, AsyncregError, ManifestError, RegistryError
from asyncreg.testkit.builder import BuiltImage, ImageBuilder, ImageSpec
from asyncreg.testkit.proxy import (
    DropBodyAfter,
    FaultProxy,
    LoopbackTLS,
    RecordedRequest,
    Rule,
    Status,
)
from asyncreg.testkit.registry import RegistryProcess
from asyncreg.testkit.skopeo import push_layout
from asyncreg.testkit.validate import validate

pytestmark = pytest.mark.anyio

KIB = 1024
MIB = 1024 * KIB
ATTEMPTS = 3
RESUMES = 2
#: Quick retries: attempts are counted at the proxy, nobody waits for backoff.
FAST = RetryPolicy(attempts=ATTEMPTS, resume_attempts=RESUMES, backoff_base=0.01, backoff_cap=0.05)
#: The default image: config and two small layers.
SPEC = ImageSpec(layers=2, layer_size=256 * KIB)
#: Several layers and few slots, so other tasks want to send while one is told to wait.
BUSY = ImageSpec(layers=5, layer_size=256 * KIB)
UPLOAD_PUT = "/blobs/uploads/"
#: Requests that arrive this soon after a 429 was answered were already on their way.
IN_FLIGHT_GRACE = 0.05
#: Slack at the end of a Retry-After window (timer and clock granularity).
PAUSE_TOLERANCE = 0.1

Store = Literal["registry", "layout", "tar", "tls"]
Side = Literal["source", "target"]


@dataclass(frozen=True)
class BytePath:
    """A way blob bytes move: what the source and target are, and whether zero-copy is on."""

    id: str
    source: Store
    target: Store
    zero_copy: bool

    @property
    def raw(self) -> bool:
        """Moves blobs on sockets of its own (splice, sendfile, fetch, the TLS thread relay).

        Their requests say ``Connection: close``; aiohttp's do not.
        """
        return self.zero_copy

    @property
    def tls(self) -> bool:
        """Speaks TLS to the registries."""
        return "tls" in (self.source, self.target)

    @property
    def default_side(self) -> Side:
        """Where the proxy goes when a test does not care: the registry source, if any."""
        return "source" if self.source in ("registry", "tls") else "target"


PATHS = {
    p.id: p
    for p in (
        BytePath("splice", "registry", "registry", True),
        BytePath("stream", "registry", "registry", False),
        BytePath("sendfile", "layout", "registry", True),
        BytePath("layout-stream", "layout", "registry", False),
        BytePath("import-sendfile", "tar", "registry", True),
        BytePath("import-stream", "tar", "registry", False),
        BytePath("layout-fetch", "registry", "layout", True),
        BytePath("layout-pull-stream", "registry", "layout", False),
        BytePath("export-fetch", "registry", "tar", True),
        BytePath("export-stream", "registry", "tar", False),
        BytePath("tls", "tls", "tls", True),
        BytePath("tls-stream", "tls", "tls", False),
    )
}
#: Paths that GET blobs from a registry: faults on the source side.
GET_PATHS = [k for k, p in PATHS.items() if p.source in ("registry", "tls")]
#: Paths that upload blobs to a registry: faults on the target side.
PUT_PATHS = [k for k, p in PATHS.items() if p.target in ("registry", "tls")]


# --- building a case ---------------------------------------------------------------------


@dataclass
class Lab:
    """The fixtures a case is built from; the TLS registry starts only when a case needs it."""

    request: pytest.FixtureRequest
    builder: ImageBuilder
    registry: RegistryProcess
    registry_b: RegistryProcess
    tmp_path: Path
    repo_name: str

    def tls_registry(self) -> RegistryProcess:
        reg: RegistryProcess = self.request.getfixturevalue("tls_registry")
        return reg


@pytest.fixture
def lab(
    request: pytest.FixtureRequest,
    builder: ImageBuilder,
    registry: RegistryProcess,
    registry_b: RegistryProcess,
    tmp_path: Path,
    repo_name: str,
) -> Lab:
    return Lab(request, builder, registry, registry_b, tmp_path, repo_name)


@dataclass
class Case:
    """One transfer on one path, with the proxy in front of the registry on ``side``."""

    path: BytePath
    side: Side
    built: BuiltImage
    proxy: FaultProxy
    src: str
    dst: str
    hosts: dict[str, HostConfig]
    check: Callable[[], Awaitable[None]]

    def client(self, **limits: Any) -> Client:
        """A client with `FAST` retries and the path's zero-copy setting (plus ``limits``)."""
        return Client(
            limits=Limits(retry=FAST, zero_copy=self.path.zero_copy, **limits), hosts=self.hosts
        )

    async def transfer(
        self,
        client: Client,
        *,
        progress: Progress | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> CopyResult:
        """Copy, import or export ``src`` to ``dst``, as the path says."""
        if self.path.source == "tar":
            results = await client.import_(self.src, self.dst, progress=progress, on_event=on_event)
        elif self.path.target == "tar":
            results = await client.export(
                [self.src], self.dst, progress=progress, on_event=on_event
            )
        else:
            return await client.copy(self.src, self.dst, progress=progress, on_event=on_event)
        [result] = results
        return result

    async def run(self, **limits: Any) -> CopyResult:
        """The transfer with a fresh client and a clean proxy journal."""
        self.proxy.reset_log()
        async with self.client(**limits) as client:
            return await self.transfer(client)

    async def fails(self, **limits: Any) -> AsyncregError:
        """The transfer, which must fail with an asyncreg error (returned)."""
        with pytest.raises(AsyncregError) as info:
            await self.run(**limits)
        return info.value


def _tar_of(root: Path, out: Path) -> Path:
    with tarfile.open(out, "w") as tar:
        tar.add(root, arcname=".")
    return out


def _check_tar(out: Path, built: BuiltImage) -> None:
    """Every blob and the manifest are in the tar, with the right bytes."""
    with tarfile.open(out) as tar:
        for name, digest, size in [
            *((f"blobs/sha256/{b.hex}", b.digest, b.size) for b in built.blobs),
            (f"blobs/sha256/{built.hex}", built.digest, built.size),
        ]:
            member = tar.extractfile(name)
            assert member is not None, name
            data = member.read()
            assert (len(data), "sha256:" + hashlib.sha256(data).hexdigest()) == (size, digest)


async def _validate(hosts: dict[str, HostConfig], repo: str, built: BuiltImage) -> None:
    """Re-read the image tagged ``v1`` from ``repo`` (not through any proxy)."""
    async with Client(hosts=hosts) as client:
        checked = await validate(client.repo(repo), "v1")
    assert str(checked.digest) == built.digest


@asynccontextmanager
async def prepared(
    lab: Lab,
    path_id: str,
    side: Side | None = None,
    spec: ImageSpec = SPEC,
    *,
    same_registry: bool = False,
) -> AsyncIterator[Case]:
    """Build the source ``path_id`` reads, start the proxy on ``side``, name the target.

    ``same_registry`` (registry to registry only) copies into another
    repository of the source registry, through the same proxy, so the engine
    tries a cross-repository mount.
    """
    path = PATHS[path_id]
    side = side or path.default_side
    store = path.source if side == "source" else path.target
    assert store in ("registry", "tls"), f"{path_id}: no registry on the {side} side"
    built = lab.builder.image("latest", spec)
    repo = lab.repo_name
    hosts: dict[str, HostConfig] = {}
    tls = lab.tls_registry() if store == "tls" else None
    if tls is not None:
        assert tls.ca_pem is not None
        hosts[tls.host] = HostConfig(ca_file=str(tls.ca_pem))
        cert = LoopbackTLS()
        proxy_ca = cert.write_ca(lab.tmp_path / "proxy-ca.pem")
        proxy = FaultProxy(tls.url, ssl_context=cert.server_context(), upstream_ca_file=tls.ca_pem)
    else:
        proxy = FaultProxy((lab.registry if side == "source" else lab.registry_b).url)
    async with proxy:
        if tls is not None:
            hosts[proxy.host] = HostConfig(ca_file=str(proxy_ca))
        front = proxy.host

        # The source.
        if path.source == "registry":
            push_layout(lab.builder.root, "latest", lab.registry.host, repo)
            host = front if side == "source" else lab.registry.host
            src = f"{host}/{repo}:latest"
        elif path.source == "tls":
            assert tls is not None
            async with Client(hosts=hosts) as seeder:
                await seeder.copy(
                    f"ocidir://{lab.builder.root}:latest", f"{tls.host}/{repo}:latest"
                )
            src = f"{front if side == 'source' else tls.host}/{repo}:latest"
        elif path.source == "layout":
            src = f"ocidir://{lab.builder.root}:latest"
        else:
            src = str(_tar_of(lab.builder.root, lab.tmp_path / "source.tar"))

        # The target, and how to check what arrived there.
        if same_registry:
            assert path.source == path.target == "registry"
            assert side == "source"
            dst = f"{front}/{repo}-copy:v1"

            async def check() -> None:
                await _validate(hosts, f"{lab.registry.host}/{repo}-copy", built)

        elif path.target == "registry":
            dst = f"{front if side == 'target' else lab.registry_b.host}/{repo}:v1"

            async def check() -> None:
                await _validate(hosts, f"{lab.registry_b.host}/{repo}", built)

        elif path.target == "tls":
            assert tls is not None
            dst = f"{front if side == 'target' else tls.host}/{repo}-dst:v1"

            async def check() -> None:
                assert tls is not None
                await _validate(hosts, f"{tls.host}/{repo}-dst", built)

        elif path.target == "layout":
            out = lab.tmp_path / "out"
            dst = f"ocidir://{out}:v1"

            async def check() -> None:
                await _validate(hosts, f"ocidir://{out}", built)

        else:
            out_tar = lab.tmp_path / "out.tar"
            dst = str(out_tar)

            async def check() -> None:
                _check_tar(out_tar, built)

        yield Case(path, side, built, proxy, src, dst, hosts, check)


# --- journal helpers ---------------------------------------------------------------------


def _blob_requests(proxy: FaultProxy, method: str, hexdigest: str) -> list[RecordedRequest]:
    return [r for r in proxy.requests if r.method == method and hexdigest in r.path]


def _upload_puts(proxy: FaultProxy) -> list[RecordedRequest]:
    return [r for r in proxy.requests if r.method == "PUT" and UPLOAD_PUT in r.path]


def _upload_posts(proxy: FaultProxy, *, mounts: bool) -> list[RecordedRequest]:
    return [
        r
        for r in proxy.requests
        if r.method == "POST" and UPLOAD_PUT in r.path and ("mount" in r.query) == mounts
    ]


def _raw(proxy: FaultProxy, method: str) -> int:
    """Blob requests sent by a zero-copy mover (raw sockets say ``Connection: close``)."""
    return sum(
        1
        for r in proxy.requests
        if r.method == method and "/blobs/" in r.path and r.headers.get("Connection") == "close"
    )


# --- the paths themselves ----------------------------------------------------------------


@pytest.mark.parametrize("path_id", list(PATHS))
async def test_each_path_moves_every_blob_once_its_own_way(lab: Lab, path_id: str) -> None:
    """The baseline the other tests rely on: each id really takes its mover, cleanly."""
    async with prepared(lab, path_id) as case:
        result = await case.run()
        await case.check()
        method = "GET" if case.side == "source" else "PUT"
        raw = _raw(case.proxy, method)
    built = case.built
    assert raw == (len(built.blobs) if case.path.raw else 0)
    assert str(result.digest) == built.digest
    assert result.blobs_moved == len(built.blobs)
    assert result.bytes_moved == built.blob_bytes


# --- 1. one attempt budget per blob --------------------------------------------------------


@pytest.mark.parametrize("path_id", GET_PATHS)
async def test_blob_get_failing_forever_is_tried_attempts_times(lab: Lab, path_id: str) -> None:
    async with prepared(lab, path_id, "source") as case:
        layer = case.built.layers[0]
        case.proxy.add_rule(Rule(Status(503), method="GET", path=layer.hex))
        await case.fails()
        gets = len(_blob_requests(case.proxy, "GET", layer.hex))
    assert 1 <= gets <= ATTEMPTS


@pytest.mark.parametrize("path_id", GET_PATHS)
async def test_blob_cut_on_every_get_stops_after_the_whole_budget(lab: Lab, path_id: str) -> None:
    # Each GET makes 100 kB of progress; the budget (5 tries) ends long before 1 MiB.
    async with prepared(lab, path_id, "source", ImageSpec(layers=2, layer_size=MIB)) as case:
        layer = case.built.layers[0]
        case.proxy.add_rule(Rule(DropBodyAfter(100_000), method="GET", path=layer.hex))
        error = await case.fails()
        gets = len(_blob_requests(case.proxy, "GET", layer.hex))
    assert 1 <= gets <= ATTEMPTS + RESUMES
    assert "gave up" in str(error).lower(), str(error)


@pytest.mark.parametrize("path_id", PUT_PATHS)
async def test_upload_put_failing_forever_is_tried_attempts_times(lab: Lab, path_id: str) -> None:
    async with prepared(lab, path_id, "target") as case:
        case.proxy.add_rule(Rule(Status(503), method="PUT", path=UPLOAD_PUT))
        with pytest.raises(RegistryError) as info:
            await case.run()
        per_blob: dict[str, int] = {}
        for r in _upload_puts(case.proxy):
            digest = r.query.get("digest", "")
            per_blob[digest] = per_blob.get(digest, 0) + 1
    assert info.value.status == 503
    assert per_blob
    assert max(per_blob.values()) <= ATTEMPTS, per_blob


# --- 2. bursts are ridden out --------------------------------------------------------------


@pytest.mark.parametrize("path_id", GET_PATHS)
async def test_503_burst_on_a_blob_get_is_ridden_out(lab: Lab, path_id: str) -> None:
    async with prepared(lab, path_id, "source") as case:
        layer = case.built.layers[0]
        rule = case.proxy.add_rule(Rule(Status(503), method="GET", path=layer.hex, times=2))
        result = await case.run()
        await case.check()
    assert rule.applied == 2
    assert str(result.digest) == case.built.digest


@pytest.mark.parametrize("path_id", PUT_PATHS)
async def test_503_burst_on_the_upload_put_is_ridden_out_and_counted_once(
    lab: Lab, path_id: str
) -> None:
    """Also section 8: statistics tell the truth after a retried upload."""
    async with prepared(lab, path_id, "target") as case:
        case.proxy.add_rule(Rule(Status(503), method="PUT", path=UPLOAD_PUT, times=2))
        result = await case.run()
        await case.check()
        refused = sum(1 for r in case.proxy.requests if r.status == 503)
        created = sum(1 for r in _upload_puts(case.proxy) if r.status == 201)
    built = case.built
    assert str(result.digest) == built.digest
    assert refused == 2
    assert result.bytes_moved == built.blob_bytes  # the refused bytes are not counted
    assert result.retries >= refused
    assert result.blobs_moved == created == len(built.blobs)


# --- 3. a refused monolithic upload falls back to chunks -----------------------------------


@pytest.mark.parametrize(
    ("path_id", "status"),
    [*((p, 413) for p in PUT_PATHS), ("stream", 405), ("sendfile", 501)],
)
async def test_refused_monolithic_put_falls_back_to_chunks(
    lab: Lab, path_id: str, status: int
) -> None:
    async with prepared(lab, path_id, "target") as case:
        rule = case.proxy.add_rule(Rule(Status(status), method="PUT", path=UPLOAD_PUT, times=1))
        result = await case.run()
        await case.check()
        patches = case.proxy.count("PATCH", UPLOAD_PUT)
    assert rule.applied == 1
    assert patches >= 1
    assert result.fallbacks >= 1
    assert result.bytes_moved == case.built.blob_bytes


# --- 4. 429 pauses the whole host for Retry-After ------------------------------------------


def _retry_after(form: str) -> tuple[str, Callable[[float], float]]:
    """A ``Retry-After`` value and, from when the 429 was answered, when the pause ends.

    The date form has whole seconds: the client waits until that second, which
    is 1 to 2 s from now; monotonic and wall clocks are related once, here.
    """
    if form == "delta":
        return "1", lambda answered: answered + 1.0
    until = int(time.time()) + 2
    offset = time.monotonic() - time.time()
    return email.utils.formatdate(until, usegmt=True), lambda _: until + offset


def _assert_paused(proxy: FaultProxy, pause_end: Callable[[float], float]) -> None:
    """Nothing reached the host between the 429's answer and the end of its Retry-After.

    Requests arriving within `IN_FLIGHT_GRACE` of the answer were already on
    their way; the rate-limited request itself must be retried after the pause.
    """
    [limited] = [r for r in proxy.requests if r.status == 429]
    answered = limited.answered_at
    assert answered is not None
    start, end = answered + IN_FLIGHT_GRACE, pause_end(answered) - PAUSE_TOLERANCE
    assert end > start
    early = [
        (r.method, r.path, round(r.at - answered, 3)) for r in proxy.requests if start < r.at < end
    ]
    assert early == [], f"sent while the host was paused: {early}"

    def same_blob(r: RecordedRequest) -> bool:
        if r.method != limited.method or r.at <= limited.at:
            return False
        if r.method == "GET":
            return r.path == limited.path
        return r.query.get("digest") == limited.query.get("digest")

    retries = [r for r in proxy.requests if same_blob(r)]
    assert retries, "the rate-limited request was never retried"
    waited = retries[0].at - answered
    assert retries[0].at >= end, f"retried {waited:.3f} s after the 429"


@pytest.mark.parametrize(
    ("path_id", "form"),
    [("splice", "delta"), ("stream", "date"), ("export-fetch", "delta")],
)
async def test_429_on_a_blob_get_pauses_the_source_host(lab: Lab, path_id: str, form: str) -> None:
    async with prepared(lab, path_id, "source", BUSY) as case:
        value, pause_end = _retry_after(form)
        layer = case.built.layers[0]
        limited = Status(429, {"Retry-After": value})
        case.proxy.add_rule(Rule(limited, method="GET", path=layer.hex, times=1))
        result = await case.run(per_host=2)
        await case.check()
        _assert_paused(case.proxy, pause_end)
    assert result.rate_limited >= 1


@pytest.mark.parametrize(
    ("path_id", "form"),
    [("splice", "date"), ("sendfile", "delta"), ("import-stream", "delta")],
)
async def test_429_on_an_upload_put_pauses_the_target_host(
    lab: Lab, path_id: str, form: str
) -> None:
    async with prepared(lab, path_id, "target", BUSY) as case:
        value, pause_end = _retry_after(form)
        limited = Status(429, {"Retry-After": value})
        case.proxy.add_rule(Rule(limited, method="PUT", path=UPLOAD_PUT, times=1))
        result = await case.run(per_host=2)
        await case.check()
        _assert_paused(case.proxy, pause_end)
    assert result.rate_limited >= 1


# --- 5. a cut download resumes at the exact offset -----------------------------------------


@pytest.mark.parametrize("path_id", GET_PATHS)
async def test_cut_blob_resumes_at_the_exact_offset_and_counts_once(lab: Lab, path_id: str) -> None:
    cut = 300_000
    async with prepared(lab, path_id, "source", ImageSpec(layers=2, layer_size=512 * KIB)) as case:
        layer = case.built.layers[0]
        case.proxy.add_rule(Rule(DropBodyAfter(cut), method="GET", path=layer.hex, times=1))
        result = await case.run()
        await case.check()
        ranges = [r.headers.get("Range") for r in _blob_requests(case.proxy, "GET", layer.hex)]
    assert len(ranges) == 2
    assert ranges[0] is None
    if case.path.raw and not case.path.tls:
        # Raw sockets hold every byte the server sent before the cut.
        assert ranges[1] == f"bytes={cut}-"
    else:
        # aiohttp drops what it had buffered but not yet handed over when the
        # connection breaks, and TLS cannot decrypt a record cut in half: the
        # resume starts at the exact byte we received.
        assert ranges[1] is None or _range_start(ranges[1]) in range(1, cut + 1), ranges
    assert result.bytes_moved == case.built.blob_bytes


def _range_start(value: str) -> int:
    assert value.startswith("bytes="), value
    assert value.endswith("-"), value
    return int(value[len("bytes=") : -1])


# --- 6. a refused mount falls back to an upload ---------------------------------------------

_MOUNT_REFUSALS = {
    401: b'{"errors":[{"code":"UNAUTHORIZED","message":"insufficient_scope: no pull access'
    b' to the source repository","detail":{"error":"insufficient_scope"}}]}',
    403: b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}',
    404: b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}',
}


@pytest.mark.parametrize("status", list(_MOUNT_REFUSALS))
@pytest.mark.parametrize("path_id", ["splice", "stream"])
async def test_refused_mount_falls_back_to_an_upload(lab: Lab, path_id: str, status: int) -> None:
    # Config only: one blob, so the first upload POST is its mount (rules see no query).
    async with prepared(lab, path_id, "source", ImageSpec(layers=0), same_registry=True) as case:
        refusal = Status(status, {"Content-Type": "application/json"}, _MOUNT_REFUSALS[status])
        case.proxy.add_rule(Rule(refusal, method="POST", path=UPLOAD_PUT, times=1))
        result = await case.run()
        await case.check()
        mounts = _upload_posts(case.proxy, mounts=True)
        uploads = _upload_posts(case.proxy, mounts=False)
    assert [r.status for r in mounts] == [status]
    assert [r.status for r in uploads] == [202]
    assert (result.blobs_moved, result.blobs_mounted) == (1, 0)


# --- 7. import from stdin --------------------------------------------------------------------


async def test_stdin_import_uploads_each_blob_once(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with prepared(
        lab, "import-stream", "target", ImageSpec(layers=3, layer_size=256 * KIB)
    ) as case:
        with Path(case.src).open("rb") as tar:
            monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=tar))
            case.src = "-"
            result = await case.run()
        await case.check()
        uploads = len(_upload_posts(case.proxy, mounts=False))
    built = case.built
    assert uploads == len(built.blobs)
    assert result.blobs_moved == len(built.blobs)
    assert result.bytes_moved == built.blob_bytes


async def test_stdin_blobs_held_in_memory_ride_out_a_503_burst(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small blobs of a stream are kept in memory while they upload, so a retry can resend them."""
    async with prepared(lab, "import-stream", "target") as case:
        rule = case.proxy.add_rule(Rule(Status(503), method="PUT", path=UPLOAD_PUT, times=2))
        with Path(case.src).open("rb") as tar:
            monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=tar))
            case.src = "-"
            result = await case.run()
        await case.check()
    assert rule.applied == 2
    assert result.retries >= 2
    assert result.bytes_moved == case.built.blob_bytes


async def test_stdin_blob_that_failed_mid_flow_says_to_use_a_file(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large stream blob flows from the tar once: a failed PUT cannot be replayed."""
    async with prepared(lab, "import-stream", "target") as case:
        layer = case.built.layers[0]
        case.proxy.add_rule(Rule(Status(503), method="PUT", path=UPLOAD_PUT, times=1))
        with Path(case.src).open("rb") as tar:
            monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=tar))
            case.src = "-"
            # Blobs over the manifest cap are streamed from the tar, not held in memory.
            with pytest.raises(ArchiveError, match="import the file"):
                await case.run(max_manifest_push=64 * KIB)
        refused = [r.query.get("digest") for r in _upload_puts(case.proxy) if r.status == 503]
    # The refused PUT was a layer's (the tar holds layers before the small config).
    assert refused
    assert refused[0] in {x.digest for x in case.built.layers}
    assert layer.size > 64 * KIB


# --- 8. statistics tell the truth ------------------------------------------------------------


@pytest.mark.parametrize("path_id", list(PATHS))
async def test_in_flight_counts_transfers_holding_a_slot(lab: Lab, path_id: str) -> None:
    per_host = 2
    async with prepared(lab, path_id, spec=BUSY) as case:
        progress = Progress()
        samples: list[tuple[int, int]] = []
        async with case.client(per_host=per_host) as client:

            def sample(event: Event) -> None:
                del event
                held = client._slots.statistics().in_flight
                samples.append((progress.statistics().in_flight, held))

            result = await case.transfer(client, progress=progress, on_event=sample)
        await case.check()
    flying = [f for f, _ in samples]
    assert 1 <= max(flying) <= per_host, flying
    # A transfer in flight holds a slot: never more of them than slots in use.
    assert all(0 <= f <= held for f, held in samples), samples
    assert progress.statistics().in_flight == 0
    assert result.blobs_moved == len(case.built.blobs)


# --- 9. a manifest too large to push moves nothing --------------------------------------------


@pytest.mark.parametrize("path_id", ["sendfile", "layout-stream", "import-stream"])
async def test_manifest_over_the_push_cap_moves_no_blob(lab: Lab, path_id: str) -> None:
    # Over Limits.max_manifest_push (4 MiB), under Limits.max_manifest_size (8 MiB).
    huge = ImageSpec(layers=2, layer_size=256 * KIB, annotations={"pad": "x" * (5 * MIB)})
    async with prepared(lab, path_id, "target", huge) as case:
        assert 4 * MIB < case.built.size < 8 * MIB
        with pytest.raises(ManifestError):
            await case.run()
        posts = case.proxy.count("POST")
        puts = case.proxy.count("PUT")
    assert (posts, puts) == (0, 0)
