"""Unit tests for dewy.versions: tag parsing, newest-version selection, slots and artifact matching."""

import pytest

from dewy import versions


# --- parse / normalise ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag, expected",
    [
        ("1.2.3", "1.2.3"),
        ("v1.2.3", "1.2.3"),
        ("V1.2.3", "1.2.3"),
        ("v1.2.3-rc.1", "1.2.3-rc.1"),
        ("v1.2.3+blue", "1.2.3+blue"),
        ("1.2.3-rc.1+blue", "1.2.3-rc.1+blue"),
        ("v0.0.0", "0.0.0"),
        # Dewy's regex (registry/semver.go) takes leading zeros in the numbers and compares them as numbers
        ("v1.02.3", "1.2.3"),
        ("01.2.3", "1.2.3"),
        ("v001.000.010-rc.1+blue", "1.0.10-rc.1+blue"),
    ],
)
def test_parse_accepts_strict_semver_with_optional_v(tag, expected):
    version = versions.parse(tag)
    assert version is not None
    assert str(version) == expected
    assert versions.normalise(tag) == expected


@pytest.mark.parametrize(
    "tag",
    ["latest", "1.2", "v1.2.3.4", "release-1", "", "v", "vv1.2.3", " 1.2.3",
     "1.2.3-01", "1.2.3-rc..1", "1.02.3\n", "1.2.3\n", "x1.2.3", None, 123],
)
def test_parse_rejects_anything_else(tag):
    assert versions.parse(tag) is None


def test_leading_zeros_compare_as_numbers_as_in_dewy():
    assert versions.select_newest(["v1.02.3", "v1.10.0", "v1.9.0"]) == "v1.10.0"
    assert versions.select_newest(["v1.02.3", "v1.1.9"]) == "v1.02.3"


def test_normalise_rejects_non_semver():
    with pytest.raises(ValueError, match="latest"):
        versions.normalise("latest")


# --- select_newest -------------------------------------------------------------------------------


def test_newest_by_semver_order_not_lexical():
    tags = ["v1.9.0", "v1.10.0", "v1.2.0", "v0.99.99"]
    assert versions.select_newest(tags) == "v1.10.0"


def test_returns_the_tag_as_given_with_or_without_v():
    assert versions.select_newest(["1.0.0", "v2.0.0"]) == "v2.0.0"
    assert versions.select_newest(["v1.0.0", "2.0.0"]) == "2.0.0"


def test_non_semver_tags_are_ignored():
    assert versions.select_newest(["latest", "v1.2", "v9.9.9.9", "release-1", "v1.0.0"]) == "v1.0.0"
    assert versions.select_newest(["latest", "nightly"]) is None
    assert versions.select_newest([]) is None


def test_pre_releases_only_when_asked():
    tags = ["v1.2.3", "v1.3.0-rc.1", "v1.3.0-beta.2"]
    assert versions.select_newest(tags) == "v1.2.3"
    assert versions.select_newest(tags, pre_release=True) == "v1.3.0-rc.1"
    # The final release outranks its own pre-releases.
    assert versions.select_newest(tags + ["v1.3.0"], pre_release=True) == "v1.3.0"
    assert versions.select_newest(["v1.0.0-rc.1"]) is None


def test_slot_selects_only_matching_build_metadata():
    tags = ["v1.2.3+blue", "v1.2.4+green", "v1.2.5", "v1.2.2+blue"]
    assert versions.select_newest(tags, slot="blue") == "v1.2.3+blue"
    assert versions.select_newest(tags, slot="green") == "v1.2.4+green"
    assert versions.select_newest(tags, slot="red") is None


def test_no_slot_considers_every_version_and_ignores_build_for_order():
    tags = ["v1.2.3+blue", "v1.2.4+green", "v1.2.2"]
    assert versions.select_newest(tags) == "v1.2.4+green"


