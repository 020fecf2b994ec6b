"""Media type constants and predicates: the strings every format decision starts from."""

from __future__ import annotations

import pytest

from asyncreg import mediatypes as mt


def test_constant_values() -> None:
    assert mt.OCI_MANIFEST == "application/vnd.oci.image.manifest.v1+json"
    assert mt.OCI_INDEX == "application/vnd.oci.image.index.v1+json"
    assert mt.OCI_CONFIG == "application/vnd.oci.image.config.v1+json"
    assert mt.OCI_LAYER == "application/vnd.oci.image.layer.v1.tar"
    assert mt.OCI_LAYER_GZIP == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert mt.OCI_LAYER_ZSTD == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert mt.OCI_EMPTY == "application/vnd.oci.empty.v1+json"
    assert mt.OCI_LAYER_NONDIST == "application/vnd.oci.image.layer.nondistributable.v1.tar"
    assert mt.OCI_LAYER_NONDIST_GZIP.endswith("nondistributable.v1.tar+gzip")
    assert mt.OCI_LAYER_NONDIST_ZSTD.endswith("nondistributable.v1.tar+zstd")
    assert mt.DOCKER_MANIFEST == "application/vnd.docker.distribution.manifest.v2+json"
    assert mt.DOCKER_MANIFEST_LIST == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert mt.DOCKER_CONFIG == "application/vnd.docker.container.image.v1+json"
    assert mt.DOCKER_LAYER == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert mt.DOCKER_FOREIGN_LAYER == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    assert mt.DOCKER_SCHEMA1 == "application/vnd.docker.distribution.manifest.v1+json"
    assert mt.DOCKER_SCHEMA1_SIGNED == "application/vnd.docker.distribution.manifest.v1+prettyjws"


def test_manifest_accept_is_the_four_copyable_formats() -> None:
    assert isinstance(mt.MANIFEST_ACCEPT, tuple)
    assert set(mt.MANIFEST_ACCEPT) == {
        mt.OCI_MANIFEST,
        mt.OCI_INDEX,
        mt.DOCKER_MANIFEST,
        mt.DOCKER_MANIFEST_LIST,
    }
    assert not any(mt.is_schema1(m) for m in mt.MANIFEST_ACCEPT)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (mt.OCI_MANIFEST, mt.OCI_MANIFEST),
        (f"{mt.OCI_MANIFEST}; charset=utf-8", mt.OCI_MANIFEST),
        (f"  {mt.OCI_INDEX} ;charset=UTF-8 ", mt.OCI_INDEX),
        ("Application/VND.OCI.Image.Manifest.v1+JSON", mt.OCI_MANIFEST),
        ("application/json", "application/json"),
        ("", ""),
        (";", ""),
    ],
)
def test_base(given: str, expected: str) -> None:
    assert mt.base(given) == expected


# (media type, is_index, is_image_manifest, is_schema1, is_foreign_layer, is_docker)
PREDICATES = [
    (mt.OCI_INDEX, True, False, False, False, False),
    (mt.DOCKER_MANIFEST_LIST, True, False, False, False, True),
    (mt.OCI_MANIFEST, False, True, False, False, False),
    (mt.DOCKER_MANIFEST, False, True, False, False, True),
    (f"{mt.DOCKER_MANIFEST}; charset=utf-8", False, True, False, False, True),
    (mt.OCI_INDEX.upper(), True, False, False, False, False),
    (mt.DOCKER_SCHEMA1, False, False, True, False, True),
    (mt.DOCKER_SCHEMA1_SIGNED, False, False, True, False, True),
    (mt.DOCKER_FOREIGN_LAYER, False, False, False, True, True),
    (mt.OCI_LAYER_NONDIST, False, False, False, True, False),
    (mt.OCI_LAYER_NONDIST_GZIP, False, False, False, True, False),
    (mt.OCI_LAYER_NONDIST_ZSTD, False, False, False, True, False),
    (mt.DOCKER_LAYER, False, False, False, False, True),
    (mt.DOCKER_CONFIG, False, False, False, False, True),
    (mt.OCI_LAYER_GZIP, False, False, False, False, False),
    (mt.OCI_CONFIG, False, False, False, False, False),
    (mt.OCI_EMPTY, False, False, False, False, False),
    (mt.OCI_ARTIFACT_MANIFEST, False, False, False, False, False),
    ("application/json", False, False, False, False, False),
    ("", False, False, False, False, False),
]


@pytest.mark.parametrize(
    ("media_type", "index", "image", "schema1", "foreign", "docker"), PREDICATES
)
def test_predicates(
    media_type: str, index: bool, image: bool, schema1: bool, foreign: bool, docker: bool
) -> None:
    assert mt.is_index(media_type) is index
    assert mt.is_image_manifest(media_type) is image
    assert mt.is_manifest(media_type) is (index or image)
    assert mt.is_schema1(media_type) is schema1
    assert mt.is_foreign_layer(media_type) is foreign
    assert mt.is_docker(media_type) is docker
