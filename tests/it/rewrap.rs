//! `keys rewrap` through the real binary: after a rotation and a backup that deduplicates
//! into old-epoch packs, a rewrap lets the new identity alone restore the old and the new
//! snapshot, with object names, index files (so chunk ids) unchanged; rewrapped files open
//! with Debian's `age -d` and the new key only; `keys list` counts what depends on each
//! epoch; a run interrupted by an unavailable region finishes when run again; Object Lock
//! keeps the old versions (listed with their retain-until); rotate and rewrap are audited.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{assert_same_tree, capture, write, Workspace};

/// Object name → bytes, for every object of a region under `prefix`.
fn stored(ws: &Workspace, region: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    ws.objects(region, prefix)
        .into_iter()
        .map(|p| (ws.object_name(region, &p), std::fs::read(&p).unwrap()))
        .collect()
}

/// The bytes after an age header (`--- MAC` line).
fn payload(file: &[u8]) -> &[u8] {
    let at = file.windows(5).position(|w| w == b"\n--- ").unwrap() + 1;
    let nl = file[at..].iter().position(|&b| b == b'\n').unwrap();
    &file[at + nl + 1..]
}

fn age_decrypts(identity: &Path, file: &Path) -> bool {
    Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file)
        .output()
        .expect("age CLI (installed by .ci/deps.sh)")
        .status
        .success()
}

/// Back up, rotate into `keys2/`, back up again (deduplicating into epoch-1 packs); the
/// identity file then holds both epochs' lines. Returns the old and new snapshot ids and
/// the source tree as the old snapshot holds it.
fn rotated(ws: &Workspace) -> (String, String, Tree) {
    write(&ws.path("data/a.txt"), b"alpha\n");
    write(&ws.path("data/dir/b.txt"), &b"beta\n".repeat(5000));
    ws.init();
    let first = ws.json(&["backup", "app-data"]);
    let tree = capture(&ws.path("data"));
    ws.json(&[
        "keys",
        "rotate",
        "--dir",
        ws.path("keys2").to_str().unwrap(),
    ]);
    write(&ws.path("data/new.txt"), b"written after the rotation\n");
    let second = ws.json(&["backup", "app-data"]);
    assert_eq!(
        second["stats"]["new_chunks"], 2,
        "dedup into old packs: {second}"
    );
    both_identities(ws);
    (
        first["snapshot"].as_str().unwrap().to_string(),
        second["snapshot"].as_str().unwrap().to_string(),
        tree,
    )
}

type Tree = BTreeMap<Vec<u8>, crate::common::EntryMeta>;

/// `keys2/both.txt` (0600): the epoch-1 and epoch-2 key lines in one identity file, and
/// lifeboat.toml pointed at it.
pub fn both_identities(ws: &Workspace) {
    let both = ws.path("keys2/both.txt");
    let text = format!(
        "{}{}",
        std::fs::read_to_string(ws.path("keys/identity.txt")).unwrap(),
        std::fs::read_to_string(ws.path("keys2/identity-epoch-2.txt")).unwrap()
    );
    write(&both, text.as_bytes());
    std::fs::set_permissions(&both, std::fs::Permissions::from_mode(0o600)).unwrap();
    ws.edit_config(|t| t.replace("keys/identity.txt", "keys2/both.txt"));
}

fn restore(ws: &Workspace, snapshot: &str, to: &str) -> std::path::PathBuf {
    let to = ws.path(to);
    ws.ok(&[
        "restore",
        "app-data",
        "--snapshot",
        snapshot,
        "--to",
        to.to_str().unwrap(),
    ]);
    to
}

