//! Every file attribute round-trips, as tools that are not lifeboat's code see it:
//! hardlinks (`stat` inode groups and link counts), a 1 GiB sparse file (`du`, `cmp`),
//! extended attributes (`getfattr`: user.*, trusted.*, security.capability), POSIX ACLs
//! (`getfacl`), a FIFO and device nodes (`stat` type and rdev), owners by id, and the times
//! of files, directories and symlinks. The same tree restored by docs/recover.py (Python's
//! standard library only) comes back the same. `--no-xattrs` leaves the attributes out.
//! The tests run as root (device nodes, trusted.*, owners need it); a restore as `nobody`
//! skips what it may not set and says so once per kind.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use crate::common::{write, Workspace, XorShift};
use crate::recovery::{recover_py, require};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run a tool in `dir`; stdout, asserting success.
fn sh(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", args[0]));
    assert!(
        out.status.success(),
        "{args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every path under `root`, relative (`./…`), sorted, and those that are not symlinks.
fn paths(root: &Path) -> (Vec<String>, Vec<String>) {
    let all = sh(root, &["find", ".", "-mindepth", "1"]);
    let mut all: Vec<String> = all.lines().map(String::from).collect();
    all.sort();
    let links = sh(root, &["find", ".", "-mindepth", "1", "-type", "l"]);
    let links: Vec<&str> = links.lines().collect();
    let plain = all
        .iter()
        .filter(|p| !links.contains(&p.as_str()))
        .cloned()
        .collect();
    (all, plain)
}

/// What the external tools say about the tree under `root`: per path its type, mode,
/// owner, link count, device numbers, mtime (ns) and size; which paths share an inode; all
/// extended attributes (hex); the ACLs.
fn describe(root: &Path) -> (String, String, String, String) {
    let (all, plain) = paths(root);
    let mut stat = vec!["stat", "-c", "%n|%F|%a|%u:%g|%h|%t:%T|%y|%s"];
    stat.extend(all.iter().map(String::as_str));
    let stats = sh(root, &stat);
    // Inode groups: the paths of each inode, joined, sorted (inode numbers themselves differ).
    let mut ino = vec!["stat", "-c", "%i %n"];
    ino.extend(all.iter().map(String::as_str));
    let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for l in sh(root, &ino).lines() {
        let (i, n) = l.split_once(' ').unwrap();
        groups.entry(i.to_string()).or_default().push(n.to_string());
    }
    let mut groups: Vec<String> = groups.into_values().map(|g| g.join(" = ")).collect();
    groups.sort();
    let mut fattr = vec!["getfattr", "-h", "-d", "-m", "-", "-e", "hex", "--"];
    fattr.extend(all.iter().map(String::as_str));
    let xattrs = sh(root, &fattr);
    let mut facl = vec!["getfacl", "-P", "-p", "-n", "--"];
    facl.extend(plain.iter().map(String::as_str));
    let acls = sh(root, &facl);
    (stats, groups.join("\n"), xattrs, acls)
}

fn assert_same(source: &Path, restored: &Path, what: &str) {
    let (s, r) = (describe(source), describe(restored));
    assert_eq!(s.0, r.0, "{what}: stat differs");
    assert_eq!(s.1, r.1, "{what}: hardlink groups differ");
    assert_eq!(s.2, r.2, "{what}: getfattr differs");
    assert_eq!(s.3, r.3, "{what}: getfacl differs");
}

/// Allocated KiB of a file, per `du`.
fn du_kib(p: &Path) -> u64 {
    let out = sh(Path::new("/"), &["du", "-k", p.to_str().unwrap()]);
    out.split_whitespace().next().unwrap().parse().unwrap()
}

fn run(cmd: &[&str]) {
    let st = Command::new(cmd[0]).args(&cmd[1..]).status().unwrap();
    assert!(st.success(), "{cmd:?}");
}

/// The source tree: every kind of entry and attribute lifeboat restores.
fn build(ws: &Workspace) -> std::os::unix::net::UnixListener {
    let d = |p: &str| ws.path(&format!("data/{p}"));
    let s = |p: &str| d(p).to_str().unwrap().to_string();
    let mut rng = XorShift::new(14);
    write(&d("a/file.txt"), b"hello\n");
    std::fs::create_dir_all(d("b")).unwrap();
    // Two hardlink groups, one across directories with three names.
    std::fs::hard_link(d("a/file.txt"), d("b/link.txt")).unwrap();
    std::fs::hard_link(d("a/file.txt"), d("a/second")).unwrap();
    write(&d("big"), &rng.bytes(3 << 20));
    std::fs::hard_link(d("big"), d("b/big-too")).unwrap();
    // A 1 GiB sparse file with three written blocks, one at the very end.
    let sparse = std::fs::File::create(d("sparse.img")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    for at in [0u64, 512 << 20, (1 << 30) - 4096] {
        sparse.write_all_at(&rng.bytes(4096), at).unwrap();
    }
    drop(sparse);
    // Extended attributes: user.*, trusted.* (root), on a file and a directory.
    run(&[
        "setfattr",
        "-n",
        "user.color",
        "-v",
        "blue",
        &s("a/file.txt"),
    ]);
    run(&["setfattr", "-n", "user.bin", "-v", "0x00ff10", &s("a")]);
    run(&[
        "setfattr",
        "-n",
        "trusted.secret",
        "-v",
        "root-only",
        &s("big"),
    ]);
    // POSIX ACLs: an access ACL on a file, a default ACL on a directory.
    write(&d("acl.txt"), b"acl\n");
    run(&["setfacl", "-m", "u:1234:rwx,g:4321:r", &s("acl.txt")]);
    run(&["setfacl", "-d", "-m", "g:5678:rx", &s("b")]);
    // A file capability.
    write(&d("tool"), b"#!/bin/sh\n");
    if have("setcap") {
        run(&["setcap", "cap_net_bind_service=+ep", &s("tool")]);
    }
    // A FIFO, a character and a block device node.
    run(&["mkfifo", "-m", "640", &s("pipe")]);
    run(&["mknod", "-m", "620", &s("null"), "c", "1", "3"]);
    run(&["mknod", "-m", "600", &s("loop9"), "b", "7", "9"]);
    // Owners by id (ids without names too), on a file, a FIFO and a symlink.
    std::os::unix::fs::chown(d("a/file.txt"), Some(4321), Some(8765)).unwrap();
    std::os::unix::fs::chown(d("pipe"), Some(1), Some(1)).unwrap();
    std::os::unix::fs::symlink("a/file.txt", d("lnk")).unwrap();
    std::os::unix::fs::lchown(d("lnk"), Some(2), Some(3)).unwrap();
    // A socket: skipped with a note.
    let sock = std::os::unix::net::UnixListener::bind(d("sock")).unwrap();
    // Times, directories last (after their contents are made).
    for (p, t) in [
        ("lnk", "2001-02-03 04:05:06.123456789"),
        ("pipe", "2002-01-01 00:00:01.5"),
        ("null", "2003-01-01 00:00:00"),
        ("a", "2004-04-04 04:04:04.000000404"),
        ("b", "2005-05-05 05:05:05.5"),
    ] {
        run(&["touch", "-h", "-d", t, &s(p)]);
    }
    sock
}

#[test]
fn every_attribute_round_trips_as_getfattr_getfacl_stat_and_du_see_it() {
    for t in [
        "getfattr", "setfattr", "getfacl", "setfacl", "stat", "du", "mknod",
    ] {
        require(t);
    }
    let ws = Workspace::new();
    ws.init();
    let _sock = build(&ws);
    let out = ws.cmd(&["backup", "app-data", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("sock: a socket; skipped"), "{report}");
    std::fs::remove_file(ws.path("data/sock")).unwrap();
    // The sparse file was read as its data (12 KiB), not as 1 GiB; the second paths of
    // hardlinked files were not read again (3 MiB once, not twice).
    let read = report["stats"]["bytes_read"].as_u64().unwrap();
    assert!(
        (3 << 20..4 << 20).contains(&read),
        "{read} bytes read: {report}"
    );

    // The comparison below is not vacuous: the tools see every attribute in the source.
    let (stats, groups, xattrs, acls) = describe(&ws.path("data"));
    for want in [
        "fifo",
        "character special file|620|0:0|1|1:3",
        "block special file",
        "4321:8765|3",
    ] {
        assert!(stats.contains(want), "{want} in {stats}");
    }
    assert!(
        groups.contains("./a/file.txt = ./a/second = ./b/link.txt"),
        "{groups}"
    );
    for want in [
        "user.color",
        "user.bin=0x00ff10",
        "trusted.secret",
        "system.posix_acl_access",
        "system.posix_acl_default",
    ] {
        assert!(xattrs.contains(want), "{want} in {xattrs}");
    }
    assert!(
        acls.contains("user:1234:rwx") && acls.contains("default:group:5678:r-x"),
        "{acls}"
    );

    let to = ws.path("restored");
    let out = ws.ok(&["restore", "app-data", "--to", to.to_str().unwrap()]);
    assert!(out.contains("3 are hard links"), "{out}");
    assert_same(&ws.path("data"), &to, "lifeboat restore");
    assert!(!to.join("sock").exists());
    let (src, got) = (ws.path("data/sparse.img"), to.join("sparse.img"));
    assert!(
        du_kib(&src) < 1024,
        "source sparse file: {} KiB",
        du_kib(&src)
    );
    assert!(
        du_kib(&got) <= du_kib(&src) + 64,
        "restored sparse file allocates {} KiB, its data needs {} KiB",
        du_kib(&got),
        du_kib(&src)
    );
    sh(
        Path::new("/"),
        &["cmp", src.to_str().unwrap(), got.to_str().unwrap()],
    );
    if have("getcap") {
        let cap = sh(&to, &["getcap", "tool"]);
        assert!(cap.contains("cap_net_bind_service"), "{cap}");
    }

    // docs/recover.py, with Python's standard library only, restores the same.
    let rec = ws.path("recovered");
    recover_py(&ws, &rec);
    assert_same(&ws.path("data"), &rec, "recover.py");
    assert!(du_kib(&rec.join("sparse.img")) <= du_kib(&src) + 64);
}

/// A restore in batches of two entries (`LIFEBOAT_RESTORE_BATCH=2`): hardlink groups span
/// batches, directories finish batches after their files, a file spans several packs that
/// arrive out of order (hashed while written) — and every byte and attribute is the same as
/// the source's and as a restore in one batch. Packs shared by batches are fetched by each.
#[test]
fn a_restore_in_many_small_batches_round_trips_every_byte_and_attribute() {
    for t in [
        "getfattr", "setfattr", "getfacl", "setfacl", "stat", "du", "mknod", "cmp",
    ] {
        require(t);
    }
    let ws = Workspace::new();
    ws.init();
    let _sock = build(&ws);
    let mut rng = XorShift::new(15);
    for d in 0..4 {
        for f in 0..5 {
            let len = (rng.next_u64() % 5000) as usize;
            write(&ws.path(&format!("data/many/d{d}/f{f}")), &rng.bytes(len));
        }
    }
    // More than one pack's worth in one file (packs of the example config are ≤ 16 MiB).
    write(&ws.path("data/many/large.bin"), &rng.bytes(40 << 20));
    for (p, t) in [
        ("many/d1", "2006-06-06 06:06:06"),
        ("many", "2007-07-07 07:07:07"),
    ] {
        run(&[
            "touch",
            "-d",
            t,
            ws.path(&format!("data/{p}")).to_str().unwrap(),
        ]);
    }
    ws.ok(&["backup", "app-data"]);
    std::fs::remove_file(ws.path("data/sock")).unwrap();

    let restore = |to: &str, batch: Option<&str>| -> serde_json::Value {
        let to = ws.path(to);
        let mut cmd = ws.cmd(&[
            "restore",
            "app-data",
            "--json",
            "--to",
            to.to_str().unwrap(),
        ]);
        if let Some(b) = batch {
            cmd.env("LIFEBOAT_RESTORE_BATCH", b);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let small = restore("small", Some("2"));
    let whole = restore("whole", None);
    assert_same(
        &ws.path("data"),
        &ws.path("small"),
        "restore in batches of 2",
    );
    assert_same(
        &ws.path("whole"),
        &ws.path("small"),
        "one batch vs batches of 2",
    );
    let files = sh(&ws.path("data"), &["find", ".", "-type", "f"]);
    for f in files.lines() {
        let (a, b) = (ws.path("data").join(f), ws.path("small").join(f));
        sh(
            Path::new("/"),
            &["cmp", a.to_str().unwrap(), b.to_str().unwrap()],
        );
    }
    let (s, w) = (&small["report"], &whole["report"]);
    assert_eq!(s["files"], w["files"], "{s} vs {w}");
    assert_eq!(s["hardlinks"], 3, "{s}");
    assert_eq!(s["verified_files"], w["verified_files"], "{s} vs {w}");
    assert!(
        s["packs"].as_u64().unwrap() > w["packs"].as_u64().unwrap(),
        "batches of 2 fetch shared packs once per batch: {s} vs {w}"
    );
}

#[test]
fn no_xattrs_leaves_extended_attributes_and_acls_out() {
    for t in ["getfattr", "setfattr", "setfacl"] {
        require(t);
    }
    let ws = Workspace::new();
    ws.init();
    let f = ws.path("data/f");
    write(&f, b"x");
    run(&["setfattr", "-n", "user.k", "-v", "v", f.to_str().unwrap()]);
    run(&[
        "setfattr",
        "-n",
        "trusted.k",
        "-v",
        "v",
        f.to_str().unwrap(),
    ]);
    run(&["setfacl", "-m", "u:1234:r", f.to_str().unwrap()]);
    ws.ok(&["backup", "app-data"]);
    let with = ws.path("with");
    ws.ok(&["restore", "app-data", "--to", with.to_str().unwrap()]);
    let x = sh(&with, &["getfattr", "-d", "-m", "-", "f"]);
    for k in ["user.k", "trusted.k", "system.posix_acl_access"] {
        assert!(x.contains(k), "{k} restored by default: {x}");
    }
    let without = ws.path("without");
    ws.ok(&[
        "restore",
        "app-data",
        "--no-xattrs",
        "--to",
        without.to_str().unwrap(),
    ]);
    let x = sh(&without, &["getfattr", "-d", "-m", "-", "f"]);
    assert!(x.trim().is_empty(), "--no-xattrs restored: {x}");
    assert_eq!(std::fs::read(without.join("f")).unwrap(), b"x");
}

#[test]
fn a_restore_as_non_root_skips_what_it_cannot_set_and_says_so_once() {
    for t in ["setfattr", "getfattr", "setpriv", "mknod"] {
        require(t);
    }
    let ws = Workspace::new();
    ws.init();
    for f in ["f1", "f2"] {
        let p = ws.path(&format!("data/{f}"));
        write(&p, b"x");
        run(&[
            "setfattr",
            "-n",
            "trusted.k",
            "-v",
            "v",
            p.to_str().unwrap(),
        ]);
        run(&[
            "setfattr",
            "-n",
            "user.ok",
            "-v",
            "yes",
            p.to_str().unwrap(),
        ]);
        std::os::unix::fs::chown(&p, Some(4321), Some(4321)).unwrap();
    }
    run(&[
        "mknod",
        ws.path("data/null").to_str().unwrap(),
        "c",
        "1",
        "3",
    ]);
    ws.ok(&["backup", "app-data"]);
    // A bare-host restore as `nobody`: it may read the region (a test shortcut) and owns
    // its identity and its target.
    run(&["chmod", "-R", "a+rX", ws.dir.path().to_str().unwrap()]);
    let home = ws.path("nobody");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let identity = home.join("identity.txt");
    std::fs::copy(ws.path("keys/identity.txt"), &identity).unwrap();
    std::os::unix::fs::chown(&identity, Some(65534), Some(65534)).unwrap();
    run(&["chmod", "600", identity.to_str().unwrap()]);
    let region = format!("us-east-2=local:{}", ws.path("us-east-2").display());
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(crate::common::bin())
        .args(["--region", &region, "--identity"])
        .arg(&identity)
        .args(["restore", "app-data", "--to", "out"])
        .current_dir(&home)
        .env("HOME", &home)
        .env_remove("LIFEBOAT_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let said = |what: &str| err.lines().filter(|l| l.contains(what)).count();
    assert_eq!(said("2 extended attributes not restored"), 1, "{err}");
    assert_eq!(said("1 device nodes not restored"), 1, "{err}");
    assert_eq!(
        said("2 entries keep the restoring user as owner"),
        1,
        "{err}"
    );
    assert_eq!(err.matches("trusted.k").count(), 0, "said per file: {err}");
    let to = home.join("out");
    assert!(!to.join("null").exists());
    let x = sh(&to, &["getfattr", "-d", "f1", "f2"]);
    assert_eq!(x.matches("user.ok=\"yes\"").count(), 2, "{x}");
}
