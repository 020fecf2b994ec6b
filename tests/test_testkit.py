"""Tests of the test kit itself: real registries, the image builder, skopeo seeding.

Every other integration test trusts these pieces, so they are checked
against independent references: hashlib for digests, gzip and tarfile for
layers, urllib for the registry's HTTP answers, skopeo for pushing.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os
import socket
import ssl
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from asyncreg.testkit.builder import (
    MT_DOCKER_LAYER,
    MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST,
    MT_OCI_EMPTY,
    MT_OCI_INDEX,
    MT_OCI_LAYER,
    MT_OCI_MANIFEST,
    REF_NAME,
    BuiltImage,
    ImageBuilder,
    ImageSpec,
    LayerSpec,
)
from asyncreg.testkit.registry import (
    RegistryOptions,
    RegistryProcess,
    find_free_port,
    require_tools,
)
from asyncreg.testkit.skopeo import (
    SkopeoError,
    push_layout,
    skopeo_copy,
    skopeo_copy_async,
    skopeo_inspect_raw,
)
from tests.fixtures import Seeder

ACCEPT_ALL = ", ".join([MT_OCI_MANIFEST, MT_OCI_INDEX, MT_DOCKER_MANIFEST, MT_DOCKER_LIST])


def _get(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request with urllib; HTTP errors come back as a status, not an exception.

    Header names are lower-cased: Go spells ``WWW-Authenticate`` as ``Www-Authenticate``.
    """
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def _manifest(reg: RegistryProcess, repo: str, ref: str, accept: str) -> tuple[bytes, str]:
    status, headers, body = _get(f"{reg.url}/v2/{repo}/manifests/{ref}", headers={"Accept": accept})
    assert status == 200, body
    return body, headers["docker-content-digest"]


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- registry -------------------------------------------------------------------------


def test_registry_answers_v2(registry: RegistryProcess) -> None:
    status, headers, body = _get(f"{registry.url}/v2/")
    assert status == 200
    assert headers["docker-distribution-api-version"] == "registry/2.0"
    assert body == b"{}"
    assert registry.host == f"127.0.0.1:{registry.port}"
    assert registry.url == f"http://{registry.host}"
    assert registry.ca_pem is None
    assert registry.storage_dir.is_dir()
    assert registry.log_path.exists()


def test_htpasswd_registry_needs_credentials(auth_registry: RegistryProcess) -> None:
    assert auth_registry.username == "alice"
    assert auth_registry.password
    status, headers, _ = _get(f"{auth_registry.url}/v2/")
    assert status == 401
    assert headers["www-authenticate"].startswith("Basic ")

    token = base64.b64encode(f"alice:{auth_registry.password}".encode()).decode()
    status, _, _ = _get(f"{auth_registry.url}/v2/", headers={"Authorization": f"Basic {token}"})
    assert status == 200

    wrong = base64.b64encode(b"alice:not-the-password").decode()
    status, _, _ = _get(f"{auth_registry.url}/v2/", headers={"Authorization": f"Basic {wrong}"})
    assert status == 401


def test_tls_registry_trusts_only_its_ca(tls_registry: RegistryProcess) -> None:
    assert tls_registry.url.startswith("https://")
    assert tls_registry.ca_pem is not None
    assert tls_registry.ca_pem.exists()
    context = tls_registry.ssl_context()
    status, _, _ = _get(f"{tls_registry.url}/v2/", context=context)
    assert status == 200

    with pytest.raises(urllib.error.URLError) as info:
        _get(f"{tls_registry.url}/v2/", context=ssl.create_default_context())
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)


def test_stop_kills_the_process_and_is_idempotent() -> None:
    reg = RegistryProcess().start()
    pid, port, workdir = reg.pid, reg.port, reg.workdir
    assert Path(f"/proc/{pid}").exists()
    reg.stop()
    assert not reg.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not workdir.exists()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    reg.stop()  # a second stop does nothing