/// `keys list --json`'s object counts of `epoch`, by region.
fn depends(list: &serde_json::Value, epoch: u64) -> (serde_json::Value, serde_json::Value) {
    let e = list["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["epoch"] == epoch)
        .unwrap_or_else(|| panic!("epoch {epoch} in {list}"));
    (e["objects"].clone(), e["rewrap_needed"].clone())
}

#[test]
fn after_a_rewrap_the_new_identity_alone_restores_old_and_new_snapshots() {
    let ws = Workspace::new();
    let (old_snap, new_snap, before_old) = rotated(&ws);
    let regions = ["us-west-2", "us-east-2"];
    let before: Vec<_> = regions
        .iter()
        .map(|r| {
            (
                stored(&ws, r, "data/"),
                stored(&ws, r, "snapshots/"),
                stored(&ws, r, "index/"),
            )
        })
        .collect();

    let list = ws.json(&["keys", "list"]);
    let (objects, needed) = depends(&list, 1);
    assert_eq!(needed, true, "{list}");
    for r in regions {
        assert!(
            objects[r].as_u64().unwrap() >= 3,
            "packs + manifest: {list}"
        );
    }
    let text = ws.ok(&["keys", "list"]);
    assert!(text.contains("rewrap needed"), "{text}");
    // A writer added after the old manifest was written: the rewrap wraps manifests to it too.
    ws.ok(&[
        "keys",
        "add-writer",
        "db2",
        "--dir",
        ws.path("keys").to_str().unwrap(),
    ]);

    let report = ws.json(&["keys", "rewrap"]);
    assert_eq!(report["epoch"], 2, "{report}");
    assert_eq!(report["failed"], serde_json::json!([]), "{report}");
    assert_eq!(report["locked"], serde_json::json!([]), "{report}");
    let rewrapped = report["rewrapped"].as_u64().unwrap();
    assert!(
        rewrapped >= 6,
        "old packs and manifest, both regions: {report}"
    );

    // Run again: everything is at the current epoch already.
    let again = ws.json(&["keys", "rewrap"]);
    assert_eq!(again["rewrapped"], 0, "{again}");
    assert!(again["skipped"].as_u64().unwrap() >= rewrapped, "{again}");
    let list = ws.json(&["keys", "list"]);
    let (objects, needed) = depends(&list, 1);
    assert_eq!(needed, false, "{list}");
    assert_eq!(objects, serde_json::json!({"us-east-2": 0, "us-west-2": 0}));

    // Same names, same payloads (so the same ids), index files byte for byte (so the same
    // chunk ids); only the headers of the old objects changed.
    for (r, (data, snaps, index)) in regions.iter().zip(&before) {
        let (data2, snaps2, index2) = (
            stored(&ws, r, "data/"),
            stored(&ws, r, "snapshots/"),
            stored(&ws, r, "index/"),
        );
        assert_eq!(index, &index2, "{r}: index files unchanged");
        for (old, new) in [(data, &data2), (snaps, &snaps2)] {
            assert_eq!(
                old.keys().collect::<Vec<_>>(),
                new.keys().collect::<Vec<_>>(),
                "{r}: object names unchanged"
            );
            for (name, bytes) in old {
                assert_eq!(payload(bytes), payload(&new[name]), "{r}: {name} payload");
            }
        }
        assert!(
            data.iter().any(|(n, b)| &data2[n] != b),
            "{r}: some pack got a new header"
        );
    }

    // Debian's age CLI opens a rewrapped pack with the new identity, not the old one; a
    // rewrapped manifest with the writer key too.
    let old_manifest = ws.path(&format!("us-west-2/snapshots/{old_snap}"));
    let pack = ws
        .objects("us-west-2", "data/")
        .into_iter()
        .find(|p| {
            let name = ws.object_name("us-west-2", p);
            before[0].0[&name] != std::fs::read(p).unwrap()
        })
        .unwrap();
    let new_identity = ws.path("keys2/identity-epoch-2.txt");
    assert!(age_decrypts(&new_identity, &pack));
    assert!(!age_decrypts(&ws.path("keys/identity.txt"), &pack));
    assert!(age_decrypts(&new_identity, &old_manifest));
    assert!(age_decrypts(&ws.path("keys/writer.key"), &old_manifest));
    assert!(age_decrypts(&ws.path("keys/writer-db2.key"), &old_manifest));
    // Sealed details: the rotation wrote the current epoch's copy of the details key, which
    // only the new identity opens (never a writer); the manifests keep their sealed details.
    let details_new = ws.path("us-west-2/keys/details-0002.age");
    assert!(age_decrypts(&new_identity, &details_new));
    assert!(!age_decrypts(&ws.path("keys/identity.txt"), &details_new));
    for w in ["keys/writer.key", "keys/writer-db2.key"] {
        assert!(!age_decrypts(&ws.path(w), &details_new), "{w}");
        assert!(!age_decrypts(
            &ws.path(w),
            &ws.path("us-west-2/keys/details-0001.age")
        ));
    }

    // Only the new identity now: both snapshots restore, and dedup still hits.
    ws.edit_config(|t| t.replace("keys2/both.txt", "keys2/identity-epoch-2.txt"));
    let to = restore(&ws, &new_snap, "restore-new");
    assert_same_tree(&capture(&ws.path("data")), &capture(&to), "new snapshot");
    let to = restore(&ws, &old_snap, "restore-old");
    assert_same_tree(&before_old, &capture(&to), "old snapshot");
    // Both are sealed, and the new identity alone opens their details (the location shows).
    for s in ws.json(&["snapshots"]).as_array().unwrap() {
        assert_eq!(s["sealed"], false, "{s}");
        assert_eq!(
            s["source"]["location"].as_str().unwrap(),
            ws.path("data").to_str().unwrap()
        );
    }
    ws.ok(&["verify", "--read-data"]);
    let third = ws.json(&["backup", "app-data"]);
    assert_eq!(
        third["stats"]["new_chunks"], 0,
        "chunk ids unchanged: {third}"
    );

    // Both key commands are in the audit trail, with their outcome.
    let audit = ws.json(&["audit"]);
    let entries: Vec<(String, String)> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["command"].as_str().unwrap_or_default().to_string(),
                e["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for cmd in ["keys rotate", "keys rewrap"] {
        let of: Vec<&(String, String)> = entries.iter().filter(|(c, _)| c.contains(cmd)).collect();
        assert!(
            of.iter().any(|(_, o)| o == "started") && of.iter().any(|(_, o)| o == "ok"),
            "{cmd}: intent and outcome in {audit}"
        );
    }
    assert!(
        !entries.iter().any(|(c, _)| c.contains("keys list")),
        "keys list only reads: {audit}"
    );
}

#[test]
fn an_interrupted_rewrap_finishes_when_run_again() {
    let ws = Workspace::new();
    let (old_snap, _, _) = rotated(&ws);
    // One region away: the run does the other and says it is not complete (exit 3).
    std::fs::rename(ws.path("us-east-2"), ws.path("us-east-2.away")).unwrap();
    let out = ws.run(&["keys", "rewrap", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let east = first["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == "us-east-2")
        .unwrap()
        .clone();
    assert!(east["unavailable"].is_string(), "{first}");
    let done = first["rewrapped"].as_u64().unwrap();
    assert!(done >= 3, "{first}");
    std::fs::rename(ws.path("us-east-2.away"), ws.path("us-east-2")).unwrap();

    // Again: us-west-2's objects are skipped, us-east-2's rewrapped; then nothing is left.
    let second = ws.json(&["keys", "rewrap"]);
    let per: BTreeMap<String, (u64, u64)> = second["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["region"].as_str().unwrap().to_string(),
                (
                    r["rewrapped"].as_u64().unwrap(),
                    r["skipped"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(per["us-west-2"].0, 0, "{second}");
    assert!(per["us-west-2"].1 >= done, "{second}");
    assert_eq!(per["us-east-2"].0, done, "{second}");
    ws.edit_config(|t| t.replace("keys2/both.txt", "keys2/identity-epoch-2.txt"));
    // Restore from the region that was away, object by object.
    let to = ws.path("restore-old");
    ws.ok(&[
        "restore",
        "app-data",
        "--snapshot",
        &old_snap,
        "--from",
        "us-east-2",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(to.join("a.txt")).unwrap(), b"alpha\n");
}

#[test]
fn rewrap_needs_the_current_and_the_old_identity() {
    let ws = Workspace::new();
    rotated(&ws);
    // Only the new key: the old objects open with nothing this host holds.
    ws.edit_config(|t| t.replace("keys2/both.txt", "keys2/identity-epoch-2.txt"));
    let out = ws.run(&["keys", "rewrap", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["rewrapped"], 0, "{r}");
    assert!(
        r["failed"]
            .to_string()
            .contains("no identity of this host opens it"),
        "{r}"
    );
    // Only the old key: refused before anything is written (exit 5).
    ws.edit_config(|t| t.replace("keys2/identity-epoch-2.txt", "keys/identity.txt"));
    let before = stored(&ws, "us-west-2", "data/");
    let msg = ws.fails(&["keys", "rewrap"], 5);
    assert!(msg.contains("current epoch 2"), "{msg}");
    assert_eq!(before, stored(&ws, "us-west-2", "data/"), "nothing touched");
    // No epoch older than 1 to select.
    ws.edit_config(|t| t.replace("keys/identity.txt", "keys2/both.txt"));
    let msg = ws.fails(&["keys", "rewrap", "--epoch", "2"], 1);
    assert!(msg.contains("not an older epoch"), "{msg}");
}

#[test]
fn rewrap_in_an_object_lock_bucket_lists_the_retained_old_versions() {
    use crate::object_lock::create_bucket;
    use crate::servers::{ok, run, s3_workspace, settings, Moto, S3Region};

    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = lifeboat::storage::S3Backend::new(settings(
        &moto.endpoint(),
        "locked",
        "",
        Duration::from_secs(30),
    ));
    rt.block_on(create_bucket(&admin, "locked", true));
    rt.block_on(create_bucket(&admin, "plain", false));
    let ws = s3_workspace(&[
        S3Region {
            name: "us-west-2",
            endpoint: moto.endpoint(),
            bucket: "locked",
            extra: "object_lock_days = 2\nobject_lock_mode = \"governance\"",
        },
        S3Region {
            name: "us-east-2",
            endpoint: moto.endpoint(),
            bucket: "plain",
            extra: "",
        },
    ]);
    write(&ws.path("data/a.txt"), b"locked away\n");
    ok(&ws, &["init"]);
    ok(&ws, &["backup", "app-data"]);
    ok(
        &ws,
        &[
            "keys",
            "rotate",
            "--dir",
            ws.path("keys2").to_str().unwrap(),
        ],
    );
    both_identities(&ws);

    let out = run(&ws, &["keys", "rewrap", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let locked = r["locked"].as_array().unwrap();
    assert!(!locked.is_empty(), "{r}");
    let west = r["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["region"] == "us-west-2")
        .unwrap()
        .clone();
    assert_eq!(
        locked.len() as u64,
        west["rewrapped"].as_u64().unwrap(),
        "every object rewrapped in the locked bucket keeps its old version: {r}"
    );
    assert!(locked.iter().all(|l| l["region"] == "us-west-2"), "{r}");
    let now = lifeboat::host::now_secs();
    for l in locked {
        let until = l["retain_until"].as_i64().unwrap();
        assert!(until > now && until <= now + 2 * 86_400 + 300, "{l}");
    }
    assert!(
        locked
            .iter()
            .any(|l| l["object"].as_str().unwrap().starts_with("data/")),
        "{r}"
    );
    let text = ok(&ws, &["keys", "rewrap"]);
    assert!(text.contains("0 objects rewrapped"), "{text}");

    // The current versions open with the new identity alone.
    ws.edit_config(|t| t.replace("keys2/both.txt", "keys2/identity-epoch-2.txt"));
    let to = ws.path("restored");
    ok(&ws, &["restore", "app-data", "--to", to.to_str().unwrap()]);
    assert_eq!(std::fs::read(to.join("a.txt")).unwrap(), b"locked away\n");
}
