"""Tests for asyncreg.auth.credentials: docker config files and credential helpers."""

from __future__ import annotations

import base64
import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from asyncreg.auth.credentials import (
    ANONYMOUS,
    ChainCredentials,
    Credential,
    CredentialProvider,
    DockerConfigCredentials,
    StaticCredentials,
    default_config_path,
    default_credentials,
    helper_server_url,
    normalize_host,
    run_credential_helper,
)
from asyncreg.errors import ConfigError

pytestmark = pytest.mark.anyio


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_config(directory: Path, data: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DOCKER_CONFIG directory in tmp; tests write config.json into it."""
    directory = tmp_path / "docker"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory


@pytest.fixture
def helper_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory at the front of PATH for fake docker-credential-* helpers."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    return directory


def install_helper(directory: Path, name: str, body: str) -> Path:
    path = directory / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# A helper following the protocol: knows two servers, "not found" for the rest.
TESTHELPER = """\
[ "$1" = get ] || exit 3
url=$(cat)
case "$url" in
  reg.example:5000)
    printf '{"ServerURL":"%s","Username":"alice","Secret":"s3cr:et"}' "$url" ;;
  https://index.docker.io/v1/)
    printf '{"ServerURL":"%s","Username":"<token>","Secret":"refresh-me"}' "$url" ;;
  *)
    echo "credentials not found in native keychain"
    exit 1 ;;
