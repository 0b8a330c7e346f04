"""Local files are private (issue 13, item 6): what vecwal creates is 0600/0700 whatever the
umask (or ``[storage] file_mode``), a repository others can write is refused, and verify
reports one others can read."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.atomic import atomic_write, create_exclusive, dir_mode, make_dirs
from daemon.changelog.repository import Repository
from daemon.config import config_from_mapping
from daemon.errors import ConfigError
from daemon.filemode import check_repository_root, parse_file_mode, scan_exposure
from daemon.objectstore import open_store
from daemon.objectstore.local import LocalStore
from daemon.restore.sinks import WrittenState
from daemon.restore.sinks.directory import DirSink
from daemon.verify import verify


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def permissive_umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The usual umask, and none at all: neither may open what vecwal creates."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def modes(root: Path) -> dict[str, int]:
    """Every path under ``root`` (and root itself, as ".") with its permission bits."""
    out = {".": mode(root)}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = mode(p)
    return out


# -- creation ----------------------------------------------------------------------------


@pytest.mark.usefixtures("permissive_umask")
def test_atomic_helpers_create_private_files_and_directories(tmp_path: Path) -> None:
    make_dirs(tmp_path / "a" / "b" / "c")
    atomic_write(tmp_path / "a" / "b" / "c" / "f", b"x")
    atomic_write(tmp_path / "a" / "b" / "c" / "f", b"replaced")
    atomic_write(tmp_path / "a" / "g", [b"pie", b"ces"], durable=False)
    assert create_exclusive(tmp_path / "a" / "h", b"once")
    assert modes(tmp_path / "a") == {".": 0o700, "b": 0o700, "b/c": 0o700, "b/c/f": 0o600,
                                     "g": 0o600, "h": 0o600}


@pytest.mark.usefixtures("permissive_umask")
def test_a_file_repository_is_private(tmp_path: Path) -> None:
    root = tmp_path / "parent" / "repo"
    store = open_store(root.as_uri())
    store.put("segments/ingest/p=00001/00000000000000000000.avro", b"seg")
    store.put("snapshots/s1/manifest.json", b"{}", create_only=True)
    store.put("state/watermark", b"1")
    store.put("state/watermark", b"2")  # a replacement too
    found = modes(tmp_path / "parent")
    assert {p: m for p, m in found.items() if m != 0o700} == {
        "repo/segments/ingest/p=00001/00000000000000000000.avro": 0o600,
        "repo/snapshots/s1/manifest.json": 0o600,
        "repo/state/watermark": 0o600,
    }
    assert all(not stat.S_ISREG(os.lstat(tmp_path / "parent" / p).st_mode)
               for p, m in found.items() if m == 0o700)
    assert not [p for p in found if ".vecwal-tmp-" in p]
    report = store.permission_report()  # type: ignore[attr-defined]
    assert report.ok and report.readable == report.writable == []


@pytest.mark.usefixtures("permissive_umask")
def test_file_mode_0640_gives_files_0640_and_directories_0750(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    store = open_store(root.as_uri(), file_mode=0o640)
    store.put("log/a/b", b"x")
    store.put("log/a/c", b"y", create_only=True)
    assert modes(root) == {".": 0o750, "log": 0o750, "log/a": 0o750, "log/a/b": 0o640,
                           "log/a/c": 0o640}
    assert store.permission_report().ok  # type: ignore[attr-defined]
    assert dir_mode(0o600) == 0o700 and dir_mode(0o660) == 0o770


def test_a_strict_umask_cannot_narrow_the_configured_mode(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        store = LocalStore(tmp_path / "repo", file_mode=0o640)
        store.put("a/b", b"x")
    finally:
        os.umask(old)
    assert modes(tmp_path / "repo") == {".": 0o750, "a": 0o750, "a/b": 0o640}


@pytest.mark.usefixtures("permissive_umask")
def test_a_setgid_directory_keeps_passing_on_its_group(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o2750)
    store = LocalStore(shared, file_mode=0o640)
    store.put("a/b", b"x")
    assert os.stat(shared / "a").st_mode & stat.S_ISGID
    assert mode(shared / "a") == 0o2750 and mode(shared / "a" / "b") == 0o640


@pytest.mark.usefixtures("permissive_umask")
def test_a_dir_export_is_private(tmp_path: Path) -> None:
    out = tmp_path / "exports" / "restore-1"
    sink = DirSink(out)
    sink.begin()
    sink.write_file("docs", 0, [b"avro", b"bytes"], WrittenState())
    sink.write_file("faq", 3, b"more", WrittenState())
    sink.write_catalog({"collections": {}})
    sink.finish()
    assert modes(tmp_path / "exports") == {
        ".": 0o700, "restore-1": 0o700, "restore-1/docs": 0o700, "restore-1/faq": 0o700,
        "restore-1/docs/part-0000.avro": 0o600, "restore-1/faq/part-0003.avro": 0o600,
        "restore-1/catalog.json": 0o600}
    group = DirSink(tmp_path / "group", file_mode=0o640)
    group.begin()
    group.write_file("docs", 0, b"x", WrittenState())
    group.write_catalog({})
    assert modes(tmp_path / "group") == {".": 0o750, "docs": 0o750,
                                         "docs/part-0000.avro": 0o640, "catalog.json": 0o640}


# -- refusing a repository others can write ------------------------------------------------


def test_a_world_writable_repository_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    root.chmod(0o777)
    with pytest.raises(ConfigError) as info:
        open_store(root.as_uri())
    assert str(root) in info.value.message and "mode 0777" in info.value.message
    assert "writable by other users" in info.value.message
    assert f"chmod 700 {root}" in info.value.hint
    root.chmod(0o1777)  # the sticky bit does not stop others adding files
    with pytest.raises(ConfigError):
        LocalStore(root)
    root.chmod(0o700)
    LocalStore(root)


def test_a_writable_top_level_directory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    LocalStore(root).put("segments/x", b"x")
    (root / "segments").chmod(0o757)
    with pytest.raises(ConfigError) as info:
        LocalStore(root)
    assert "segments/" in info.value.message and "mode 0757" in info.value.message
    assert f"chmod -R go-rwx {root}" in info.value.hint


def test_group_write_is_refused_unless_file_mode_grants_it(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    root.chmod(0o770)
    with pytest.raises(ConfigError, match="writable by other users"):
        LocalStore(root)
    with pytest.raises(ConfigError):
        LocalStore(root, file_mode=0o640)
    LocalStore(root, file_mode=0o660)


def test_a_repository_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory to another user")
    root = tmp_path / "repo"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    with pytest.raises(ConfigError) as info:
        LocalStore(root)
    assert "is owned by" in info.value.message and "chown -R" in info.value.hint


def test_a_legacy_readable_repository_opens_and_verify_reports_it(tmp_path: Path) -> None:
    """What an older vecwal left under umask 022: directories 0755, files 0644."""
    root = tmp_path / "repo"
    store = LocalStore(root)
    for i in range(30):
        store.put(f"segments/ingest/p=00000/{i:020d}.avro", b"x")
    store.put("vecwal.json", b"{}")
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    check_repository_root(root)  # readable by others: opens
    report = verify(Repository(LocalStore(root)), ["ingest"])
    perms = report.permissions
    assert perms is not None and not perms.ok
    assert perms.readable_count == 4 + 31 and len(perms.readable) == 20
    assert perms.readable[0].path == "." and perms.readable[0].mode == "0755"
    assert perms.writable_count == 0 and perms.fix_readable == f"chmod -R go-rwx {root}"
    finding = next(f for f in report.findings if f.object == str(root))
    assert finding.severity == "warning" and "35 files and directories" in finding.problem
    assert f"chmod -R go-rwx {root}" in finding.hint
    as_json = report.to_dict()["permissions"]
    assert as_json["ok"] is False and as_json["readable_count"] == 35
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert as_json["readable"][0] == {"path": ".", "mode": "0755", "owner": me}

    (root / "segments" / "ingest" / "p=00000" / f"{0:020d}.avro").chmod(0o666)
    report = verify(Repository(LocalStore(root)), ["ingest"])
    assert report.permissions is not None and report.permissions.writable_count == 1
    assert not report.ok and any(f.severity == "error" and "written by other users" in f.problem
                                 for f in report.findings)

    subprocess.run(["chmod", "-R", "go-rwx", str(root)], check=True)  # the fix given
    report = verify(Repository(LocalStore(root)), ["ingest"])
    assert report.permissions is not None and report.permissions.ok and report.findings == []


def test_with_a_group_mode_group_access_is_not_exposure(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    LocalStore(root, file_mode=0o640).put("a/b", b"x")
    (root / "a" / "b").chmod(0o660)  # the group may read, not write
    found = scan_exposure(root, 0o640)
    assert found.readable_count == 0 and [e.path for e in found.writable] == ["a/b"]
    assert found.fix_writable == f"chmod -R g-w,o-rwx {root}"


# -- the setting ----------------------------------------------------------------------------


def config(file_mode: str | None = None, env: dict[str, str] | None = None) -> int:
    storage = {"url": "file:///tmp/repo"} | ({"file_mode": file_mode} if file_mode else {})
    c = config_from_mapping({"kafka": {"bootstrap_servers": "b:9092", "topics": ["t"]},
                             "storage": storage}, env or {}, "vecwal.toml")
    return parse_file_mode(c.storage.file_mode)


def test_file_mode_setting() -> None:
    assert config() == 0o600
    assert config("0640") == 0o640 and config("660") == 0o660 and config("0o600") == 0o600
    assert config(env={"VECWAL_STORAGE_FILE_MODE": "0640"}) == 0o640


@pytest.mark.parametrize(("value", "message", "hint"), [
    ("rw-r-----", "not an octal file mode", '"0640"'),
    ("0844", "not an octal file mode", '"0600"'),
    ("0644", "every local user read", "chgrp"),
    ("0604", "every local user read", 'file_mode = "0640"'),
    ("0622", "every local user write", "group"),
    ("0750", "execute bits", "0750"),
    ("0400", "read and write", '"0600"'),
    ("0620", "write files it cannot read", '"0660"'),
])
def test_file_mode_refusals(value: str, message: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(value)
    assert info.value.message.startswith("vecwal.toml: [storage] file_mode")
    assert message in info.value.message and hint in info.value.hint
