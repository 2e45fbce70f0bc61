"""The file:// registry and the file:// artifact store, on real directories."""

import hashlib
import io
import os

import pytest

from dewy import audit, artifact, registry, versions
from dewy.registry import RegistryError

OS_NAME = versions.platform_aliases()[0][0]
ARCH_NAME = versions.platform_aliases()[1][0]
NATIVE = "app_%s_%s.tar.gz" % (OS_NAME, ARCH_NAME)
FOREIGN = "app_plan9_mips.tar.gz"


def publish(root, tag, files):
    """Create <root>/<tag>/ holding files (name -> bytes or str)."""
    version_dir = root / tag
    version_dir.mkdir(parents=True)
    for name, content in files.items():
        (version_dir / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return version_dir


def reg(root, query="", slot=""):
    return registry.from_url("file://%s%s" % (root, query), slot=slot)


def test_newest_semver_wins_and_v_prefix_is_optional(tmp_path):
    for tag in ("v1.0.0", "1.2.0", "v1.10.0", "v1.9.9"):
        publish(tmp_path, tag, {NATIVE: tag})
    release = reg(tmp_path).latest()
    assert (release.version, release.tag, release.artifact_name) == ("1.10.0", "v1.10.0", NATIVE)


def test_non_semver_directories_and_plain_files_are_ignored(tmp_path):
    publish(tmp_path, "v1.0.0", {NATIVE: "x"})
    publish(tmp_path, "latest", {NATIVE: "x"})
    publish(tmp_path, "v2", {NATIVE: "x"})
    (tmp_path / "v9.9.9").write_text("a file, not a version directory")
    assert reg(tmp_path).latest().version == "1.0.0"


def test_pre_releases_only_with_the_query_flag(tmp_path):
    publish(tmp_path, "v1.0.0", {NATIVE: "x"})
    publish(tmp_path, "v1.1.0-rc.1", {NATIVE: "x"})
    assert reg(tmp_path).latest().version == "1.0.0"
    assert reg(tmp_path, "?pre-release=true").latest().version == "1.1.0-rc.1"
    assert reg(tmp_path, "?pre-release=no").latest().version == "1.0.0"


def test_slot_selects_build_metadata(tmp_path):
    publish(tmp_path, "v1.0.0+blue", {NATIVE: "x"})
    publish(tmp_path, "v1.1.0+green", {NATIVE: "x"})
    assert reg(tmp_path, slot="blue").latest().version == "1.0.0+blue"
    assert reg(tmp_path, slot="green").latest().version == "1.1.0+green"
    with pytest.raises(RegistryError, match='slot "red"'):
        reg(tmp_path, slot="red").latest()


def test_excluded_versions_are_skipped(tmp_path):
    for tag in ("v1.0.0", "v1.1.0", "v1.2.0"):
        publish(tmp_path, tag, {NATIVE: "x"})
    assert reg(tmp_path).latest(exclude={"1.2.0"}).version == "1.1.0"
    assert reg(tmp_path).latest(exclude={"1.2.0", "1.1.0"}).version == "1.0.0"
    with pytest.raises(RegistryError, match="no deployable version"):
        reg(tmp_path).latest(exclude={"1.2.0", "1.1.0", "1.0.0"})


def test_deleting_the_newest_makes_the_previous_newest(tmp_path):
    publish(tmp_path, "v1.0.0", {NATIVE: "x"})
    newest = publish(tmp_path, "v1.1.0", {NATIVE: "x"})
    registry_ = reg(tmp_path)
    assert registry_.latest().version == "1.1.0"
    for name in os.listdir(newest):
        os.unlink(newest / name)
    newest.rmdir()
    assert registry_.latest().version == "1.0.0"


def test_artifact_matches_this_host(tmp_path):
    publish(tmp_path, "v1.0.0", {FOREIGN: "x", NATIVE: "y", "SHA256SUMS": "", "shipped_to_h_server_at_x.txt": ""})
    assert reg(tmp_path).latest().artifact_name == NATIVE


def test_no_artifact_for_this_host_names_version_and_files(tmp_path):
    publish(tmp_path, "v1.0.0", {FOREIGN: "x"})
    with pytest.raises(RegistryError) as err:
        reg(tmp_path).latest()
    assert "1.0.0" in str(err.value) and FOREIGN in str(err.value)


def test_artifact_query_names_the_file(tmp_path):
    publish(tmp_path, "v1.0.0", {FOREIGN: "x", NATIVE: "y", "site.zip": "z"})
    assert reg(tmp_path, "?artifact=site.zip").latest().artifact_name == "site.zip"


def test_artifact_query_absent_in_version_is_an_error(tmp_path):
    publish(tmp_path, "v1.0.0", {NATIVE: "y", "other.zip": "z"})
    with pytest.raises(RegistryError) as err:
        reg(tmp_path, "?artifact=site.zip").latest()
    message = str(err.value)
    assert 'version 1.0.0 has no artifact "site.zip"' in message
    assert NATIVE in message and "other.zip" in message


def test_missing_registry_directory(tmp_path):
    with pytest.raises(RegistryError, match="does not exist"):
        reg(tmp_path / "nope").latest()


def test_empty_registry(tmp_path):
    with pytest.raises(RegistryError, match="no deployable version"):
        reg(tmp_path).latest()


def test_relative_path_is_refused():
    with pytest.raises(ValueError, match="absolute path"):
        registry.from_url("file://releases/x")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_no_checksum_published(tmp_path):
    publish(tmp_path, "v1.0.0", {NATIVE: "payload"})
    assert reg(tmp_path).latest().sha256 is None


def test_checksum_from_sha256sums(tmp_path):
    body = b"payload"
    publish(tmp_path, "v1.0.0", {NATIVE: body, "SHA256SUMS": "%s  %s\n%s *other\n" % (sha(body), NATIVE, "0" * 64)})
    assert reg(tmp_path).latest().sha256 == sha(body)


def test_checksum_from_goreleaser_checksums_txt(tmp_path):
    body = b"payload"
    publish(tmp_path, "v1.0.0", {NATIVE: body, "app_1.0.0_checksums.txt": "%s *%s\n" % (sha(body).upper(), NATIVE)})
    assert reg(tmp_path).latest().sha256 == sha(body)


def test_checksum_from_bare_sidecar(tmp_path):
    body = b"payload"
    publish(tmp_path, "v1.0.0", {NATIVE: body, NATIVE + ".sha256": sha(body) + "\n"})
    assert reg(tmp_path).latest().sha256 == sha(body)


def test_checksum_file_not_listing_the_artifact(tmp_path):
    publish(tmp_path, "v1.0.0", {NATIVE: "payload", "SHA256SUMS": "%s  something-else\n" % ("a" * 64)})
    assert reg(tmp_path).latest().sha256 is None


def test_conflicting_checksums_are_an_error(tmp_path):
    publish(tmp_path, "v1.0.0", {NATIVE: "payload", "SHA256SUMS": "%s  %s\n" % ("a" * 64, NATIVE),
                                 NATIVE + ".sha256": "b" * 64})
    with pytest.raises(RegistryError, match="conflicting checksums"):
        reg(tmp_path).latest()


def test_artifact_url_fetches_the_file_in_chunks(tmp_path):
    body = os.urandom(3 * 1024 * 1024 + 17)
    publish(tmp_path, "v1.0.0+blue", {"my app.bin": body})
    release = reg(tmp_path, "?artifact=my%20app.bin").latest()

    class Recorder(io.BytesIO):
        sizes = []

        def write(self, data):
            self.sizes.append(len(data))
            return super().write(data)

    out = Recorder()
    artifact.from_url(release.artifact_url).fetch(out)
    assert out.getvalue() == body
    assert max(Recorder.sizes) <= 1 << 20 and len(Recorder.sizes) == 4


def test_missing_artifact_file_is_an_artifact_error(tmp_path):
    with pytest.raises(artifact.ArtifactError, match="cannot read artifact"):
        artifact.from_url("file://%s/gone.tar.gz" % tmp_path).fetch(io.BytesIO())


def test_report_writes_the_record_next_to_the_artifacts(tmp_path):
    version_dir = publish(tmp_path, "v1.0.0", {NATIVE: "x"})
    registry_ = reg(tmp_path)
    release = registry_.latest()
    shipped = audit.Shipped(host="web1", mode="server", time_ns=1_790_000_000_123_456_789, version="1.0.0",
                            tag="v1.0.0")
    registry_.report(release, shipped)
    record = version_dir / "shipped_to_web1_server_at_20260921T141320.123456789Z.txt"
    assert record.read_text() == shipped.text()
    assert oct(record.stat().st_mode & 0o777) == "0o644"
    assert sorted(os.listdir(version_dir)) == sorted([NATIVE, record.name])  # no temp file left
    # The record never becomes the artifact.
    assert registry_.latest().artifact_name == NATIVE


def test_report_of_a_failed_deploy_writes_nothing(tmp_path):
    version_dir = publish(tmp_path, "v1.0.0", {NATIVE: "x"})
    registry_ = reg(tmp_path)
    registry_.report(registry_.latest(), audit.Shipped(host="web1", mode="server", time_ns=0, version="1.0.0",
                                                       tag="v1.0.0", error="did not start"))
    assert os.listdir(version_dir) == [NATIVE]


def test_artifact_changing_detects_a_copy_in_progress(tmp_path):
    path = tmp_path / "app.tar.gz"
    path.write_bytes(b"first half")
    fetcher = artifact.from_url("file://%s" % path)
    assert not fetcher.changing()  # nothing read yet: nothing to compare
    fetcher.fetch(io.BytesIO())
    assert not fetcher.changing()
    with open(path, "ab") as fh:
        fh.write(b" and the second half")
    assert fetcher.changing()
    fetcher.fetch(io.BytesIO())
    assert not fetcher.changing()
    os.unlink(path)
    assert fetcher.changing()


def test_non_version_directories_are_logged_once_at_debug(tmp_path, caplog):
    publish(tmp_path, "v1.0.0", {NATIVE: "x"})
    (tmp_path / "drafts").mkdir()
    registry_ = reg(tmp_path)
    with caplog.at_level("DEBUG", logger="dewy.registry"):
        registry_.latest()
        registry_.latest()
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 1 and "'drafts': not a semantic version" in skipped[0]


def test_a_goreleaser_directory_deploys_the_archive_not_a_package(tmp_path):
    stem = "app_1.0.0_%s_%s" % (OS_NAME, ARCH_NAME)
    publish(tmp_path, "v1.0.0", {stem + ext: "x" for ext in (".apk", ".deb", ".rpm", ".tar.gz")})
    (tmp_path / "v1.0.0" / "checksums.txt").write_text("".join(
        "%s  %s\n" % (hashlib.sha256(b"x").hexdigest(), stem + ext) for ext in (".apk", ".deb", ".rpm", ".tar.gz")))
    release = reg(tmp_path).latest()
    assert release.artifact_name == stem + ".tar.gz" and release.sha256 == hashlib.sha256(b"x").hexdigest()


def test_a_version_published_twice_is_warned_about_once_naming_both(tmp_path, caplog):
    """v1.0.0/ and 1.0.0/: one of them is used, never silently (here only v1.0.0/ holds the artifact)."""
    publish(tmp_path, "v1.0.0", {NATIVE: "x"})
    publish(tmp_path, "1.0.0", {})
    registry_ = reg(tmp_path)
    with caplog.at_level("DEBUG", logger="dewy.registry"):
        for _ in range(3):
            with pytest.raises(registry.base.NotYetPublished):
                registry_.latest()
    twice = [r for r in caplog.records if "published twice" in r.getMessage()]
    assert len(twice) == 1 and twice[0].levelname == "WARNING", [r.getMessage() for r in caplog.records]
    assert '"1.0.0" and "v1.0.0"' in twice[0].getMessage() and str(tmp_path) in twice[0].getMessage()
    caplog.clear()
    publish(tmp_path, "v1.1.0", {NATIVE: "x"})  # no twin: nothing said
    with caplog.at_level("DEBUG", logger="dewy.registry"):
        assert registry_.latest().version == "1.1.0"
    assert not [r for r in caplog.records if "published twice" in r.getMessage()]


def test_nothing_deployable_is_not_an_outage_and_says_when_the_version_appeared(tmp_path):
    """An empty registry, or only refused versions: NothingDeployable (the registry answered), not a plain
    RegistryError; a version without its artifact says since when its directory exists (the poller waits
    quietly for a young one and warns about an old one)."""
    with pytest.raises(registry.base.NothingDeployable, match="0 tags"):
        reg(tmp_path).latest()
    publish(tmp_path, "v1.0.0", {NATIVE: "x"})
    with pytest.raises(registry.base.NothingDeployable, match="refused: 1.0.0"):
        reg(tmp_path).latest(exclude=["1.0.0"])
    publish(tmp_path, "v1.1.0", {"site.tar.gz": "x"})
    os.utime(tmp_path / "v1.1.0", (1_700_000_000, 1_700_000_000))
    with pytest.raises(registry.base.NotYetPublished) as info:
        reg(tmp_path).latest()
    assert info.value.since == 1_700_000_000
    with pytest.raises(RegistryError) as gone:  # a real outage stays a plain RegistryError
        reg(tmp_path / "missing").latest()
    assert not isinstance(gone.value, registry.base.NothingDeployable)