def test_ties_prefer_no_build_metadata_then_lexical_tag():
    assert versions.select_newest(["v1.2.3+zzz", "v1.2.3", "v1.2.3+aaa"]) == "v1.2.3"
    assert versions.select_newest(["v1.2.3+green", "v1.2.3+blue"]) == "v1.2.3+blue"
    # The result does not depend on the order the registry listed the tags in.
    assert versions.select_newest(["v1.2.3+blue", "v1.2.3+green"]) == "v1.2.3+blue"


def test_slot_with_pre_release():
    tags = ["v2.0.0-rc.1+blue", "v1.9.0+blue"]
    assert versions.select_newest(tags, slot="blue") == "v1.9.0+blue"
    assert versions.select_newest(tags, slot="blue", pre_release=True) == "v2.0.0-rc.1+blue"


def test_exclude_skips_refused_versions():
    tags = ["v1.0.0", "v1.1.0", "v1.2.0"]
    assert versions.select_newest(tags, exclude=["1.2.0"]) == "v1.1.0"
    assert versions.select_newest(tags, exclude={"1.2.0", "1.1.0"}) == "v1.0.0"
    assert versions.select_newest(tags, exclude=["1.2.0", "1.1.0", "1.0.0"]) is None
    # A v-prefixed exclusion is normalised too.
    assert versions.select_newest(tags, exclude=["v1.2.0"]) == "v1.1.0"


def test_exclude_compares_build_metadata():
    tags = ["v1.2.0+blue", "v1.2.0+green", "v1.1.0+blue"]
    assert versions.select_newest(tags, exclude=["1.2.0+blue"]) == "v1.2.0+green"
    assert versions.select_newest(tags, slot="blue", exclude=["1.2.0+blue"]) == "v1.1.0+blue"


def test_select_newest_accepts_any_iterable():
    assert versions.select_newest(iter(["v1.0.0", "v3.0.0", "v2.0.0"])) == "v3.0.0"
    assert versions.select_newest(t for t in ["v1.0.0"]) == "v1.0.0"


# --- platform_aliases ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "system, machine, expected",
    [
        ("Linux", "x86_64", (("linux",), ("amd64", "x86_64"))),
        ("Linux", "aarch64", (("linux",), ("arm64", "aarch64"))),
        ("Darwin", "arm64", (("darwin", "macos"), ("arm64", "aarch64"))),
        ("Windows", "AMD64", (("windows",), ("amd64", "x86_64"))),
        ("Linux", "i686", (("linux",), ("386", "i386", "i686"))),
        ("Linux", "armv7l", (("linux",), ("armv7", "arm"))),
        ("FreeBSD", "riscv64", (("freebsd",), ("riscv64",))),
    ],
)
def test_platform_aliases(system, machine, expected):
    assert versions.platform_aliases(system, machine) == expected


def test_platform_aliases_default_to_this_host():
    os_names, arch_names = versions.platform_aliases()
    assert os_names and arch_names
    assert all(name == name.lower() for name in os_names + arch_names)


# --- match_artifact ------------------------------------------------------------------------------

ASSETS = [
    "checksums.txt",
    "app_darwin_amd64.tar.gz",
    "app_darwin_arm64.tar.gz",
    "app_linux_amd64.tar.gz.sha256",
    "app_linux_amd64.tar.gz",
    "app_linux_arm64.tar.gz",
    "app_windows_amd64.zip",
]


def test_match_linux_amd64():
    assert versions.match_artifact(ASSETS, "Linux", "x86_64") == "app_linux_amd64.tar.gz"


def test_match_linux_arm64_and_aarch64_alias():
    assert versions.match_artifact(ASSETS, "Linux", "aarch64") == "app_linux_arm64.tar.gz"
    assert versions.match_artifact(["App-Linux-AArch64.tgz"], "Linux", "arm64") == "App-Linux-AArch64.tgz"


