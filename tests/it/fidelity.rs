//! Restores that fail do not look complete: into a full disk, the error names the file and no
//! file is left under its final name half-written (nor any `.lifeboat-partial-…`);
//! `--no-setuid` drops setuid/setgid bits.

use std::os::unix::fs::PermissionsExt;

use crate::common::{write, write_random, Workspace, XorShift};

/// Unmounts the tmpfs when the test ends, whatever happens.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn restore_onto_a_full_disk_names_the_file_and_leaves_nothing_that_looks_complete() {
    let ws = Workspace::new();
    ws.init();
    write(&ws.path("data/a-small.txt"), b"small\n");
    write_random(&ws.path("data/big.bin"), 12 << 20, &mut XorShift::new(9));
    ws.ok(&["backup", "app-data"]);
    let mnt = ws.path("small-disk");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs (needs root)");
    let _guard = Tmpfs(mnt.clone());
    let to = mnt.join("r");
    let out = ws.fails(&["restore", "app-data", "--to", to.to_str().unwrap()], 1);
    assert!(out.contains("No space left on device"), "{out}");
    assert!(
        out.contains(&to.join("big.bin").display().to_string()),
        "{out}"
    );
    assert!(
        !to.join("big.bin").exists(),
        "a half-written big.bin looks complete"
    );
    let left: Vec<_> = std::fs::read_dir(&to)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| !n.starts_with(".lifeboat-partial-")),
        "partial files left: {left:?}"
    );
}

#[test]
fn no_setuid_drops_setuid_and_setgid() {
    let ws = Workspace::new();
    ws.init();
    let f = ws.path("data/tool");
    write(&f, b"#!/bin/sh\n");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o6755)).unwrap();
    ws.ok(&["backup", "app-data"]);
    let kept = ws.path("kept");
    ws.ok(&["restore", "app-data", "--to", kept.to_str().unwrap()]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&kept.join("tool")), 0o6755);
    let dropped = ws.path("dropped");
    ws.ok(&[
        "restore",
        "app-data",
        "--no-setuid",
        "--to",
        dropped.to_str().unwrap(),
    ]);
    assert_eq!(mode(&dropped.join("tool")), 0o755);
}
