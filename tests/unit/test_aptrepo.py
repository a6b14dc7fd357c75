"""The apt repository writer's text: Packages entries and Release files from given data."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from homekube.lab.aptrepo import (
    FileHashes,
    PackageEntry,
    hash_bytes,
    packages_entry,
    packages_text,
    parse_control,
    release_text,
    source_line,
)

# `dpkg-deb -f socat_1.7.4.4-2_amd64.deb`, as bookworm ships it
SOCAT = """\
Package: socat
Version: 1.7.4.4-2
Architecture: amd64
Maintainer: Laszlo Boszormenyi (GCS) <gcs@debian.org>
Installed-Size: 1347
Depends: libc6 (>= 2.34), libssl3 (>= 3.0.0), libwrap0 (>= 7.6-4~)
Section: net
Priority: optional
Homepage: http://www.dest-unreach.org/socat/
Description: multipurpose relay for bidirectional data transfer
 Socat (for SOcket CAT) establishes two bidirectional byte streams and
 transfers data between them.
 .
 Data channels may be files, pipes, devices.
"""

H = FileHashes(size=374208, md5="a" * 32, sha1="b" * 40, sha256="c" * 64)


def test_parse_control_keeps_order_and_continuation_lines() -> None:
    fields = parse_control(SOCAT)
    assert [k for k, _ in fields] == [
        "Package", "Version", "Architecture", "Maintainer", "Installed-Size", "Depends",
        "Section", "Priority", "Homepage", "Description",
    ]  # fmt: skip
    desc = dict(fields)["Description"]
    assert desc.splitlines() == [
        "multipurpose relay for bidirectional data transfer",
        " Socat (for SOcket CAT) establishes two bidirectional byte streams and",
        " transfers data between them.",
        " .",
        " Data channels may be files, pipes, devices.",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Version: 1\nPackage: x\n",  # Package must come first
        " orphan continuation\nPackage: x\n",
        "Package: x\nno colon here\n",
    ],
)
def test_parse_control_refuses_what_is_not_a_control_paragraph(text: str) -> None:
    with pytest.raises(ValueError):
        parse_control(text)


def test_packages_entry_is_control_plus_location_and_hashes() -> None:
    entry = PackageEntry(tuple(parse_control(SOCAT)), "pool/main/socat_1.7.4.4-2_amd64.deb", H)
    text = packages_entry(entry)
    assert text == SOCAT.rstrip("\n") + (
        "\nFilename: pool/main/socat_1.7.4.4-2_amd64.deb"
        "\nSize: 374208"
        f"\nMD5sum: {'a' * 32}"
        f"\nSHA1: {'b' * 40}"
        f"\nSHA256: {'c' * 64}"
    )
    # what apt's deb822 parser sees: the same fields back, plus the five index fields
    reparsed = dict(parse_control(text))
    assert reparsed["Depends"] == "libc6 (>= 2.34), libssl3 (>= 3.0.0), libwrap0 (>= 7.6-4~)"
    assert reparsed["Size"] == "374208" and reparsed["SHA256"] == "c" * 64


def test_packages_entry_drops_index_fields_a_control_should_not_carry() -> None:
    control = (("Package", "x"), ("Version", "1"), ("Filename", "elsewhere.deb"), ("Size", "1"))
    text = packages_entry(PackageEntry(control, "x_1_all.deb", H))
    assert text.count("Filename:") == 1 and "Filename: x_1_all.deb" in text
    assert text.count("Size:") == 1 and "Size: 374208" in text


def test_packages_text_sorted_and_blank_line_separated() -> None:
    def entry(name: str, version: str) -> PackageEntry:
        return PackageEntry((("Package", name), ("Version", version)), f"{name}_{version}.deb", H)

    text = packages_text([entry("zstd", "1"), entry("etcd-server", "3.4"), entry("acl", "2")])
    paragraphs = text.split("\n\n")
    assert [p.splitlines()[0] for p in paragraphs if p] == [
        "Package: acl", "Package: etcd-server", "Package: zstd",
    ]  # fmt: skip
    assert text.endswith("\n\n") and "\n\n\n" not in text
    assert packages_text([]) == ""


def test_hash_bytes() -> None:
    h = hash_bytes(b"abc")
    assert h.size == 3
    assert h.md5 == "900150983cd24fb0d6963f7d28e17f72"
    assert h.sha1 == "a9993e364706816aba3e25717850c26c9cd0d89d"
    assert h.sha256 == hashlib.sha256(b"abc").hexdigest()


WHEN = datetime(2026, 3, 1, 9, 5, 7, tzinfo=UTC)


def test_release_text_of_a_dists_repository() -> None:
    files = {
        "main/binary-amd64/Packages.gz": FileHashes(1200, "1" * 32, "2" * 40, "3" * 64),
        "main/binary-amd64/Packages": FileHashes(45678, "4" * 32, "5" * 40, "6" * 64),
    }
    text = release_text(
        files,
        date=WHEN,
        architectures=["amd64"],
        suite="bookworm",
        codename="bookworm",
        components=["main"],
    )
    assert text == (
        "Origin: homekube lab\n"
        "Label: homekube lab\n"
        "Suite: bookworm\n"
        "Codename: bookworm\n"
        "Date: Sun, 01 Mar 2026 09:05:07 UTC\n"
        "Architectures: amd64\n"
        "Components: main\n"
        "MD5Sum:\n"
        f" {'4' * 32} 45678 main/binary-amd64/Packages\n"
        f" {'1' * 32}  1200 main/binary-amd64/Packages.gz\n"
        "SHA1:\n"
        f" {'5' * 40} 45678 main/binary-amd64/Packages\n"
        f" {'2' * 40}  1200 main/binary-amd64/Packages.gz\n"
        "SHA256:\n"
        f" {'6' * 64} 45678 main/binary-amd64/Packages\n"
        f" {'3' * 64}  1200 main/binary-amd64/Packages.gz\n"
    )


def test_release_text_of_a_flat_repository_has_no_suite_or_components() -> None:
    text = release_text({"Packages": H}, date=WHEN, architectures=["amd64", "all"])
    fields = [line.split(":")[0] for line in text.splitlines() if not line.startswith(" ")]
    assert fields == ["Origin", "Label", "Date", "Architectures", "MD5Sum", "SHA1", "SHA256"]
    assert "Architectures: amd64 all\n" in text
    assert f" {'c' * 64} 374208 Packages\n" in text


def test_release_date_is_english_and_utc_whatever_the_timezone() -> None:
    from datetime import timedelta, timezone

    local = datetime(2026, 3, 1, 1, 5, 7, tzinfo=timezone(timedelta(hours=-8)))
    text = release_text({}, date=local, architectures=["amd64"])
    assert "Date: Sun, 01 Mar 2026 09:05:07 UTC\n" in text


def test_source_lines() -> None:
    k = "/etc/apt/keyrings/homekube-lab.gpg"
    assert source_line("http://10.77.1.1:8078/debian", key_path=k, suite="bookworm") == (
        f"deb [signed-by={k}] http://10.77.1.1:8078/debian/ bookworm main"
    )
    assert source_line("http://10.77.1.1:8078/k8s/", key_path=k) == (
        f"deb [signed-by={k}] http://10.77.1.1:8078/k8s/ /"
    )
