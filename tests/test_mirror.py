"""Mirror files: parsing (pure) and a real run: report, exit status, safe to re-run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from asyncreg.errors import ConfigError
from asyncreg.ops.mirror import parse_config
from asyncreg.testkit.builder import ImageBuilder, ImageSpec
from asyncreg.testkit.registry import RegistryProcess
from asyncreg.testkit.skopeo import push_layout


def test_parse_full_config() -> None:
    config = parse_config(
        {
            "limits": {"transfers": 4, "per_host": 2},
            "hosts": {"r.example:5000": {"ca_file": "ca.pem"}},
            "defaults": {"referrers": True},
            "sync": [
                {"source": "localhost:5000/a", "target": "localhost:5001/b", "tags": ["1"]},
                {
                    "source": "localhost:5000/c",
                    "target": "localhost:5001/d",
                    "tags_regex": "^v",
                    "platforms": ["linux/amd64"],
                    "filter_index": True,
                },
            ],
        }
    )
    assert config.limits.transfers == 4
    assert config.hosts["r.example:5000"].use_http("r.example:5000") is False
    first, second = config.syncs
    assert first.tags == ("1",)
    assert first.options.referrers
    assert second.tags_regex is not None
    assert second.tags_regex.pattern == "^v"
    assert second.options.platforms == ("linux/amd64",)
    assert second.options.filter_index
    assert second.options.referrers


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "nothing to mirror"),
        ({"sync": [{"source": "localhost:5000/a"}]}, "target"),
        ({"sync": [{"source": "localhost:5000/a:1", "target": "localhost:5001/b"}]}, "tags"),
        ({"sync": [{"source": "l:1/a", "target": "l:2/b", "tags": "1"}]}, "list of strings"),
        ({"sync": [{"source": "l:1/a", "target": "l:2/b", "tags_regex": "("}]}, "tags_regex"),
        ({"sync": [{"source": "l:1/a", "target": "l:2/b", "bogus": 1}]}, "bogus"),
        (
            {"limits": {"transfers": 0}, "sync": [{"source": "l:1/a", "target": "l:2/b"}]},
            "at least",
        ),
        ({"extra": {}, "sync": []}, "unknown section"),
    ],
)
def test_bad_configs_are_config_errors(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(doc)


def _mirror(config: Path, report: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "asyncreg",
            "mirror",
            str(config),
            "--report",
            str(report),
            "--progress",
            "none",
        ],
        capture_output=True,
        timeout=300,
        check=False,
    )


def test_mirror_run_reports_and_is_safe_to_rerun(
    builder: ImageBuilder,
    registry: RegistryProcess,
    registry_b: RegistryProcess,
    repo_name: str,
    tmp_path: Path,
) -> None:
    for tag in ("v1", "v2", "old"):
        builder.image(tag, ImageSpec(layers=2, layer_size=64 * 1024, labels={"t": tag}))
        push_layout(builder.root, tag, registry.host, repo_name)
    config = tmp_path / "mirror.toml"
    config.write_text(
        f"""
[limits]
per_host = 4

[[sync]]
source = "{registry.host}/{repo_name}"
target = "{registry_b.host}/{repo_name}-mirror"
tags_regex = "^v"

[[sync]]
source = "{registry.host}/{repo_name}"
target = "{registry_b.host}/{repo_name}-pinned"
tags = ["old", "missing"]
"""
    )
    report = tmp_path / "report.json"
    first = _mirror(config, report)
    assert first.returncode == 1, "one listed tag does not exist: the run must fail"
    doc = orjson.loads(report.read_bytes())
    by_target = {i["target"].rsplit("/", 1)[1]: i["status"] for i in doc["items"]}
    assert by_target == {
        f"{repo_name.rsplit('/', 1)[1]}-mirror:v1": "copied",
        f"{repo_name.rsplit('/', 1)[1]}-mirror:v2": "copied",
        f"{repo_name.rsplit('/', 1)[1]}-pinned:old": "copied",
        f"{repo_name.rsplit('/', 1)[1]}-pinned:missing": "failed",
    }
    assert b"missing" in first.stderr
    # Re-running copies nothing that is already there.
    config.write_text(config.read_text().replace('["old", "missing"]', '["old"]'))
    second = _mirror(config, report)
    assert second.returncode == 0, second.stderr
    doc = orjson.loads(report.read_bytes())
    assert doc["up_to_date"] == 3
    assert doc["copied"] == 0
    assert doc["bytes_moved"] == 0