def test_match_darwin_and_macos_alias():
    assert versions.match_artifact(ASSETS, "Darwin", "arm64") == "app_darwin_arm64.tar.gz"
    assert versions.match_artifact(["app-macos-x86_64.zip"], "Darwin", "x86_64") == "app-macos-x86_64.zip"


def test_match_windows():
    assert versions.match_artifact(ASSETS, "Windows", "AMD64") == "app_windows_amd64.zip"


def test_first_match_in_given_order_wins():
    names = ["app_linux_x86_64.zip", "app_linux_amd64.tar.gz"]
    assert versions.match_artifact(names, "Linux", "x86_64") == "app_linux_x86_64.zip"
    assert versions.match_artifact(list(reversed(names)), "Linux", "x86_64") == "app_linux_amd64.tar.gz"


def test_arm_does_not_match_arm64():
    names = ["app_linux_arm64.tar.gz", "app_linux_arm.tar.gz"]
    assert versions.match_artifact(names, "Linux", "armv7l") == "app_linux_arm.tar.gz"
    assert versions.match_artifact(["app_linux_arm64.tar.gz"], "Linux", "armv7l") is None


def test_no_match_returns_none():
    assert versions.match_artifact(ASSETS, "Linux", "riscv64") is None
    assert versions.match_artifact(ASSETS, "FreeBSD", "x86_64") is None
    assert versions.match_artifact([], "Linux", "x86_64") is None


def test_checksum_and_signature_files_are_never_artifacts():
    names = [
        "app_linux_amd64.tar.gz.sha256",
        "app_linux_amd64_checksums.txt",
        "app_linux_amd64.tar.gz.sig",
        "app_linux_amd64.tar.gz.asc",
        "shipped_to_web1_linux_amd64_server_at_20260101T000000Z.txt",
    ]
    assert versions.match_artifact(names, "Linux", "x86_64") is None
    assert versions.match_artifact(names + ["app_linux_amd64"], "Linux", "x86_64") == "app_linux_amd64"


def test_goreleaser_packages_lose_to_the_archive_dewy_unpacks():
    """GoReleaser publishes apk/deb/rpm packages beside the archive: the archive is the artifact, whatever the
    order (alphabetically the .apk came first and was picked)."""
    packages = ["app_1.0.0_linux_amd64.apk", "app_1.0.0_linux_amd64.deb", "app_1.0.0_linux_amd64.rpm"]
    names = sorted(packages + ["app_1.0.0_linux_amd64.tar.gz", "checksums.txt"])
    assert versions.match_artifact(names, "Linux", "x86_64") == "app_1.0.0_linux_amd64.tar.gz"
    assert versions.match_artifact(list(reversed(names)), "Linux", "x86_64") == "app_1.0.0_linux_amd64.tar.gz"
    assert versions.match_artifact(["app_linux_amd64.deb", "app_linux_amd64.tar.gz"], "Linux",
                                   "x86_64") == "app_linux_amd64.tar.gz"
    for archive in ("app_linux_amd64.tgz", "app_linux_amd64.tar.xz", "app_linux_amd64.zip", "app_linux_amd64.tar"):
        assert versions.match_artifact(["app_linux_amd64.apk", archive], "Linux", "x86_64") == archive
    # A bare executable beats a package; a package alone is still what there is.
    assert versions.match_artifact(["app_linux_amd64.deb", "app_linux_amd64"], "Linux", "x86_64") == "app_linux_amd64"
    assert versions.match_artifact(packages, "Linux", "x86_64") == "app_1.0.0_linux_amd64.apk"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("app_linux_amd64.tar.gz", True),
        ("app", True),
        ("app.tar.gz.sha256", False),
        ("APP.TAR.GZ.SHA256", False),
        ("checksums.txt", False),
        ("app_1.2.3_checksums.txt", False),
        ("SHA256SUMS", False),
        ("app.sig", False),
        ("app.asc", False),
        ("shipped_to_host_server_at_20260101T000000Z.txt", False),
    ],
)
def test_is_artifact_name(name, expected):
    assert versions.is_artifact_name(name) is expected


