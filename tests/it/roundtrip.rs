//! Round trips through the real binary: a tree with every awkward kind of entry (odd names,
//! invalid UTF-8, empty files and directories, a file bigger than a pack, symlinks of every
//! sort, unusual permissions, nanosecond mtimes) comes back identical from each region; a
//! partial restore brings back just what was asked; a non-empty target is refused unless
//! overwriting was asked for.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;

use crate::common::{
    assert_same_tree, capture, write, write_random, EntryMeta, Workspace, XorShift,
};

/// A name that is not valid UTF-8.
fn bad_utf8(prefix: &[u8]) -> PathBuf {
    let mut b = prefix.to_vec();
    b.extend_from_slice(b"\xff\xfe-latin1-\xe9");
    PathBuf::from(OsStr::from_bytes(&b))
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Fill `root` with the awkward tree; with `big`, add a 20 MiB file (more than one 16 MiB
/// pack). Also creates entries the example plan excludes (`*.tmp`, `cache/`).
fn build_odd_tree(root: &Path, big: bool) {
    let mut rng = XorShift::new(7);
    write(&root.join("with space.txt"), b"spaces in the name\n");
    write(&root.join("ünïcödé – ✓.txt"), "unicode name\n".as_bytes());
    write(&root.join("new\nline"), b"a newline in the name\n");
    write(
        &root.join(bad_utf8(b"bad-")),
        b"invalid utf-8 in the name\n",
    );
    write(&root.join("-leading-dash"), b"looks like a flag\n");
    write(&root.join("empty"), b"");
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    write(&root.join("private"), b"owner only\n");
    chmod(&root.join("private"), 0o600);
    write(&root.join("script.sh"), b"#!/bin/sh\necho hi\n");
    chmod(&root.join("script.sh"), 0o755);
    write(&root.join("readonly"), b"read only\n");
    chmod(&root.join("readonly"), 0o444);
    let nested = root.join("nested").join("dir with space");
    write(&nested.join("ünï").join("deep file"), &rng.bytes(3000));
    write(
        &nested.join(bad_utf8(b"dir-")).join("-x"),
        &rng.bytes(70_000),
    );
    write(&nested.join("empty"), b"");
    write(
        &root.join("locked dir").join("inside.txt"),
        b"in a 0555 dir\n",
    );
    std::fs::create_dir_all(root.join("locked dir").join("sub")).unwrap();
    symlink("with space.txt", root.join("rel-link")).unwrap();
    symlink("../../with space.txt", nested.join("up-link")).unwrap();
    symlink("/etc/hostname", root.join("abs-link")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    symlink(
        OsStr::from_bytes(b"odd \xff target"),
        root.join("odd-target"),
    )
    .unwrap();
    if big {
        write_random(&root.join("big.bin"), 20 << 20, &mut rng);
    }
    // Excluded by the example plan: must not come back.
    write(&root.join("skip.tmp"), b"excluded\n");
    write(&nested.join("also.tmp"), b"excluded\n");
    write(&root.join("cache").join("junk"), b"excluded\n");
    // Distinct mtimes with nanoseconds, children before parents (writing into a directory
    // changes its mtime).
    let mut paths: Vec<PathBuf> = capture(root)
        .keys()
        .map(|k| root.join(OsStr::from_bytes(k)))
        .collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in paths.iter().enumerate() {
        let t = FileTime::from_unix_time(1_500_000_000 + 86_400 * i as i64, 123_456_789 + i as u32);
        filetime::set_symlink_file_times(p, t, t).unwrap();
    }
    chmod(&root.join("locked dir"), 0o555);
}

fn is_excluded(rel: &[u8]) -> bool {
    let s = String::from_utf8_lossy(rel);
    s.ends_with(".tmp") || s == "cache" || s.starts_with("cache/")
}

/// What a full restore must produce: the source minus the plan's excludes.
fn expected_tree(root: &Path) -> BTreeMap<Vec<u8>, EntryMeta> {
    let mut t = capture(root);
    let before = t.len();
    t.retain(|k, _| !is_excluded(k));
    assert_eq!(before - t.len(), 4, "the fixture has 4 excluded entries");
    t
}

/// Read-only directories inside a temp dir would survive its cleanup for a non-root user.
fn unlock(root: &Path) {
    for (k, m) in capture(root) {
        if m.kind == crate::common::EntryKind::Dir {
            chmod(&root.join(OsStr::from_bytes(&k)), 0o755);
        }
    }
}

#[test]
fn odd_tree_round_trips_from_each_region() {
    let ws = Workspace::new();
    let data = ws.path("data");
    build_odd_tree(&data, true);
    let expected = expected_tree(&data);
    ws.init();
    let b = ws.json(&["backup", "app-data"]);
    assert_eq!(b["degraded"], false, "{b}");
    assert!(
        b["stats"]["packs"].as_u64().unwrap() >= 2,
        "20 MiB needs two 16 MiB packs: {b}"
    );

    for region in ["us-west-2", "us-east-2"] {
        let to = ws.path(&format!("restore-{region}"));
        let r = ws.json(&[
            "restore",
            "app-data",
            "--from",
            region,
            "--to",
            to.to_str().unwrap(),
        ]);
        assert_eq!(r["fallbacks"], serde_json::json!([]), "{r}");
        let regions: Vec<&String> = r["objects_per_region"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(
            regions,
            [region],
            "every object must come from {region}: {r}"
        );
        assert_same_tree(&expected, &capture(&to), &format!("restore from {region}"));
        unlock(&to);
    }
    unlock(&data);
}

#[test]
fn include_restores_one_subpath() {
    let ws = Workspace::new();
    let data = ws.path("data");
    build_odd_tree(&data, false);
    let source = expected_tree(&data);
    ws.init();
    ws.ok(&["backup", "app-data"]);

    // A directory, whose subtree holds a name that is not UTF-8.
    let to = ws.path("partial");
    let inc = "nested/dir with space";
    ws.ok(&[
        "restore",
        "app-data",
        "--include",
        inc,
        "--to",
        to.to_str().unwrap(),
    ]);
    let got = capture(&to);
    let mut want: BTreeMap<Vec<u8>, EntryMeta> = source
        .iter()
        .filter(|(k, _)| k.starts_with(inc.as_bytes()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(want.len() >= 6, "fixture: {want:?}");
    // The parent is created to hold the subpath; only its type matters.
    let parent = got.get(&b"nested"[..]).expect("parent of the include path");
    assert_eq!(parent.kind, crate::common::EntryKind::Dir);
    want.insert(b"nested".to_vec(), parent.clone());
    assert_same_tree(&want, &got, "--include a directory");

    // A single file: nothing else comes back.
    let to = ws.path("one-file");
    let inc = "ünïcödé – ✓.txt";
    ws.ok(&[
        "restore",
        "app-data",
        "--include",
        inc,
        "--to",
        to.to_str().unwrap(),
    ]);
    let got = capture(&to);
    let keys: Vec<&[u8]> = got.keys().map(|k| k.as_slice()).collect();
    assert_eq!(keys, [inc.as_bytes()], "only the included file is restored");
    assert_eq!(got[inc.as_bytes()], source[inc.as_bytes()]);

    // A path the snapshot does not have is an error, and restores nothing.
    let to = ws.path("nothing");
    let msg = ws.fails(
        &[
            "restore",
            "app-data",
            "--include",
            "no/such/path",
            "--to",
            to.to_str().unwrap(),
        ],
        1,
    );
    assert!(msg.contains("no/such/path"), "{msg}");
    assert!(!to.exists() || capture(&to).is_empty(), "nothing restored");
    unlock(&data);
}

/// A non-UTF-8 `--include` reaches the snapshot as raw bytes.
#[test]
fn include_accepts_a_non_utf8_path() {
    let ws = Workspace::new();
    let data = ws.path("data");
    build_odd_tree(&data, false);
    let source = expected_tree(&data);
    ws.init();
    ws.ok(&["backup", "app-data"]);

    // A single file with a non-UTF-8 name, given as raw bytes on the command line.
    let to = ws.path("one-file");
    let mut inc = b"nested/dir with space/".to_vec();
    inc.extend_from_slice(bad_utf8(b"dir-").as_os_str().as_bytes());
    inc.extend_from_slice(b"/-x");
    let out = ws
        .cmd(&[
            "restore",
            "app-data",
            "--to",
            to.to_str().unwrap(),
            "--include",
        ])
        .arg(OsStr::from_bytes(&inc))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = capture(&to);
    let files: Vec<&Vec<u8>> = got
        .iter()
        .filter(|(_, m)| m.kind != crate::common::EntryKind::Dir)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(files, [&inc], "only the included file is restored");
    assert_eq!(got[&inc], source[&inc]);

    unlock(&data);
}

#[test]
fn restore_refuses_non_empty_target_without_overwrite() {
    let ws = Workspace::new();
    let data = ws.path("data");
    build_odd_tree(&data, false);
    let expected = expected_tree(&data);
    ws.init();
    ws.ok(&["backup", "app-data"]);

    let to = ws.path("busy target");
    write(&to.join("keep.txt"), b"not in the snapshot\n");
    write(
        &to.join("with space.txt"),
        b"stale content that must be replaced\n",
    );
    let before = capture(&to);
    let out = ws.run(&["restore", "app-data", "--to", to.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "restore into a non-empty dir must fail"
    );
    assert!(
        stderr.contains(to.to_str().unwrap()),
        "message names the target: {stderr}"
    );
    assert!(
        stderr.contains("--overwrite"),
        "message says how to proceed: {stderr}"
    );
    assert_eq!(capture(&to), before, "a refused restore touches nothing");

    ws.ok(&[
        "restore",
        "app-data",
        "--overwrite",
        "--to",
        to.to_str().unwrap(),
    ]);
    let mut got = capture(&to);
    let keep = got
        .remove(&b"keep.txt"[..])
        .expect("entries not in the snapshot are kept");
    assert_eq!(keep, before[&b"keep.txt"[..]]);
    assert_same_tree(&expected, &got, "restore --overwrite");
    unlock(&data);
    unlock(&to);
}

/// `latest` is the last snapshot taken, even when several are taken within one second
/// (a retry, or a manual run right after the scheduled one).
#[test]
fn latest_is_the_last_backup_even_within_one_second() {
    let ws = Workspace::new();
    ws.init();
    for round in 0..8 {
        write(
            &ws.path("data/v.txt"),
            format!("version {round}\n").as_bytes(),
        );
        let b = ws.json(&["backup", "app-data"]);
        let to = ws.path(&format!("restore-{round}"));
        let r = ws.json(&["restore", "app-data", "--to", to.to_str().unwrap()]);
        assert_eq!(
            std::fs::read_to_string(to.join("v.txt")).unwrap(),
            format!("version {round}\n"),
            "restore of `latest` after backup {} (time {}) restored snapshot {} (time {})",
            b["snapshot"],
            b["time"],
            r["snapshot"],
            r["snapshot_time"]
        );
    }
}