def test_reset_wipes_storage_and_keeps_the_port(tmp_path: Path) -> None:
    builder = ImageBuilder(tmp_path / "layout")
    built = builder.image("v1", ImageSpec(layers=1, layer_size=1024))
    with RegistryProcess() as reg:
        port, old_pid = reg.port, reg.pid
        push_layout(builder.root, "v1", reg.host, "reset/me")
        assert _manifest(reg, "reset/me", "v1", MT_OCI_MANIFEST)[1] == built.digest
        reg.reset()
        assert reg.port == port
        assert reg.pid != old_pid
        assert reg.running
        status, _, _ = _get(f"{reg.url}/v2/reset/me/manifests/v1")
        assert status == 404


def test_redirect_middleware_sends_blob_gets_elsewhere(tmp_path: Path) -> None:
    # distribution 2.8 keeps only the scheme and host of baseurl: its path is dropped.
    origin = "http://127.0.0.2:9"
    builder = ImageBuilder(tmp_path / "layout")
    built = builder.image("v1", ImageSpec(layers=1, layer_size=1024))
    with RegistryProcess(RegistryOptions(redirect_baseurl=origin + "/ignored")) as reg:
        push_layout(builder.root, "v1", reg.host, "redir/x")
        layer = built.layers[0]

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: object, **kwargs: object) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as info:
            opener.open(f"{reg.url}/v2/redir/x/blobs/{layer.digest}", timeout=5)
        assert info.value.code == 307
        path = f"docker/registry/v2/blobs/sha256/{layer.hex[:2]}/{layer.hex}/data"
        assert info.value.headers["Location"] == f"{origin}/{path}"
        # The redirect points at the blob's real path under the storage root.
        stored = reg.storage_dir / path
        assert stored.read_bytes() == builder.blob_path(layer.digest).read_bytes()
        # Manifests are not redirected.
        assert _manifest(reg, "redir/x", "v1", MT_OCI_MANIFEST)[0] == built.manifest


def test_registry_env_overrides_are_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    # distribution reads REGISTRY_* as config overrides; these would break the start.
    monkeypatch.setenv("REGISTRY_HTTP_ADDR", "256.0.0.1:1")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", "/nonexistent")
    with RegistryProcess() as reg:
        assert _get(f"{reg.url}/v2/")[0] == 200


def test_failed_start_raises_with_the_log_tail() -> None:
    reg = RegistryProcess(RegistryOptions(redirect_baseurl="no-scheme"))
    with pytest.raises(RuntimeError, match=r"(?s)exited with status \d+.*no scheme specified"):
        reg.start()
    assert not reg.running
    reg.stop()


def test_require_tools_fails_loudly() -> None:
    require_tools("docker-registry", "skopeo")
    with pytest.raises(RuntimeError, match="no-such-tool-xyz not found: run `make test`"):
        require_tools("no-such-tool-xyz")


def test_find_free_port_is_bindable() -> None:
    port = find_free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# --- builder --------------------------------------------------------------------------