esac
"""


# --- Credential --------------------------------------------------------------------


def test_credential_repr_hides_secrets() -> None:
    cred = Credential("bob", "hunter2", "idtok-xyz", "regtok-abc")
    for text in (repr(cred), str(cred), f"{cred}", repr([cred])):
        assert "bob" in text
        for secret in ("hunter2", "idtok-xyz", "regtok-abc"):
            assert secret not in text
    assert "password='***'" in repr(cred)
    assert "password=''" in repr(Credential("bob"))


def test_is_anonymous() -> None:
    assert Credential().is_anonymous
    assert ANONYMOUS.is_anonymous
    assert not Credential("u", "p").is_anonymous
    assert not Credential(identity_token="t").is_anonymous
    assert not Credential(registry_token="t").is_anonymous


# --- host normalisation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("docker.io", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("registry.hub.docker.com", "docker.io"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("https://index.docker.io/v2/", "docker.io"),
        ("HTTPS://Index.Docker.IO/v1/", "docker.io"),
        ("http://host:5000", "host:5000"),
        ("https://host:5000/", "host:5000"),
        ("host:5000", "host:5000"),
        ("host", "host"),
        ("  Quay.IO ", "quay.io"),
        ("ghcr.io/some/path", "ghcr.io"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_normalize_host(raw: str, key: str) -> None:
    assert normalize_host(raw) == key


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("docker.io", "https://index.docker.io/v1/"),
        ("registry-1.docker.io", "https://index.docker.io/v1/"),
        ("reg.example:5000", "reg.example:5000"),
        ("https://reg.example/", "reg.example"),
    ],
)
def test_helper_server_url(host: str, url: str) -> None:
    assert helper_server_url(host) == url


# --- StaticCredentials / ChainCredentials -----------------------------------------------


async def test_static_credentials_normalise_keys() -> None:
    cred = Credential("u", "p")
    static = StaticCredentials({"https://index.docker.io/v1/": cred, "Host:5000": cred})
    for alias in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert await static.get(alias) == cred
    assert await static.get("http://host:5000") == cred
    assert (await static.get("host")).is_anonymous
    assert isinstance(static, CredentialProvider)


def test_static_credentials_conflict() -> None:
    with pytest.raises(ConfigError, match="conflicting"):
        StaticCredentials({"docker.io": Credential("a", "1"), "index.docker.io": Credential("b")})
    # the same credential twice is not a conflict
    StaticCredentials({"docker.io": Credential("a"), "index.docker.io": Credential("a")})


async def test_chain_first_non_anonymous_wins() -> None:
    first = StaticCredentials({"a": Credential("one", "1")})
    second = StaticCredentials({"a": Credential("two", "2"), "b": Credential("two", "2")})
    chain = ChainCredentials(first, second)
    assert (await chain.get("a")).username == "one"
    assert (await chain.get("b")).username == "two"
    assert await chain.get("c") == ANONYMOUS
    assert await ChainCredentials().get("a") == ANONYMOUS


# --- docker config.json ----------------------------------------------------------------


def test_default_config_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert default_config_path() == tmp_path / "config.json"
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_config_path() == tmp_path / "home" / ".docker" / "config.json"


async def test_config_auths(docker_config: Path) -> None:
    write_config(
        docker_config,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hubuser:pa:ss:word")},
                "http://plain:5000": {"username": "pu", "password": "pp"},
                "tok.example": {"username": "x", "identitytoken": "refresh"},
                "bearer.example": {"registrytoken": "bearer-token"},
                "both.example": {"auth": b64("fromauth:1"), "username": "ignored"},
                "empty.example": {},
                "nopad.example": {"auth": b64("np:pw").rstrip("=")},
            },
            "HttpHeaders": {"User-Agent": "x"},
        },
    )
    provider = DockerConfigCredentials()
    assert provider.path == docker_config / "config.json"
    hub = await provider.get("registry-1.docker.io")
    assert (hub.username, hub.password) == ("hubuser", "pa:ss:word")
    assert await provider.get("plain:5000") == Credential("pu", "pp")
    assert await provider.get("tok.example") == Credential("x", identity_token="refresh")
    assert await provider.get("bearer.example") == Credential(registry_token="bearer-token")
    assert await provider.get("both.example") == Credential("fromauth", "1")
    assert (await provider.get("empty.example")).is_anonymous
    assert (await provider.get("unknown.example")).is_anonymous
    assert await provider.get("nopad.example") == Credential("np", "pw")


async def test_config_duplicate_spellings_prefer_filled_entry(docker_config: Path) -> None:
    write_config(
        docker_config,
        {"auths": {"docker.io": {}, "https://index.docker.io/v1/": {"auth": b64("u:p")}}},
    )
    assert await DockerConfigCredentials().get("docker.io") == Credential("u", "p")


async def test_config_missing_file_is_anonymous(docker_config: Path) -> None:
    assert (await DockerConfigCredentials().get("docker.io")).is_anonymous


async def test_config_explicit_path(tmp_path: Path) -> None:
    path = write_config(tmp_path / "elsewhere", {"auths": {"r": {"auth": b64("a:b")}}})
    assert await DockerConfigCredentials(path).get("r") == Credential("a", "b")


async def test_config_read_once(docker_config: Path) -> None:
    write_config(docker_config, {"auths": {"r": {"auth": b64("a:b")}}})
    provider = DockerConfigCredentials()
    assert await provider.get("r") == Credential("a", "b")
    write_config(docker_config, "not json any more")
    assert await provider.get("r") == Credential("a", "b")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "malformed docker config"),
        ("[]", "top level is not an object"),
        ('{"auths": []}', "'auths' is not an object"),
        ('{"auths": {"r": "x"}}', "is not an object"),
        ('{"auths": {"r": {"auth": 5}}}', "non-string 'auth'"),
        ('{"auths": {"r": {"auth": "!!!not-base64"}}}', "not base64"),
        ('{"auths": {"r": {"auth": "' + b64("nocolon") + '"}}}', "without 'username:password'"),
        ('{"credHelpers": ["x"]}', "'credHelpers' is not an object"),
        ('{"credHelpers": {"r": "../../bin/sh"}}', "not a credential helper name"),
        ('{"credsStore": 3}', "credsStore"),
        (b"\xff\xfe\x00garbage", "malformed docker config"),
    ],
)
async def test_config_malformed(docker_config: Path, content: str | bytes, fragment: str) -> None:
    path = docker_config / "config.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        await DockerConfigCredentials().get("r")
    message = str(info.value)
    assert fragment in message
    assert str(path) in message


async def test_config_error_never_shows_secrets(docker_config: Path) -> None:
    write_config(docker_config, {"auths": {"r": {"auth": b64("user-without-colon-SECRET")}}})
    with pytest.raises(ConfigError) as info:
        await DockerConfigCredentials().get("r")
    assert "SECRET" not in str(info.value)
    assert b64("user-without-colon-SECRET") not in str(info.value)


async def test_config_unreadable(docker_config: Path) -> None:
    (docker_config / "config.json").mkdir()  # a directory where the file should be
    with pytest.raises(ConfigError, match="cannot read docker config"):
        await DockerConfigCredentials().get("r")


# --- credential helpers ---------------------------------------------------------------------


async def test_creds_store_helper(docker_config: Path, helper_dir: Path) -> None:
    install_helper(helper_dir, "testhelper", TESTHELPER)
    write_config(docker_config, {"credsStore": "testhelper", "auths": {"reg.example:5000": {}}})
    provider = DockerConfigCredentials()
    assert await provider.get("https://reg.example:5000/") == Credential("alice", "s3cr:et")
    # Username "<token>": the secret is an identity token, asked for with Hub's v1 URL
    assert await provider.get("docker.io") == Credential(identity_token="refresh-me")
    # "credentials not found" -> anonymous, not an error
    assert (await provider.get("other.example")).is_anonymous


async def test_cred_helpers_take_precedence(docker_config: Path, helper_dir: Path) -> None:
    install_helper(helper_dir, "testhelper", TESTHELPER)
    install_helper(helper_dir, "broken", "exit 2\n")
    write_config(
        docker_config,
        {"credsStore": "broken", "credHelpers": {"http://reg.example:5000": "testhelper"}},
    )
    provider = DockerConfigCredentials()
    assert await provider.get("reg.example:5000") == Credential("alice", "s3cr:et")
    with pytest.raises(ConfigError, match="docker-credential-broken"):
        await provider.get("other.example")


async def test_helper_not_found_falls_back_to_inline_auth(
    docker_config: Path, helper_dir: Path
) -> None:
    install_helper(helper_dir, "testhelper", TESTHELPER)
    write_config(
        docker_config,
        {"credsStore": "testhelper", "auths": {"inline.example": {"auth": b64("i:p")}}},
    )
    assert await DockerConfigCredentials().get("inline.example") == Credential("i", "p")


async def test_helper_failure_is_config_error(helper_dir: Path) -> None:
    install_helper(helper_dir, "exit2", "echo 'keychain locked' >&2\nexit 2\n")
    with pytest.raises(ConfigError) as info:
        await run_credential_helper("exit2", "reg.example")
    message = str(info.value)
    assert "docker-credential-exit2" in message
    assert "exit status 2" in message
    assert "keychain locked" in message


async def test_helper_failure_output_with_secret_is_withheld(helper_dir: Path) -> None:
    install_helper(
        helper_dir,
        "leaky",
        """\
        printf '{"Username":"u","Secret":"TOPSECRET"}'
        exit 2
        """,
    )
    with pytest.raises(ConfigError) as info:
        await run_credential_helper("leaky", "reg.example")
    assert "TOPSECRET" not in str(info.value)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("echo 'not json SECRET'\n", "not JSON"),
        ("echo '[\"SECRET\"]'\n", "not a JSON object"),
        ('echo \'{"Username": 1, "Secret": "SECRET"}\'\n', "not a string"),
    ],
)
async def test_helper_bad_answer(helper_dir: Path, body: str, fragment: str) -> None:
    install_helper(helper_dir, "bad", body)
    with pytest.raises(ConfigError) as info:
        await run_credential_helper("bad", "reg.example")
    assert fragment in str(info.value)
    assert "SECRET" not in str(info.value)


async def test_helper_empty_answer_is_anonymous(helper_dir: Path) -> None:
    install_helper(helper_dir, "empty", "echo '{}'\n")
    assert (await run_credential_helper("empty", "reg.example")).is_anonymous


async def test_helper_missing_binary(helper_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(helper_dir))
    with pytest.raises(ConfigError, match=r"docker-credential-nosuch.*not found on PATH"):
        await run_credential_helper("nosuch", "reg.example")


async def test_helper_timeout(helper_dir: Path) -> None:
    install_helper(helper_dir, "slow", "exec sleep 30\n")
    with pytest.raises(ConfigError, match=r"docker-credential-slow.*no answer within 0.2 s"):
        await run_credential_helper("slow", "reg.example", time_limit=0.2)


async def test_helper_timeout_via_provider(docker_config: Path, helper_dir: Path) -> None:
    install_helper(helper_dir, "slow", "exec sleep 30\n")
    write_config(docker_config, {"credsStore": "slow"})
    with pytest.raises(ConfigError, match="no answer"):
        await DockerConfigCredentials(helper_timeout=0.2).get("reg.example")


async def test_helper_called_once_per_host(
    docker_config: Path, helper_dir: Path, tmp_path: Path
) -> None:
    import anyio

    counter = tmp_path / "calls"
    install_helper(
        helper_dir,
        "counting",
        f"""\
        echo x >> '{counter}'
        sleep 0.1
        printf '{{"Username":"u","Secret":"p"}}'
        """,
    )
    write_config(docker_config, {"credsStore": "counting"})
    provider = DockerConfigCredentials()
    results: list[Credential] = []

    async def one() -> None:
        results.append(await provider.get("reg.example"))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one)
    assert results == [Credential("u", "p")] * 5
    assert counter.read_text().count("x") == 1
    provider.forget("reg.example")
    assert await provider.get("reg.example") == Credential("u", "p")
    assert counter.read_text().count("x") == 2


# --- default_credentials ----------------------------------------------------------------------


async def test_default_credentials_order(docker_config: Path) -> None:
    write_config(
        docker_config,
        {"auths": {"a.example": {"auth": b64("file:a")}, "b.example": {"auth": b64("file:b")}}},
    )
    provider = default_credentials({"a.example": Credential("explicit", "x")})
    assert (await provider.get("a.example")).username == "explicit"
    assert (await provider.get("b.example")).username == "file"
    assert (await provider.get("c.example")).is_anonymous
    plain = default_credentials()
    assert (await plain.get("a.example")).username == "file"
