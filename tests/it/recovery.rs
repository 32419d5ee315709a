//! docs/FORMAT.md promises recovery without lifeboat: run docs/recover.py (Python, Debian's
//! `age` and `zstd`) on a region lifeboat wrote and compare with the source.

use std::process::Command;

use crate::common::{write, Workspace};

/// Run docs/recover.py on the workspace's us-east-2 region into `out`, requiring success.
pub fn recover_py(ws: &Workspace, out: &std::path::Path) {
    recover_py_snapshot(ws, out, None)
}

/// [`recover_py`] of snapshot `snapshot` (an id prefix), or the newest.
pub fn recover_py_snapshot(ws: &Workspace, out: &std::path::Path, snapshot: Option<&str>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/recover.py");
    // Decrypted packs must not outlive the script, in TMPDIR or next to the target.
    let tmp = ws.path("recover-tmpdir");
    std::fs::create_dir_all(&tmp).unwrap();
    let res = Command::new("python3")
        .env("TMPDIR", &tmp)
        .arg(script)
        .arg(ws.path("us-east-2"))
        .arg(ws.path("keys/identity.txt"))
        .arg(out)
        .args(snapshot)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "recover.py failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let parent = out.parent().unwrap();
    for dir in [tmp.as_path(), parent] {
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("lifeboat-recover-"))
            .collect();
        assert!(
            left.is_empty(),
            "recover.py left decrypted packs in {}: {left:?}",
            dir.display()
        );
    }
}

pub fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success());
    assert!(
        found.unwrap_or(false),
        "`{tool}` is not installed: run `make deps` (the README's `make test` does)"
    );
}

#[test]
fn recover_py_restores_a_snapshot_with_age_and_zstd_only() {
    for t in ["age", "zstd", "python3"] {
        require(t);
    }
    let ws = Workspace::new();
    write(&ws.path("data/a/hello.txt"), b"hello\n");
    write(&ws.path("data/a/empty"), b"");
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    write(&ws.path("data/big.bin"), &big);
    write(
        &ws.path("data/sp ace/ünï.txt"),
        "text\n".repeat(1000).as_bytes(),
    );
    std::os::unix::fs::symlink("a/hello.txt", ws.path("data/link")).unwrap();
    ws.ok(&["init"]);
    ws.ok(&["backup", "app-data"]);

    let out = ws.path("recovered");
    recover_py(&ws, &out);
    assert_eq!(std::fs::read(out.join("big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(out.join("a/hello.txt")).unwrap(), b"hello\n");
    assert_eq!(std::fs::read(out.join("a/empty")).unwrap(), b"");
    assert_eq!(
        std::fs::read(out.join("sp ace/ünï.txt")).unwrap(),
        "text\n".repeat(1000).as_bytes()
    );
    assert_eq!(
        std::fs::read_link(out.join("link")).unwrap(),
        std::path::Path::new("a/hello.txt")
    );
}