def _check_layout(root: Path) -> dict[str, object]:
    """Every blob hashes to its name; oci-layout and index.json are valid."""
    assert orjson.loads((root / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    blobs = list((root / "blobs" / "sha256").iterdir())
    assert blobs
    for path in blobs:
        assert not path.name.startswith("."), f"leftover temp file {path}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    index = orjson.loads((root / "index.json").read_bytes())
    assert index["schemaVersion"] == 2
    for entry in index["manifests"]:
        blob = root / "blobs" / "sha256" / entry["digest"].removeprefix("sha256:")
        assert blob.stat().st_size == entry["size"]
        assert orjson.loads(blob.read_bytes())["mediaType"] == entry["mediaType"]
        assert entry["annotations"][REF_NAME]
    result: dict[str, object] = index
    return result


def test_builder_writes_a_valid_layout(builder: ImageBuilder) -> None:
    spec = ImageSpec(layers=3, layer_size=3 * 1024 * 1024 + 5, annotations={"a": "b"})
    built = builder.image("v1", spec)
    index = _check_layout(builder.root)
    assert index["manifests"] == [
        {
            "annotations": {REF_NAME: "v1"},
            "digest": built.digest,
            "mediaType": MT_OCI_MANIFEST,
            "size": built.size,
        }
    ]
    manifest = orjson.loads(built.manifest)
    assert built.digest == _sha256(built.manifest)
    assert manifest["annotations"] == {"a": "b"}
    assert [d["digest"] for d in manifest["layers"]] == [d.digest for d in built.layers]
    assert built.blobs == (built.config, *built.layers)
    config = orjson.loads(builder.blob_path(manifest["config"]["digest"]).read_bytes())
    assert config["os"] == "linux"
    assert config["architecture"] == "amd64"
    assert config["rootfs"]["diff_ids"] == list(built.diff_ids)

    for layer, diff_id in zip(built.layers, built.diff_ids, strict=True):
        assert layer.media_type == MT_OCI_LAYER
        raw = builder.blob_path(layer.digest).read_bytes()
        assert raw[:2] == b"\x1f\x8b"  # gzip magic: skopeo leaves it alone
        assert len(raw) == layer.size
        # Stored deflate blocks: within 0.1 % + headers of the requested size.
        assert spec.layer_size < layer.size < spec.layer_size * 1.001 + 4096
        tar_bytes = gzip.decompress(raw)
        assert _sha256(tar_bytes) == diff_id
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            members = tar.getmembers()
            assert len(members) == 1
            assert members[0].isfile()
            assert members[0].size == spec.layer_size
            extracted = tar.extractfile(members[0])
            assert extracted is not None
            assert len(extracted.read()) == spec.layer_size


def test_builder_is_deterministic_per_seed(tmp_path: Path) -> None:
    def build(root: Path, seed: int) -> list[str]:
        b = ImageBuilder(root, seed=seed)
        img = b.image("a", ImageSpec(layers=2, layer_size=2000))
        idx = b.index("b", ["linux/amd64", "linux/arm64"], ImageSpec(layer_size=100))
        art = b.artifact("c", img)
        return [img.digest, idx.digest, art.digest]

    first = build(tmp_path / "one", 7)
    assert build(tmp_path / "two", 7) == first
    assert set(build(tmp_path / "three", 8)).isdisjoint(first)


def test_builder_shares_layers_when_asked(builder: ImageBuilder) -> None:
    a = builder.image("a", ImageSpec(layers=3, layer_size=1000, shared_layers=2))
    b = builder.image("b", ImageSpec(layers=2, layer_size=1000, shared_layers=1))
    assert a.layers[0] == b.layers[0]
    assert len({d.digest for d in (*a.layers, *b.layers)}) == 4
    assert a.digest != b.digest
    mixed = builder.image(
        "c", ImageSpec(layer_specs=(LayerSpec(size=1000, shared=True), LayerSpec(size=10)))
    )
    assert mixed.layers[0] == a.layers[0]
    # 512 header + 512 data + 1024 end-of-archive, plus gzip framing.
    assert 2048 < mixed.layers[1].size < 2048 + 64
    with pytest.raises(ValueError, match="shared_layers"):
        builder.image("d", ImageSpec(layers=1, shared_layers=2))
    _check_layout(builder.root)


def test_builder_retags_and_extends_existing_layouts(builder: ImageBuilder) -> None:
    first = builder.image("v1", ImageSpec(layers=1, layer_size=10))
    second = builder.image("v1", ImageSpec(layers=1, layer_size=20))
    again = ImageBuilder(builder.root, seed=1)
    third = again.image("v2", ImageSpec(layers=0))
    index = _check_layout(builder.root)
    assert isinstance(index["manifests"], list)
    digests = {e["annotations"][REF_NAME]: e["digest"] for e in index["manifests"]}
    assert digests == {"v1": second.digest, "v2": third.digest}
    assert first.digest != second.digest


def test_builder_index_and_docker_media(builder: ImageBuilder) -> None:
    spec = ImageSpec(layers=2, layer_size=500, shared_layers=1)
    idx = builder.index("multi", ["linux/amd64", "linux/arm/v7"], spec)
    doc = orjson.loads(idx.manifest)
    assert doc["mediaType"] == MT_OCI_INDEX
    assert [m["platform"] for m in doc["manifests"]] == [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm", "variant": "v7"},
    ]
    amd, arm = idx.children
    assert amd.layers[0] == arm.layers[0]
    assert amd.layers[1] != arm.layers[1]
    assert len(idx.blobs) == 5  # 2 configs + 1 shared + 2 own layers
    arm_config = orjson.loads(builder.blob_path(arm.blobs[0].digest).read_bytes())
    assert arm_config["variant"] == "v7"

    dl = builder.index("dmulti", ["linux/amd64"], spec, media="docker")
    assert dl.media_type == MT_DOCKER_LIST
    child = dl.children[0]
    assert child.media_type == MT_DOCKER_MANIFEST
    assert {d.media_type for d in child.layers} == {MT_DOCKER_LAYER}
    assert list(idx.manifests()) == [idx, amd, arm]
    _check_layout(builder.root)


def test_builder_artifact_shape(builder: ImageBuilder) -> None:
    subject = builder.image("v1", ImageSpec(layers=1, layer_size=10))
    art = builder.artifact("sig", subject)
    doc = orjson.loads(art.manifest)
    assert doc["mediaType"] == MT_OCI_MANIFEST
    assert doc["artifactType"] == "application/vnd.example.signature"
    assert doc["config"] == {
        "mediaType": MT_OCI_EMPTY,
        "digest": _sha256(b"{}"),
        "size": 2,
    }
    assert builder.blob_path(doc["config"]["digest"]).read_bytes() == b"{}"
    assert len(doc["layers"]) == 1
    assert doc["subject"] == {
        "mediaType": MT_OCI_MANIFEST,
        "digest": subject.digest,
        "size": subject.size,
    }
    _check_layout(builder.root)


# --- skopeo seeding -----------------------------------------------------------------


def _assert_in_registry(reg: RegistryProcess, repo: str, ref: str, built: BuiltImage) -> None:
    """The registry serves the builder's exact manifest bytes and every blob."""
    body, digest = _manifest(reg, repo, ref, built.media_type)
    assert body == built.manifest
    assert digest == built.digest
    for child in built.children:
        _assert_in_registry(reg, repo, child.digest, child)
    for blob in built.blobs:
        status, headers, _ = _get(f"{reg.url}/v2/{repo}/blobs/{blob.digest}", method="HEAD")
        assert status == 200, blob
        assert int(headers["content-length"]) == blob.size


@pytest.mark.parametrize(
    "kind", ["oci-image", "docker-image", "oci-index", "docker-list", "artifact"]
)
def test_seed_with_skopeo_keeps_digests(
    kind: str, builder: ImageBuilder, registry: RegistryProcess, repo_name: str
) -> None:
    spec = ImageSpec(layers=2, layer_size=20_000, shared_layers=1)
    platforms = ["linux/amd64", "linux/arm64/v8"]
    if kind == "oci-image":
        built = builder.image("v1", spec)
    elif kind == "docker-image":
        built = builder.image("v1", ImageSpec(layers=2, layer_size=20_000, media="docker"))
    elif kind == "oci-index":
        built = builder.index("v1", platforms, spec)
    elif kind == "docker-list":
        built = builder.index("v1", platforms, spec, media="docker")
    else:
        subject = builder.image("base", spec)
        push_layout(builder.root, "base", registry.host, repo_name)
        built = builder.artifact("v1", subject)
    ref = push_layout(builder.root, "v1", registry.host, repo_name)
    assert ref == f"{registry.host}/{repo_name}:v1"
    _assert_in_registry(registry, repo_name, "v1", built)
    assert skopeo_inspect_raw(f"docker://{ref}") == built.manifest
    if kind == "artifact":
        assert built.subject is not None
        body, _ = _manifest(registry, repo_name, built.subject.digest, MT_OCI_MANIFEST)
        assert orjson.loads(built.manifest)["subject"]["digest"] == _sha256(body)


def test_seeded_fixture(seeded: Seeder, registry: RegistryProcess, repo_name: str) -> None:
    built, ref = seeded(ImageSpec(layers=1, layer_size=1000), tag="t1")
    assert ref == f"{registry.host}/{repo_name}:t1"
    _assert_in_registry(registry, repo_name, "t1", built)
    idx, ref2 = seeded(tag="t2", platforms=["linux/amd64", "linux/s390x"])
    assert ref2.endswith(":t2")
    assert idx.is_index
    _assert_in_registry(registry, repo_name, "t2", idx)


def test_skopeo_copy_between_registries_async(
    seeded: Seeder, registry: RegistryProcess, registry_b: RegistryProcess, repo_name: str
) -> None:
    import asyncio

    built, ref = seeded(platforms=["linux/amd64", "linux/arm64"])
    dst = f"docker://{registry_b.host}/{repo_name}:copied"
    asyncio.run(skopeo_copy_async(f"docker://{ref}", dst, "--all", "--preserve-digests"))
    _assert_in_registry(registry_b, repo_name, "copied", built)


def test_skopeo_pushes_with_credentials(
    builder: ImageBuilder, auth_registry: RegistryProcess, repo_name: str
) -> None:
    built = builder.image("v1", ImageSpec(layers=1, layer_size=1000))
    with pytest.raises(SkopeoError, match=r"unauthorized|authentication required"):
        push_layout(builder.root, "v1", auth_registry.host, repo_name)
    assert auth_registry.username
    assert auth_registry.password
    creds = (auth_registry.username, auth_registry.password)
    push_layout(builder.root, "v1", auth_registry.host, repo_name, creds=creds)
    raw = skopeo_inspect_raw(
        f"docker://{auth_registry.host}/{repo_name}:v1", f"--creds={creds[0]}:{creds[1]}"
    )
    assert raw == built.manifest


def test_skopeo_pushes_to_tls_registry(
    builder: ImageBuilder, tls_registry: RegistryProcess, repo_name: str
) -> None:
    built = builder.image("v1", ImageSpec(layers=1, layer_size=1000))
    push_layout(builder.root, "v1", tls_registry.host, repo_name)
    context = tls_registry.ssl_context()
    status, _, body = _get(
        f"{tls_registry.url}/v2/{repo_name}/manifests/v1",
        headers={"Accept": ACCEPT_ALL},
        context=context,
    )
    assert status == 200
    assert body == built.manifest


def test_skopeo_error_carries_stderr(registry: RegistryProcess, tmp_path: Path) -> None:
    with pytest.raises(SkopeoError) as info:
        skopeo_copy(f"docker://{registry.host}/no/such:tag", f"oci:{tmp_path / 'out'}:x")
    assert "manifest unknown" in str(info.value)
    assert info.value.returncode not in (None, 0)
    assert "manifest unknown" in info.value.stderr

    async def fail() -> None:
        await skopeo_copy_async(f"docker://{registry.host}/no/such:tag", f"dir:{tmp_path / 'd'}")

    import asyncio

    with pytest.raises(SkopeoError, match="manifest unknown"):
        asyncio.run(fail())


def test_skopeo_error_hides_passwords(auth_registry: RegistryProcess, tmp_path: Path) -> None:
    src = f"docker://{auth_registry.host}/no/such:tag"
    with pytest.raises(SkopeoError) as info:
        skopeo_copy(src, f"dir:{tmp_path / 'd'}", "--src-creds=alice:hunter2-secret")
    assert "hunter2-secret" not in str(info.value)
    assert "--src-creds=alice:***" in str(info.value)


def test_cancelling_async_copy_kills_skopeo(
    seeded: Seeder, registry_b: RegistryProcess, repo_name: str
) -> None:
    import asyncio

    _, ref = seeded(ImageSpec(layers=1, layer_size=1000))
    before = set(_skopeo_pids())

    async def cancelled() -> None:
        async with asyncio.timeout(0.02):
            await skopeo_copy_async(f"docker://{ref}", f"docker://{registry_b.host}/{repo_name}:x")

    with pytest.raises(TimeoutError):
        asyncio.run(cancelled())
    assert set(_skopeo_pids()) <= before


def _skopeo_pids() -> list[int]:
    """PIDs of skopeo processes that are children of this test process."""
    me = str(os.getpid())
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        head, _, tail = text.rpartition(")")
        comm = head.partition("(")[2]
        if comm == "skopeo" and tail.split()[1] == me:
            pids.append(int(stat.parent.name))
    return pids


def test_push_layout_names_missing_tags(builder: ImageBuilder, registry: RegistryProcess) -> None:
    builder.image("v1", ImageSpec(layers=0))
    with pytest.raises(ValueError, match=r"tag 'nope' not in .*\['v1'\]"):
        push_layout(builder.root, "nope", registry.host, "x/y")


def test_registry_start_is_quick() -> None:
    start = time.monotonic()
    with RegistryProcess():
        pass
    assert time.monotonic() - start < 5
