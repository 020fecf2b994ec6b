"""Manifest and descriptor parsing, the refusal rules, builders and fuzzing."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asyncreg
from asyncreg import mediatypes as mt
from asyncreg.digest import Digest
from asyncreg.errors import (
    AsyncregError,
    DigestMismatchError,
    InputError,
    ManifestError,
    UnsupportedManifestError,
)
from asyncreg.manifest import DEFAULT_MAX_SIZE, Descriptor, Manifest, build_image, build_index
from asyncreg.platform import Platform

# --- real-world documents -------------------------------------------------------
# Shaped after what Docker Hub, buildkit, Docker and ORAS actually serve, pretty
# printed as registries often do, so that "keep the exact bytes" is visible.

OCI_INDEX_DOC = b"""{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
    {
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "sha256:5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9",
      "size": 1025,
      "platform": {"architecture": "amd64", "os": "linux"}
    },
    {
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "sha256:6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b",
      "size": 1025,
      "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}
    },
    {
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "sha256:d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da3a666eec13ab35",
      "size": 839,
      "annotations": {
        "vnd.docker.reference.digest": "sha256:5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9",
        "vnd.docker.reference.type": "attestation-manifest"
      },
      "platform": {"architecture": "unknown", "os": "unknown"}
    }
  ],
  "annotations": {"org.opencontainers.image.created": "2024-01-27T00:00:00Z"}
}
"""  # noqa: E501

DOCKER_LIST_DOC = b"""{
   "manifests": [
      {
         "digest": "sha256:4e07408562bedb8b60ce05c1decfe3ad16b72230967de01f640b7e4729b49fce",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {"architecture": "amd64", "os": "linux"},
         "size": 528
      },
      {
         "digest": "sha256:4b227777d4dd1fc61c6f884f48641d02b4d121d3fd328cb08b5531fcacdabf8a",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {"architecture": "arm", "os": "linux", "variant": "v7"},
         "size": 528
      },
      {
         "digest": "sha256:ef2d127de37b942baad06145e54b0c619a1f22327b2ebbcfbec78f5564afe39d",
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": {
            "architecture": "amd64",
            "os": "windows",
            "os.version": "10.0.17763.5329",
            "os.features": ["win32k"]
         },
         "size": 1168
      }
   ],
   "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
   "schemaVersion": 2
}"""

DOCKER_IMAGE_DOC = b"""{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1472,
      "digest": "sha256:e7f6c011776e8db7cd330b54174fd76f7d0216b612387a5ffcfb81e6f0919683"
   },
   "layers": [
      {
         "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
         "size": 1718332879,
         "digest": "sha256:7902699be42c8a8e46fbbb4501726517e86b22c56a189f7625a6da49081b2451",
         "urls": ["https://mcr.microsoft.com/v2/windows/servercore/blobs/sha256:7902699be42c8a8e46fbbb4501726517e86b22c56a189f7625a6da49081b2451"]
      },
      {
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 3401613,
         "digest": "sha256:2c624232cdd221771294dfbb310aca000a0df6ac8b66b696d90ef06fdefb64a3"
      }
   ]
}"""

OCI_IMAGE_DOC = b"""{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {
    "mediaType": "application/vnd.oci.image.config.v1+json",
    "digest": "sha256:19581e27de7ced00ff1ce50b2047e7a567c76b1cbaebabe5ef03f7c3017bb5b7",
    "size": 581
  },
  "layers": [
    {
      "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
      "digest": "sha256:4a44dc15364204a80fe80e9039455cc1608281820fe2b24f1e5233ade6af1dd5",
      "size": 3408729
    },
    {
      "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
      "digest": "sha256:4fc82b26aecb47d2868c4efbe3581732a3e7cbcc6c2efb32062c08170a05eeb8",
      "size": 120
    }
  ],
  "annotations": {
    "org.opencontainers.image.base.name": "docker.io/library/alpine:3.19",
    "org.opencontainers.image.revision": "a1b2c3"
  }
}"""

OCI_ARTIFACT_DOC = b"""{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "artifactType": "application/vnd.example.sbom.v1+json",
  "config": {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
    "data": "e30="
  },
  "layers": [
    {
      "mediaType": "application/vnd.example.sbom.v1+json",
      "digest": "sha256:4fc82b26aecb47d2868c4efbe3581732a3e7cbcc6c2efb32062c08170a05eeb8",
      "size": 4012,
      "annotations": {"org.opencontainers.image.title": "sbom.spdx.json"}
    }
  ],
  "subject": {
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9",
    "size": 1025
  },
  "annotations": {"org.opencontainers.image.created": "2024-02-01T10:00:00Z"}
}"""

SCHEMA1_SIGNED_DOC = b"""{
   "schemaVersion": 1,
   "name": "library/hello-world",
   "tag": "latest",
   "architecture": "amd64",
   "fsLayers": [
      {"blobSum": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}
   ],
   "history": [{"v1Compatibility": "{\\"id\\":\\"e45a5af57b00\\"}"}],
   "signatures": [
      {
         "header": {"jwk": {"crv": "P-256", "kty": "EC"}, "alg": "ES256"},
         "signature": "pZ8T0m4x6fVrd5Qk",
         "protected": "eyJmb3JtYXRMZW5ndGgiOjY2MjgsImZvcm1hdFRhaWwiOiJDbjAiLCJ0aW1lIjoiMjAxNS0ifQ"
      }
   ]
}"""

H1 = "sha256:5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9"
H2 = "sha256:6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
H3 = "sha256:d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da3a666eec13ab35"


def _desc(media_type: str = mt.OCI_LAYER_GZIP, digest: str = H1, size: Any = 10) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def _image(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _desc(mt.OCI_CONFIG, H2, 5),
        "layers": [_desc()],
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not _DROP}


def _index(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [_desc(mt.OCI_MANIFEST, H3, 300)],
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not _DROP}


_DROP: Any = object()


def _raw(doc: object) -> bytes:
    return orjson.dumps(doc)


# --- views of real documents ----------------------------------------------------


def test_oci_index_views() -> None:
    m = Manifest.parse(OCI_INDEX_DOC, mt.OCI_INDEX)
    assert m.media_type == mt.OCI_INDEX
    assert m.is_index
    assert not m.is_image
    assert m.raw is OCI_INDEX_DOC
    assert m.size == len(OCI_INDEX_DOC)
    assert m.digest == Digest("sha256", hashlib.sha256(OCI_INDEX_DOC).hexdigest())
    assert m.config is None
    assert m.layers == ()
    assert m.blobs() == ()
    assert m.subject is None
    assert m.artifact_type == ""
    assert m.annotations == {"org.opencontainers.image.created": "2024-01-27T00:00:00Z"}
    assert [str(d.platform) for d in m.manifests] == [
        "linux/amd64",
        "linux/arm64/v8",
        "unknown/unknown",
    ]
    assert m.manifests[2].annotations["vnd.docker.reference.type"] == "attestation-manifest"
    assert m.manifests[0].digest == Digest.parse(H1)
    assert m.references() == m.manifests


def test_docker_manifest_list_views() -> None:
    m = Manifest.parse(DOCKER_LIST_DOC, "application/vnd.docker.distribution.manifest.list.v2+json")
    assert m.media_type == mt.DOCKER_MANIFEST_LIST
    assert m.is_index
    windows = m.manifests[2].platform
    assert windows == Platform("windows", "amd64", "", "10.0.17763.5329", ("win32k",))
    assert m.manifests[1].platform == Platform("linux", "arm", "v7")
    assert all(d.media_type == mt.DOCKER_MANIFEST for d in m.references())


def test_docker_image_views() -> None:
    m = Manifest.parse(DOCKER_IMAGE_DOC)
    assert m.media_type == mt.DOCKER_MANIFEST
    assert m.is_image
    assert not m.is_index
    assert m.config is not None
    assert m.config.media_type == mt.DOCKER_CONFIG
    assert m.config.size == 1472
    foreign, regular = m.layers
    assert mt.is_foreign_layer(foreign.media_type)
    assert foreign.urls[0].startswith("https://mcr.microsoft.com/")
    assert foreign.size == 1718332879
    assert regular.urls == ()
    assert m.blobs() == (m.config, foreign, regular)
    assert m.references() == m.blobs()
    assert m.manifests == ()


def test_oci_image_views() -> None:
    m = Manifest.parse(OCI_IMAGE_DOC, "application/vnd.oci.image.manifest.v1+json")
    assert m.media_type == mt.OCI_MANIFEST
    assert [d.media_type for d in m.blobs()] == [
        mt.OCI_CONFIG,
        mt.OCI_LAYER_GZIP,
        mt.OCI_LAYER_ZSTD,
    ]
    assert m.annotations["org.opencontainers.image.base.name"] == "docker.io/library/alpine:3.19"
    assert m.effective_artifact_type == mt.OCI_CONFIG


def test_oci_artifact_with_subject() -> None:
    m = Manifest.parse(OCI_ARTIFACT_DOC)
    assert m.artifact_type == "application/vnd.example.sbom.v1+json"
    assert m.effective_artifact_type == "application/vnd.example.sbom.v1+json"
    assert m.subject is not None
    assert m.subject.digest == Digest.parse(H1)
    assert m.config is not None
    assert m.config.media_type == mt.OCI_EMPTY
    # the subject is not something that must exist before the push
    assert m.subject not in m.references()
    assert m.references() == (m.config, m.layers[0])
    assert m.layers[0].annotations == {"org.opencontainers.image.title": "sbom.spdx.json"}


def test_views_are_read_only() -> None:
    m = Manifest.parse(OCI_IMAGE_DOC)
    with pytest.raises(TypeError):
        m.annotations["x"] = "y"  # type: ignore[index]
    with pytest.raises(AttributeError):
        m.media_type = mt.OCI_INDEX  # type: ignore[misc]
    assert isinstance(m.layers, tuple)


def test_exact_bytes_kept_not_reserialised() -> None:
    compact = orjson.dumps(orjson.loads(OCI_IMAGE_DOC))
    a, b = Manifest.parse(OCI_IMAGE_DOC), Manifest.parse(compact)
    assert a.raw == OCI_IMAGE_DOC
    assert a.digest != b.digest  # same JSON, different bytes, different identity
    assert a.layers == b.layers
    assert a != b
    assert a == Manifest.parse(bytes(OCI_IMAGE_DOC))
    assert hash(a) == hash(Manifest.parse(OCI_IMAGE_DOC))


def test_bytearray_and_memoryview_accepted() -> None:
    m = Manifest.parse(bytearray(OCI_IMAGE_DOC))  # type: ignore[arg-type]
    assert m.raw == OCI_IMAGE_DOC
    assert isinstance(m.raw, bytes)
    assert Manifest.parse(memoryview(OCI_IMAGE_DOC)).digest == m.digest  # type: ignore[arg-type]


def test_descriptor_of_manifest() -> None:
    m = Manifest.parse(OCI_ARTIFACT_DOC)
    d = m.descriptor()
    assert (d.media_type, d.digest, d.size) == (mt.OCI_MANIFEST, m.digest, m.size)
    assert d.artifact_type == "application/vnd.example.sbom.v1+json"
    assert d.platform is None
    assert d.annotations == {}
    p = Platform("linux", "amd64")
    d2 = m.descriptor(p, {"k": "v"}, artifact_type="")
    assert d2.platform == p
    assert d2.annotations == {"k": "v"}
    assert d2.artifact_type == ""


# --- media type resolution ------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "given", "expected"),
    [
        pytest.param(_image(), None, mt.OCI_MANIFEST, id="from-document"),
        pytest.param(_image(), mt.OCI_MANIFEST, mt.OCI_MANIFEST, id="agreeing"),
        pytest.param(
            _image(), f"{mt.OCI_MANIFEST}; charset=utf-8", mt.OCI_MANIFEST, id="params-ignored"
        ),
        pytest.param(_image(), mt.OCI_MANIFEST.upper(), mt.OCI_MANIFEST, id="case-ignored"),
        pytest.param(_image(), "application/json", mt.OCI_MANIFEST, id="generic-ignored"),
        pytest.param(_image(), "text/plain; charset=utf-8", mt.OCI_MANIFEST, id="text-plain"),
        pytest.param(_image(mediaType=_DROP), mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST, id="given"),
        pytest.param(_index(mediaType=_DROP), mt.DOCKER_MANIFEST_LIST, mt.DOCKER_MANIFEST_LIST),
        pytest.param(_index(mediaType=_DROP), None, mt.OCI_INDEX, id="infer-index"),
        pytest.param(_image(mediaType=_DROP), None, mt.OCI_MANIFEST, id="infer-image"),
        pytest.param(
            _image(mediaType=_DROP, layers=_DROP), None, mt.OCI_MANIFEST, id="infer-config-only"
        ),
        pytest.param(
            _image(mediaType=_DROP), "application/octet-stream", mt.OCI_MANIFEST, id="infer-octet"
        ),
        pytest.param(_image(mediaType=""), None, mt.OCI_MANIFEST, id="empty-mediatype-field"),
    ],
)
def test_media_type_resolution(doc: dict[str, Any], given: str | None, expected: str) -> None:
    assert Manifest.parse(_raw(doc), given).media_type == expected


# --- refusals -------------------------------------------------------------------

# (id, raw document, given media type, exception, message fragment)
REFUSALS: list[tuple[str, bytes, str | None, type[Exception], str]] = [
    # CVE-2021-41190 class: one document, two meanings
    ("served-as-index", _raw(_image()), mt.OCI_INDEX, ManifestError, "served or referenced"),
    ("served-as-docker", _raw(_image()), mt.DOCKER_MANIFEST, ManifestError, "served"),
    ("served-as-other", _raw(_image()), "application/vnd.foo+json", ManifestError, "served"),
    (
        "index-with-layers",
        _raw(_index(manifests=_DROP, layers=[])),
        None,
        ManifestError,
        "'config' or 'layers'",
    ),
    ("index-with-config", _raw(_index(config=_desc())), None, ManifestError, "'config'"),
    ("image-with-manifests", _raw(_image(manifests=[])), None, ManifestError, "'manifests'"),
    (
        "untyped-index-served-as-image",
        _raw(_index(mediaType=_DROP)),
        mt.OCI_MANIFEST,
        ManifestError,
        "'manifests'",
    ),
    (
        "both-manifests-and-layers",
        _raw({"schemaVersion": 2, "manifests": [], "layers": []}),
        None,
        ManifestError,
        "both 'manifests' and 'layers'",
    ),
    (
        "both-with-mediatype",
        _raw(_index(layers=[_desc()])),
        mt.OCI_INDEX,
        ManifestError,
        "both",
    ),
    ("no-type-at-all", _raw({"schemaVersion": 2}), None, ManifestError, "cannot tell"),
    # schema1
    ("schema1-signed", SCHEMA1_SIGNED_DOC, None, UnsupportedManifestError, "convert"),
    (
        "schema1-content-type",
        SCHEMA1_SIGNED_DOC,
        mt.DOCKER_SCHEMA1_SIGNED,
        UnsupportedManifestError,
        "schema1",
    ),
    (
        "schema1-given-only",
        _raw(_image(mediaType=_DROP)),
        mt.DOCKER_SCHEMA1,
        UnsupportedManifestError,
        "deprecated",
    ),
    (
        "schema1-mediatype-field",
        _raw({"schemaVersion": 2, "mediaType": mt.DOCKER_SCHEMA1}),
        None,
        UnsupportedManifestError,
        "convert",
    ),
    # unknown formats
    (
        "artifact-manifest",
        _raw({"schemaVersion": 2, "mediaType": mt.OCI_ARTIFACT_MANIFEST, "blobs": []}),
        None,
        UnsupportedManifestError,
        "unsupported manifest media type",
    ),
    (
        "unknown-given",
        _raw(_image(mediaType=_DROP)),
        "application/vnd.foo+json",
        UnsupportedManifestError,
        "unsupported",
    ),
    (
        "mediatype-with-params-in-document",
        _raw(_image(mediaType=f"{mt.OCI_MANIFEST}; x=y")),
        None,
        UnsupportedManifestError,
        "unsupported",
    ),
    # schemaVersion
    ("schema-missing", _raw(_image(schemaVersion=_DROP)), None, ManifestError, "schemaVersion"),
    ("schema-3", _raw(_image(schemaVersion=3)), None, ManifestError, "schemaVersion must be 2"),
    ("schema-string", _raw(_image(schemaVersion="2")), None, ManifestError, "schemaVersion"),
    ("schema-float", _raw(_image(schemaVersion=2.0)), None, ManifestError, "schemaVersion"),
    ("schema-bool", _raw(_image(schemaVersion=True)), None, ManifestError, "schemaVersion"),
    # not JSON / not an object
    ("empty", b"", None, ManifestError, "not valid JSON"),
    ("garbage", b"<html>502 Bad Gateway</html>", None, ManifestError, "not valid JSON"),
    ("truncated", OCI_IMAGE_DOC[:-10], None, ManifestError, "not valid JSON"),
    ("bad-utf8", b'{"mediaType": "\xff"}', None, ManifestError, "not valid JSON"),
    ("array", b"[]", None, ManifestError, "JSON object, got an array"),
    ("string", b'"manifest"', None, ManifestError, "JSON object"),
    ("null", b"null", None, ManifestError, "got null"),
    ("too-deep", b"[" * 5000, None, ManifestError, "not valid JSON"),
    # wrong field types
    ("mediatype-int", _raw(_image(mediaType=1)), None, ManifestError, "mediaType must be a string"),
    ("config-missing", _raw(_image(config=_DROP)), None, ManifestError, "no config"),
    ("config-null", _raw(_image(config=None)), None, ManifestError, "no config"),
    ("config-list", _raw(_image(config=[])), None, ManifestError, "config must be a JSON object"),
    ("layers-object", _raw(_image(layers={})), None, ManifestError, "layers must be an array"),
    ("layers-item-str", _raw(_image(layers=["x"])), None, ManifestError, "layers[0]"),
    ("manifests-str", _raw(_index(manifests="x")), None, ManifestError, "manifests must be"),
    (
        "manifests-item-null",
        _raw(_index(manifests=[None])),
        None,
        ManifestError,
        "manifests[0] must be a JSON object",
    ),
    (
        "desc-no-mediatype",
        _raw(_image(layers=[{"digest": H1, "size": 1}])),
        None,
        ManifestError,
        "layers[0].mediaType",
    ),
    (
        "desc-no-digest",
        _raw(_image(layers=[{"mediaType": mt.OCI_LAYER, "size": 1}])),
        None,
        ManifestError,
        "layers[0].digest",
    ),
    (
        "desc-bad-digest",
        _raw(_image(layers=[_desc(digest="sha256:ABC")])),
        None,
        ManifestError,
        "layers[0].digest",
    ),
    (
        "desc-md5-digest",
        _raw(_image(layers=[_desc(digest="md5:" + "0" * 32)])),
        None,
        ManifestError,
        "unsupported digest algorithm",
    ),
    ("size-negative", _raw(_image(layers=[_desc(size=-1)])), None, ManifestError, "size"),
    ("size-bool", _raw(_image(layers=[_desc(size=True)])), None, ManifestError, "size"),
    ("size-float", _raw(_image(layers=[_desc(size=1.0)])), None, ManifestError, "size"),
    ("size-string", _raw(_image(layers=[_desc(size="1")])), None, ManifestError, "size"),
    (
        "size-huge",
        _raw(_image(layers=[_desc(size=2**64 - 1)])),
        None,
        ManifestError,
        "non-negative integer",
    ),
    (
        "size-overflow",
        b'{"schemaVersion":2,"config":{"mediaType":"a","digest":"' + H1.encode() + b'",'
        b'"size":99999999999999999999999}}',
        None,
        ManifestError,
        "size",
    ),
    (
        "urls-string",
        _raw(_image(layers=[{**_desc(), "urls": "https://x"}])),
        None,
        ManifestError,
        "urls must be an array",
    ),
    (
        "urls-item-int",
        _raw(_image(layers=[{**_desc(), "urls": [1]}])),
        None,
        ManifestError,
        "urls",
    ),
    (
        "desc-annotation-int",
        _raw(_image(layers=[{**_desc(), "annotations": {"a": 1}}])),
        None,
        ManifestError,
        "layers[0].annotations['a'] must be a string",
    ),
    ("annotations-list", _raw(_image(annotations=[])), None, ManifestError, "annotations"),
    (
        "annotation-null-value",
        _raw(_image(annotations={"a": None})),
        None,
        ManifestError,
        "annotations",
    ),
    ("artifact-type-int", _raw(_image(artifactType=3)), None, ManifestError, "artifactType"),
    (
        "desc-artifact-type-list",
        _raw(_index(manifests=[{**_desc(mt.OCI_MANIFEST), "artifactType": []}])),
        None,
        ManifestError,
        "manifests[0].artifactType",
    ),
    ("subject-str", _raw(_image(subject=H1)), None, ManifestError, "subject must be"),
    (
        "subject-bad-size",
        _raw(_image(subject=_desc(mt.OCI_MANIFEST, size=-5))),
        None,
        ManifestError,
        "subject.size",
    ),
    (
        "platform-string",
        _raw(_index(manifests=[{**_desc(mt.OCI_MANIFEST), "platform": "linux/amd64"}])),
        None,
        ManifestError,
        "manifests[0]: platform must be a JSON object",
    ),
    (
        "platform-no-arch",
        _raw(_index(manifests=[{**_desc(mt.OCI_MANIFEST), "platform": {"os": "linux"}}])),
        None,
        ManifestError,
        "architecture",
    ),
]


@pytest.mark.parametrize(
    ("raw", "given", "exc", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in REFUSALS],
)
def test_refusals(raw: bytes, given: str | None, exc: type[Exception], fragment: str) -> None:
    with pytest.raises(exc) as info:
        Manifest.parse(raw, given)
    assert fragment in str(info.value)
    # never a KeyError/TypeError/orjson leak, always part of the tree and a ValueError
    assert isinstance(info.value, ManifestError)
    assert isinstance(info.value, InputError)
    assert isinstance(info.value, ValueError)


def test_null_layers_and_manifests_read_as_empty() -> None:
    # Go marshals a nil slice as null; such manifests exist in the wild.
    assert Manifest.parse(_raw(_image(layers=None))).layers == ()
    assert Manifest.parse(_raw(_index(manifests=None))).manifests == ()
    assert Manifest.parse(_raw(_index(manifests=[]))).manifests == ()


def test_optional_nulls_are_absent() -> None:
    doc = _image(subject=None, annotations=None, artifactType=None)
    doc["layers"] = [{**_desc(), "urls": None, "annotations": None, "platform": None}]
    m = Manifest.parse(_raw(doc))
    assert m.subject is None
    assert m.annotations == {}
    assert m.artifact_type == ""
    assert m.layers[0] == Descriptor(mt.OCI_LAYER_GZIP, Digest.parse(H1), 10)


def test_unknown_fields_ignored() -> None:
    m = Manifest.parse(_raw(_image(**{"x-vendor": {"anything": [1, 2]}})))
    assert m.is_image


def test_schema1_message_is_actionable() -> None:
    with pytest.raises(UnsupportedManifestError) as info:
        Manifest.parse(SCHEMA1_SIGNED_DOC, mt.DOCKER_SCHEMA1_SIGNED)
    message = str(info.value)
    assert "deprecated" in message
    assert "convert" in message
    assert "schema2" in message


# --- size cap -------------------------------------------------------------------


def test_max_size_refused_naming_size_and_cap() -> None:
    raw = _raw(_image(annotations={"pad": "x" * 200}))
    with pytest.raises(ManifestError) as info:
        Manifest.parse(raw, max_size=100)
    assert str(len(raw)) in str(info.value)
    assert "100-byte limit" in str(info.value)


def test_max_size_boundary_is_inclusive() -> None:
    raw = _raw(_image())
    assert Manifest.parse(raw, max_size=len(raw)).size == len(raw)
    with pytest.raises(ManifestError):
        Manifest.parse(raw, max_size=len(raw) - 1)


def test_default_max_size_is_8_mib() -> None:
    assert DEFAULT_MAX_SIZE == 8 * 1024 * 1024
    big = _raw(_image(annotations={"pad": "x" * DEFAULT_MAX_SIZE}))
    with pytest.raises(ManifestError, match="limit"):
        Manifest.parse(big)


def test_size_checked_before_json() -> None:
    with pytest.raises(ManifestError, match="limit"):
        Manifest.parse(b"not json" * 10, max_size=8)


# --- digests --------------------------------------------------------------------


def test_expected_digest_matches() -> None:
    expected = "sha256:" + hashlib.sha256(OCI_IMAGE_DOC).hexdigest()
    assert str(Manifest.parse(OCI_IMAGE_DOC, digest=expected).digest) == expected
    assert Manifest.parse(OCI_IMAGE_DOC, digest=Digest.parse(expected)).digest == Digest.parse(
        expected
    )


def test_expected_digest_mismatch() -> None:
    with pytest.raises(DigestMismatchError) as info:
        Manifest.parse(OCI_IMAGE_DOC, digest=H1)
    assert info.value.expected == H1
    assert info.value.actual == "sha256:" + hashlib.sha256(OCI_IMAGE_DOC).hexdigest()


def test_digest_checked_before_parsing() -> None:
    # garbage that does not match: the integrity failure is what matters
    with pytest.raises(DigestMismatchError):
        Manifest.parse(b"garbage", digest=H1)


def test_sha512_expected_digest_sets_algorithm() -> None:
    expected = "sha512:" + hashlib.sha512(OCI_INDEX_DOC).hexdigest()
    m = Manifest.parse(OCI_INDEX_DOC, digest=expected)
    assert m.digest.algorithm == "sha512"
    assert str(m.digest) == expected
    assert m.descriptor().digest == m.digest
    with pytest.raises(DigestMismatchError):
        Manifest.parse(OCI_IMAGE_DOC, digest=expected)


def test_default_digest_is_sha256() -> None:
    assert Manifest.parse(OCI_INDEX_DOC).digest.algorithm == "sha256"


# --- Descriptor -----------------------------------------------------------------


def test_descriptor_from_json_and_back() -> None:
    obj = {
        "mediaType": mt.OCI_MANIFEST,
        "digest": H1,
        "size": 1025,
        "urls": ["https://example.com/blob"],
        "annotations": {"a": "b"},
        "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
        "artifactType": "application/vnd.example",
    }
    d = Descriptor.from_json(obj)
    assert d.media_type == mt.OCI_MANIFEST
    assert d.digest == Digest.parse(H1)
    assert d.size == 1025
    assert d.urls == ("https://example.com/blob",)
    assert d.annotations == {"a": "b"}
    assert d.platform == Platform("linux", "arm64", "v8")
    assert d.artifact_type == "application/vnd.example"
    assert d.to_json() == obj
    assert Descriptor.from_json(d.to_json()) == d


def test_descriptor_to_json_omits_empties() -> None:
    d = Descriptor(mt.OCI_LAYER, Digest.parse(H1), 0)
    assert d.to_json() == {"mediaType": mt.OCI_LAYER, "digest": H1, "size": 0}
    assert list(d.to_json()) == ["mediaType", "digest", "size"]


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [],
        "sha256:x",
        {},
        {"digest": H1, "size": 1},
        {"mediaType": "", "digest": H1, "size": 1},
        {"mediaType": 5, "digest": H1, "size": 1},
        {"mediaType": "a", "size": 1},
        {"mediaType": "a", "digest": 1, "size": 1},
        {"mediaType": "a", "digest": "sha256:" + "A" * 64, "size": 1},
        {"mediaType": "a", "digest": H1},
        {"mediaType": "a", "digest": H1, "size": -1},
        {"mediaType": "a", "digest": H1, "size": False},
        {"mediaType": "a", "digest": H1, "size": 1.5},
        {"mediaType": "a", "digest": H1, "size": None},
        {"mediaType": "a", "digest": H1, "size": 2**63},
        {"mediaType": "a", "digest": H1, "size": 1, "platform": []},
        {"mediaType": "a", "digest": H1, "size": 1, "annotations": {"k": ["v"]}},
    ],
)
def test_descriptor_from_json_strict(obj: object) -> None:
    with pytest.raises(ManifestError):
        Descriptor.from_json(obj)


def test_descriptor_is_frozen_hashable_and_isolated() -> None:
    ann = {"k": "v"}
    d = Descriptor(mt.OCI_LAYER, Digest.parse(H1), 1, annotations=ann)
    ann["k"] = "changed"
    assert d.annotations == {"k": "v"}
    assert isinstance(d.annotations, MappingProxyType)
    with pytest.raises(TypeError):
        d.annotations["k"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        d.size = 2  # type: ignore[misc]
    same = Descriptor(mt.OCI_LAYER, Digest.parse(H1), 1, annotations={"k": "v"})
    assert d == same
    assert hash(d) == hash(same)
    assert len({d, same}) == 1
    assert d != Descriptor(mt.OCI_LAYER, Digest.parse(H1), 1)


def test_descriptor_constructor_checks() -> None:
    with pytest.raises(ManifestError):
        Descriptor(mt.OCI_LAYER, Digest.parse(H1), -1)
    with pytest.raises(ManifestError):
        Descriptor(mt.OCI_LAYER, Digest.parse(H1), True)
    d = Descriptor(mt.OCI_LAYER, H1, 1, urls=["u"])  # type: ignore[arg-type]
    assert d.digest == Digest.parse(H1)
    assert d.urls == ("u",)


# --- builders -------------------------------------------------------------------


def _layer(n: int) -> Descriptor:
    data = f"layer-{n}".encode()
    return Descriptor(mt.OCI_LAYER_GZIP, Digest.of(data), len(data))


def test_build_image_round_trip() -> None:
    config = Descriptor(mt.OCI_CONFIG, Digest.of(b"{}"), 2)
    subject = Descriptor(mt.OCI_MANIFEST, Digest.parse(H1), 1025)
    built = build_image(
        config,
        [_layer(1), _layer(2)],
        annotations={"org.opencontainers.image.title": "x"},
        artifact_type="application/vnd.example",
        subject=subject,
    )
    parsed = Manifest.parse(built.raw, mt.OCI_MANIFEST, digest=built.digest)
    assert parsed == built
    assert parsed.digest == built.digest == Digest.of(built.raw)
    assert parsed.config == config
    assert parsed.layers == (_layer(1), _layer(2))
    assert parsed.subject == subject
    assert parsed.annotations == {"org.opencontainers.image.title": "x"}
    assert parsed.artifact_type == "application/vnd.example"
    assert list(orjson.loads(built.raw)) == [
        "schemaVersion",
        "mediaType",
        "artifactType",
        "config",
        "layers",
        "subject",
        "annotations",
    ]
    assert b" " not in built.raw
    assert b"\n" not in built.raw


def test_build_image_is_deterministic() -> None:
    config = Descriptor(mt.DOCKER_CONFIG, Digest.of(b"cfg"), 3)
    a = build_image(config, [_layer(1)], media_type=mt.DOCKER_MANIFEST)
    b = build_image(config, [_layer(1)], media_type=mt.DOCKER_MANIFEST)
    assert a.raw == b.raw
    assert a.digest == b.digest
    assert a.media_type == mt.DOCKER_MANIFEST
    assert orjson.loads(a.raw) == {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": config.to_json(),
        "layers": [_layer(1).to_json()],
    }


def test_build_index_round_trip() -> None:
    src = Manifest.parse(OCI_INDEX_DOC)
    wanted = [d for d in src.manifests if d.platform and d.platform.os == "linux"]
    built = build_index(wanted, annotations=dict(src.annotations))
    again = Manifest.parse(built.raw, f"{mt.OCI_INDEX}; charset=utf-8")
    assert again.digest == built.digest
    assert again.manifests == tuple(wanted)
    assert again.annotations == src.annotations
    assert again.media_type == mt.OCI_INDEX
    assert list(orjson.loads(built.raw)) == [
        "schemaVersion",
        "mediaType",
        "manifests",
        "annotations",
    ]
    # rebuilding from the parsed views reproduces the exact bytes
    assert build_index(again.manifests, annotations=again.annotations).raw == built.raw


def test_build_docker_list_from_parsed_list() -> None:
    src = Manifest.parse(DOCKER_LIST_DOC)
    built = build_index(src.manifests, media_type=mt.DOCKER_MANIFEST_LIST)
    assert built.media_type == mt.DOCKER_MANIFEST_LIST
    assert built.manifests == src.manifests
    assert built.manifests[2].platform == Platform(
        "windows", "amd64", "", "10.0.17763.5329", ("win32k",)
    )


def test_build_referrers_index() -> None:
    artifact = Manifest.parse(OCI_ARTIFACT_DOC)
    subject = Descriptor(mt.OCI_MANIFEST, Digest.parse(H1), 1025)
    d = artifact.descriptor(annotations=artifact.annotations)
    built = build_index([d], artifact_type="application/vnd.example.set", subject=subject)
    assert built.manifests == (d,)
    assert built.manifests[0].artifact_type == "application/vnd.example.sbom.v1+json"
    assert built.subject == subject
    assert built.artifact_type == "application/vnd.example.set"
    assert built.references() == (d,)


def test_build_empty_index() -> None:
    built = build_index([])
    assert built.raw == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
    )
    assert built.manifests == ()


def test_builders_refuse_wrong_media_type() -> None:
    with pytest.raises(ManifestError):
        build_index([], media_type=mt.OCI_MANIFEST)
    with pytest.raises(ManifestError):
        build_image(_layer(0), [], media_type=mt.OCI_INDEX)
    with pytest.raises(ManifestError):
        build_image(_layer(0), [], media_type=mt.DOCKER_SCHEMA1)


# --- purity ---------------------------------------------------------------------


_PURE_MODULES = ("mediatypes", "platform", "manifest")
_PURE_DEPENDENCIES = {"errors", "digest", *_PURE_MODULES}


@pytest.mark.parametrize("module", _PURE_MODULES)
def test_modules_import_no_io_libraries(module: str) -> None:
    # Checked on the source: the package's __init__ pulls in the I/O layers,
    # so importing these modules cannot show which of them is to blame.
    path = Path(asyncreg.__file__).parent / f"{module}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.ImportFrom):
            # relative: only the other pure modules of the package
            targets = [node.module] if node.module else [a.name for a in node.names]
            assert set(targets) <= _PURE_DEPENDENCIES, (module, targets)
            continue
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in {"aiohttp", "aiofiles", "asyncio"}, (module, name)


# --- fuzzing --------------------------------------------------------------------

_INTERESTING_STRINGS = st.sampled_from(
    [
        H1,
        H2,
        "sha512:" + "0" * 128,
        "sha256:",
        "",
        mt.OCI_MANIFEST,
        mt.OCI_INDEX,
        mt.DOCKER_MANIFEST,
        mt.DOCKER_MANIFEST_LIST,
        mt.DOCKER_SCHEMA1,
        mt.OCI_CONFIG,
        "linux",
        "amd64",
    ]
)
_KEYS = st.one_of(
    st.sampled_from(
        [
            "schemaVersion",
            "mediaType",
            "manifests",
            "layers",
            "config",
            "subject",
            "annotations",
            "artifactType",
            "digest",
            "size",
            "urls",
            "platform",
            "os",
            "architecture",
            "variant",
            "os.version",
            "os.features",
        ]
    ),
    st.text(max_size=8),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    _INTERESTING_STRINGS,
    st.sampled_from([1, 2]),
)
_JSONISH = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=6)
    ),
    max_leaves=30,
)
_GIVEN_TYPES = st.one_of(st.none(), _INTERESTING_STRINGS, st.text(max_size=30))


def _parse_only_raises_ours(raw: bytes, given: str | None) -> None:
    try:
        m = Manifest.parse(raw, given)
    except AsyncregError:
        return
    # whatever parsed must have consistent views
    assert m.is_index != m.is_image
    assert m.digest == Digest.of(raw)
    assert m.references() == (m.manifests if m.is_index else m.blobs())


@given(st.binary(max_size=512), _GIVEN_TYPES)
def test_fuzz_arbitrary_bytes(raw: bytes, given_type: str | None) -> None:
    _parse_only_raises_ours(raw, given_type)


@settings(max_examples=300)
@given(_JSONISH, _GIVEN_TYPES)
def test_fuzz_arbitrary_json(obj: object, given_type: str | None) -> None:
    _parse_only_raises_ours(orjson.dumps(obj), given_type)


# Mostly-valid pieces mixed with junk, so fuzzing also reaches the deep checks
# (and the success path) rather than stopping at the first missing field.
_PLATFORM_OBJ = st.one_of(
    st.fixed_dictionaries(
        {"os": st.sampled_from(["linux", "windows", ""]), "architecture": _SCALARS},
        optional={"variant": _SCALARS, "os.version": _SCALARS, "os.features": _JSONISH},
    ),
    _JSONISH,
)
_DESC_OBJ = st.one_of(
    st.fixed_dictionaries(
        {
            "mediaType": st.one_of(_INTERESTING_STRINGS, _SCALARS),
            "digest": st.one_of(st.sampled_from([H1, H2, H3]), _SCALARS),
            "size": st.one_of(st.integers(min_value=0, max_value=2**63 - 1), _SCALARS),
        },
        optional={
            "urls": _JSONISH,
            "annotations": st.one_of(st.dictionaries(st.text(max_size=4), _SCALARS), _JSONISH),
            "platform": _PLATFORM_OBJ,
            "artifactType": _SCALARS,
        },
    ),
    st.dictionaries(_KEYS, _JSONISH, max_size=6),
)


@settings(max_examples=500)
@given(
    st.fixed_dictionaries(
        {"schemaVersion": st.one_of(st.just(2), _JSONISH)},
        optional={
            "mediaType": st.one_of(_INTERESTING_STRINGS, _JSONISH),
            "config": st.one_of(_DESC_OBJ, _JSONISH),
            "layers": st.one_of(st.lists(_DESC_OBJ, max_size=3), _JSONISH),
            "manifests": st.one_of(st.lists(_DESC_OBJ, max_size=3), _JSONISH),
            "subject": st.one_of(_DESC_OBJ, _JSONISH),
            "annotations": st.one_of(st.dictionaries(st.text(max_size=4), _SCALARS), _JSONISH),
            "artifactType": _SCALARS,
        },
    ),
    _GIVEN_TYPES,
)
def test_fuzz_manifest_shaped_json(obj: dict[str, object], given_type: str | None) -> None:
    _parse_only_raises_ours(orjson.dumps(obj), given_type)


_desc_strategy = st.builds(
    Descriptor,
    media_type=st.sampled_from([mt.OCI_MANIFEST, mt.OCI_LAYER_GZIP, "application/vnd.x"]),
    digest=st.binary(max_size=8).map(Digest.of),
    size=st.integers(min_value=0, max_value=2**63 - 1),
    urls=st.lists(st.text(max_size=10), max_size=2).map(tuple),
    annotations=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    platform=st.one_of(
        st.none(),
        st.builds(
            Platform,
            os=st.text(min_size=1, max_size=6),
            architecture=st.text(min_size=1, max_size=6),
            variant=st.text(max_size=3),
        ),
    ),
    artifact_type=st.text(max_size=10),
)


@given(st.lists(_desc_strategy, max_size=4), _desc_strategy, st.lists(_desc_strategy, max_size=4))
def test_build_parse_round_trip_generated(
    children: list[Descriptor], config: Descriptor, layers: list[Descriptor]
) -> None:
    index = build_index(children)
    again = Manifest.parse(index.raw, digest=index.digest)
    assert again.manifests == tuple(children)
    image = build_image(config, layers)
    again = Manifest.parse(image.raw, mt.OCI_MANIFEST, digest=image.digest)
    assert again.config == config
    assert again.layers == tuple(layers)
