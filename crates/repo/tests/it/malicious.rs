//! A malicious (or corrupt) repository must not steer a restore outside its target. Each
//! snapshot here is written through the real writer with a tree no honest source produces —
//! `..`, `a/b`, `/etc`, empty and NUL names, hex-encoded escapes, a symlink and a directory
//! sharing a name — and the restore must fail before writing anything, leaving a sentinel
//! directory next to the target untouched. Separately, symlinks already planted in a target
//! are replaced, never followed, when overwriting.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use lifeboat_repo::tree::{Node, Tree};
use lifeboat_repo::writer::BackupWriter;
use lifeboat_repo::{Id, Repository, Result};

use crate::fixture::{backup, dir_node, file_node, restore, symlink_node, Chunking, TestRepo};

/// Entries of a directory, by name (lossy), sorted.
fn listing(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(p) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// A crafted root tree, given the sentinel directory an attack would like to write into.
type Craft = fn(&mut BackupWriter, Chunking, &Path) -> Result<Vec<Node>>;

fn file(w: &mut BackupWriter, c: Chunking, name: &[u8]) -> Node {
    file_node(w, name, b"attacker-controlled content\n", c)
}

fn named_hex(mut n: Node, raw: &[u8]) -> Node {
    n.name = None;
    n.name_hex = Some(hex::encode(raw));
    n
}

const CASES: &[(&str, Craft)] = &[
    ("dot-dot file", |w, c, _| Ok(vec![file(w, c, b"..")])),
    ("slash in name", |w, c, _| Ok(vec![file(w, c, b"a/b")])),
    ("absolute name", |w, c, _| Ok(vec![file(w, c, b"/etc")])),
    ("empty name", |w, c, _| Ok(vec![file(w, c, b"")])),
    ("dot dir", |w, c, _| {
        let inner = Tree {
            nodes: vec![file(w, c, b"pwned")],
        };
        Ok(vec![dir_node(w, b".", inner)?])
    }),
    ("NUL in name", |w, c, _| Ok(vec![file(w, c, b"a\0b")])),
    ("hex-encoded ../sentinel/pwned", |w, c, s| {
        let mut raw = b"../".to_vec();
        raw.extend_from_slice(s.file_name().unwrap().as_bytes());
        raw.extend_from_slice(b"/pwned");
        let n = file(w, c, b"innocent");
        Ok(vec![named_hex(n, &raw)])
    }),
    ("dot-dot dir deep in the tree", |w, c, _| {
        let evil = Tree {
            nodes: vec![file(w, c, b"pwned")],
        };
        let inner = Tree {
            nodes: vec![file(w, c, b"fine"), dir_node(w, b"..", evil)?],
        };
        Ok(vec![file(w, c, b"top"), dir_node(w, b"ok", inner)?])
    }),
    ("symlink and dir both named x", |w, c, s| {
        let inner = Tree {
            nodes: vec![file(w, c, b"pwned")],
        };
        Ok(vec![
            symlink_node(b"x", s.as_os_str().as_bytes()),
            dir_node(w, b"x", inner)?,
        ])
    }),
    ("two files both named y", |w, c, _| {
        Ok(vec![file(w, c, b"y"), file_node(w, b"y", b"other\n", c)])
    }),
];

/// Write a snapshot whose root holds `nodes`, through `finish` (so a manifest exists), and
/// return the root as read back from the listed manifest.
async fn crafted_snapshot(repo: &Arc<Repository>, craft: Craft, sentinel: &Path) -> (Id, Id) {
    let c = Chunking::of(repo);
    let s = sentinel.to_path_buf();
    let out = backup(repo, &[0, 1], move |w| {
        let mut root = Tree {
            nodes: craft(w, c, &s)?,
        };
        w.add_tree(&mut root)
    })
    .await
    .expect("the writer stores whatever tree it is given");
    (out.snapshot, out.manifest.root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_tree_names_never_escape_the_target() {
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    for (what, craft) in CASES {
        let place = tempfile::tempdir().unwrap();
        let sentinel = place.path().join("sentinel");
        std::fs::create_dir(&sentinel).unwrap();
        let target = place.path().join("target");
        let (snap, root) = crafted_snapshot(&repo, *craft, &sentinel).await;

        // Read the manifest back the way a restore host would find it.
        let reader = t.open().await;
        let listed = reader
            .list_snapshots()
            .await
            .expect("list")
            .into_iter()
            .find(|s| s.id == snap)
            .expect("the crafted snapshot is listed");
        assert_eq!(listed.manifest.root, root);

        let res = restore(&reader, listed.manifest.root, &target, false).await;
        assert!(
            res.is_err(),
            "{what}: restore must refuse the tree: {res:?}"
        );
        let msg = res.unwrap_err().to_string();
        assert!(
            msg.contains("refusing") || msg.contains("escape"),
            "{what}: the error says why: {msg}"
        );
        assert_eq!(listing(&sentinel), Vec::<String>::new(), "{what}: sentinel");
        assert_eq!(
            listing(place.path()),
            ["sentinel", "target"],
            "{what}: nothing created next to the target"
        );
        assert_eq!(
            listing(&target),
            Vec::<String>::new(),
            "{what}: a refused tree is refused before anything is written"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlinks_in_the_target_are_replaced_not_followed() {
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    let c = Chunking::of(&repo);
    let place = tempfile::tempdir().unwrap();
    let sentinel = place.path().join("sentinel");
    std::fs::create_dir(&sentinel).unwrap();
    let target = place.path().join("target");

    // Snapshot A: symlinks pointing into the sentinel, named like B's directory and file.
    let s = sentinel.clone();
    let a = backup(&repo, &[0, 1], move |w| {
        let mut root = Tree {
            nodes: vec![
                symlink_node(b"x", s.as_os_str().as_bytes()),
                symlink_node(b"f", s.join("f").as_os_str().as_bytes()),
            ],
        };
        w.add_tree(&mut root)
    })
    .await
    .unwrap();
    // Snapshot B: a directory `x` with a file in it, and a file `f`.
    let b = backup(&repo, &[0, 1], move |w| {
        let inner = Tree {
            nodes: vec![file_node(w, b"pwned", b"must stay in the target\n", c)],
        };
        let mut root = Tree {
            nodes: vec![
                dir_node(w, b"x", inner)?,
                file_node(w, b"f", b"also in the target\n", c),
            ],
        };
        w.add_tree(&mut root)
    })
    .await
    .unwrap();

    restore(&repo, a.manifest.root, &target, false)
        .await
        .expect("restore A");
    assert!(std::fs::symlink_metadata(target.join("x"))
        .unwrap()
        .file_type()
        .is_symlink());

    let refused = restore(&repo, b.manifest.root, &target, false).await;
    assert!(
        refused.is_err(),
        "B into a non-empty target without overwrite"
    );

    restore(&repo, b.manifest.root, &target, true)
        .await
        .expect("restore B over A");
    assert_eq!(
        listing(&sentinel),
        Vec::<String>::new(),
        "sentinel untouched"
    );
    let x = std::fs::symlink_metadata(target.join("x")).unwrap();
    assert!(x.is_dir(), "x is now a real directory");
    let f = std::fs::symlink_metadata(target.join("f")).unwrap();
    assert!(f.is_file(), "f is now a regular file");
    assert_eq!(
        std::fs::read(target.join("x").join("pwned")).unwrap(),
        b"must stay in the target\n"
    );
    assert_eq!(
        std::fs::read(target.join("f")).unwrap(),
        b"also in the target\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_tree_with_odd_but_safe_names_restores() {
    // The control: the same machinery accepts names that are odd but safe, so the refusals
    // above are about the names, not about crafted trees as such.
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    let c = Chunking::of(&repo);
    let out = backup(&repo, &[0, 1], move |w| {
        let inner = Tree {
            nodes: vec![file_node(w, b"...", b"three dots\n", c)],
        };
        let mut root = Tree {
            nodes: vec![
                file_node(w, b"-rf", b"dash\n", c),
                file_node(w, b"..hidden", b"dots\n", c),
                file_node(w, b"bad \xff utf8", b"bytes\n", c),
                dir_node(w, b"new\nline", inner)?,
                symlink_node(b"up", b"../outside"),
            ],
        };
        w.add_tree(&mut root)
    })
    .await
    .unwrap();
    let place = tempfile::tempdir().unwrap();
    let target = place.path().join("target");
    let report = restore(&repo, out.manifest.root, &target, false)
        .await
        .expect("restore");
    assert_eq!((report.files, report.dirs, report.symlinks), (4, 1, 1));
    assert_eq!(
        std::fs::read(target.join("new\nline").join("...")).unwrap(),
        b"three dots\n"
    );
    let odd = target.join(OsStr::from_bytes(b"bad \xff utf8"));
    assert_eq!(std::fs::read(odd).unwrap(), b"bytes\n");
    // A symlink pointing outside is restored as a link; it is not followed.
    assert_eq!(
        std::fs::read_link(target.join("up")).unwrap(),
        Path::new("../outside")
    );
    assert_eq!(listing(place.path()), ["target"]);
}
