"""`dewy latest`: what the registry offers now, or why nothing qualifies (a real file:// registry)."""

import hashlib
import json

import pytest

from dewy import cli


def publish(root, tag, name="app.tar.gz", data=b"release", checksums=False):
    version_dir = root / tag
    version_dir.mkdir(parents=True)
    (version_dir / name).write_bytes(data)
    if checksums:
        (version_dir / "checksums.txt").write_text("%s  %s\n" % (hashlib.sha256(data).hexdigest(), name))


@pytest.fixture
def reg(tmp_path):
    root = tmp_path / "registry"
    root.mkdir()
    return root


def test_names_version_artifact_and_where_the_checksum_came_from(reg, capsys):
    publish(reg, "v1.0.0")
    publish(reg, "v1.1.0", checksums=True)
    assert cli.main(["latest", "--registry", "file://%s?artifact=app.tar.gz" % reg]) == 0
    out = capsys.readouterr().out
    assert "version   1.1.0" in out and "tag       v1.1.0" in out and "artifact  app.tar.gz" in out
    assert "(from checksums.txt)" in out and hashlib.sha256(b"release").hexdigest() in out


def test_json_answer(reg, capsys):
    publish(reg, "v2.0.0-rc.1")
    assert cli.main(["latest", "--registry", "file://%s?artifact=app.tar.gz&pre-release=true" % reg, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["version"] == "2.0.0-rc.1" and answer["sha256"] is None and answer["url"].startswith("file://")


def test_says_why_nothing_qualifies(reg, capsys):
    publish(reg, "v1.0.0-rc.1")
    publish(reg, "v1.0.0+blue")
    (reg / "notes").mkdir()
    assert cli.main(["latest", "--registry", "file://%s?artifact=app.tar.gz" % reg, "--slot", "green"]) == 1
    err = capsys.readouterr().err
    assert "3 tags" in err and "1 not a semantic version" in err and "1 pre-release ignored" in err
    assert 'not of slot "green"' in err


def test_with_an_ini_skips_the_refused_versions_and_names_them(reg, tmp_path, capsys):
    publish(reg, "v1.0.0")
    publish(reg, "v1.1.0")
    work = tmp_path / "work"
    (work / ".dewy").mkdir(parents=True)
    (work / ".dewy" / "refused.json").write_text(json.dumps({"versions": {"1.1.0": {"reason": "did not start"}}}))
    ini = tmp_path / "dewy.ini"
    ini.write_text("[dewy]\nregistry = file://%s?artifact=app.tar.gz\napp = true\nworkdir = work\n" % reg)
    assert cli.main(["latest", "-c", str(ini)]) == 0
    out = capsys.readouterr().out
    assert "version   1.0.0" in out and "refused   1.1.0" in out
    (reg / "v1.0.0" / "app.tar.gz").unlink()
    assert cli.main(["latest", "-c", str(ini), "--json"]) == 1
    assert 'version 1.0.0 has no artifact "app.tar.gz"' in json.loads(capsys.readouterr().out)["error"]


def test_all_refused_is_explained(reg, tmp_path, capsys):
    publish(reg, "v1.1.0")
    work = tmp_path / "work"
    (work / ".dewy").mkdir(parents=True)
    (work / ".dewy" / "refused.json").write_text(json.dumps({"versions": {"1.1.0": {"reason": "x"}}}))
    ini = tmp_path / "dewy.ini"
    ini.write_text("[dewy]\nregistry = file://%s?artifact=app.tar.gz\napp = true\nworkdir = work\n" % reg)
    assert cli.main(["latest", "-c", str(ini)]) == 1
    assert "refused: 1.1.0 (see .dewy/refused.json)" in capsys.readouterr().err


def test_credentials_in_the_url_are_not_printed(reg, capsys):
    assert cli.main(["latest", "--registry", "file://%s/missing?artifact=a.tgz&token=s3cret" % reg]) in (1, 2)
    captured = capsys.readouterr()
    assert "s3cret" not in captured.out + captured.err


def test_needs_a_registry_or_an_ini(capsys):
    assert cli.main(["latest"]) == 2
    assert "-c INI" in capsys.readouterr().err


def test_verify_checksum_required_says_the_release_would_be_refused(reg, tmp_path, capsys):
    publish(reg, "v1.0.0")
    ini = tmp_path / "dewy.ini"
    ini.write_text("[dewy]\nregistry = file://%s?artifact=app.tar.gz\napp = true\nworkdir = work\n"
                   "verify-checksum = required\n" % reg)
    assert cli.main(["latest", "-c", str(ini)]) == 1
    assert "would be refused: no checksum published" in capsys.readouterr().out
    assert cli.main(["latest", "-c", str(ini), "--json"]) == 1
    assert "verify-checksum = required" in json.loads(capsys.readouterr().out)["refusal"]


def test_asking_creates_nothing_in_the_workdir(reg, tmp_path, capsys):
    publish(reg, "v1.0.0")
    ini = tmp_path / "dewy.ini"
    ini.write_text("[dewy]\nregistry = file://%s?artifact=app.tar.gz\napp = true\nworkdir = work\n" % reg)
    assert cli.main(["latest", "-c", str(ini), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["refused"] == []
    assert not (tmp_path / "work").exists()