# --- calendar versions (Dewy's ?calver= format language) -------------------------------------------

@pytest.mark.parametrize("fmt, tags, expected", [
    ("YYYY.0M.MICRO", ["2024.01.3", "v2024.02.1", "2024.2.5", "2023.12.99"], "v2024.02.1"),
    ("YYYY.MM.DD", ["2024.1.31", "2024.12.1", "2024.2.29"], "2024.12.1"),
    ("YY.0W.MICRO", ["24.09.1", "24.10.0", "24.9.7"], "24.10.0"),
    ("YYYY.MICRO", ["2024.9", "2024.10", "2024.10-rc.1"], "2024.10"),
    ("vYYYY-0M-0D", ["v2024-01-05", "v2024-01-15", "2024-01-20"], "v2024-01-15"),
])
def test_calver_selects_segment_by_segment(fmt, tags, expected):
    assert versions.select_newest(tags, calver=fmt) == expected


def test_calver_pre_releases_slots_and_exclusions():
    tags = ["2024.01.1", "2024.01.2-rc.1", "2024.01.2-rc.2", "2024.01.1+blue", "2024.01.3+green"]
    assert versions.select_newest(tags, calver="YYYY.0M.MICRO") == "2024.01.3+green"
    assert versions.select_newest(tags, calver="YYYY.0M.MICRO", pre_release=True) == "2024.01.3+green"
    assert versions.select_newest(tags[:3], calver="YYYY.0M.MICRO", pre_release=True) == "2024.01.2-rc.2"
    assert versions.select_newest(tags, calver="YYYY.0M.MICRO", slot="blue") == "2024.01.1+blue"
    assert versions.select_newest(tags, calver="YYYY.0M.MICRO", exclude=["2024.01.3+green"]) == "2024.01.1"


def test_calver_normalises_and_ignores_semver_tags():
    assert versions.normalise("v2024.01.3+blue", "YYYY.0M.MICRO") == "2024.01.3+blue"
    assert versions.select_newest(["1.2.3", "2024.1.1"], calver="YYYY.0M.MICRO") is None
    with pytest.raises(ValueError, match="calendar"):
        versions.normalise("1.2.3", "YYYY.0M.MICRO")


@pytest.mark.parametrize("fmt", ["", "...", "v-"])
def test_calver_format_needs_a_specifier(fmt):
    with pytest.raises(ValueError):
        versions.CalVer(fmt)


def test_pre_release_precedence_follows_semver():
    tags = ["2024.1-alpha", "2024.1-alpha.1", "2024.1-alpha.beta", "2024.1-beta.2", "2024.1-beta.11", "2024.1-rc.1"]
    for i in range(1, len(tags)):
        assert versions.select_newest(tags[:i + 1], calver="YYYY.MICRO", pre_release=True) == tags[i]


def test_explain_counts_what_was_ignored():
    text = versions.explain(["v1.0.0-rc.1", "latest", "v1.1.0+blue", "v0.9.0"], slot="green", exclude=["0.9.0"])
    assert text.startswith("4 tags: ")
    assert "1 not a semantic version" in text and "1 pre-release ignored" in text
    assert 'not of slot "green"' in text


def test_explain_names_refused_versions():
    assert versions.explain(["v1.0.0"], exclude=["1.0.0"]) == \
        "1 tag: refused: 1.0.0 (see .dewy/refused.json)"


def test_is_older():
    assert versions.is_older("1.1.0", "1.2.0") and not versions.is_older("1.2.0", "1.2.0+blue")
    assert versions.is_older("1.2.0-rc.1", "1.2.0") and not versions.is_older("2.0.0", "1.9.9")
    assert versions.is_older("2024.01.9", "2024.02.1", calver="YYYY.0M.MICRO")
    assert not versions.is_older("junk", "1.0.0")
