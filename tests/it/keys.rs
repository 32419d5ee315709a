//! Who can do what with which keys (DESIGN.md, principle 3): a wrong identity is refused
//! with exit 5; a write-only backup host (recipients + writer key, no identity) backs up
//! and lists but cannot restore or read data; a restore host with only the identity opens
//! the repository secrets (`keys/secrets-NNNN.age`) with it; `keys generate` never
//! overwrites key material.

use std::os::unix::fs::PermissionsExt;

use crate::common::{assert_same_tree, capture, write, Workspace};

fn small_source(ws: &Workspace) {
    write(&ws.path("data/a.txt"), b"alpha\n");
    write(&ws.path("data/dir/b.txt"), &b"beta\n".repeat(5000));
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Drop the `identity_file = …` line: this host holds no identity.
fn without_identity(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("identity_file"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn wrong_identity_is_refused_with_exit_5() {
    let ws = Workspace::new();
    small_source(&ws);
    ws.init();
    ws.ok(&["backup", "app-data"]);
    let other = ws.path("other-keys");
    ws.ok(&["keys", "generate", "--dir", other.to_str().unwrap()]);
    ws.edit_config(|t| t.replace("keys/identity.txt", "other-keys/identity.txt"));

    let to = ws.path("restored");
    let msg = ws.fails(&["restore", "app-data", "--to", to.to_str().unwrap()], 5);
    assert!(msg.contains("not a recipient"), "{msg}");
    assert!(!to.exists() || capture(&to).is_empty(), "nothing restored");
    let msg = ws.fails(&["verify", "--read-data"], 5);
    assert!(msg.contains("not a recipient"), "{msg}");
}

#[test]
fn write_only_host_backs_up_and_lists_but_cannot_read() {
    let ws = Workspace::new();
    small_source(&ws);
    ws.init();
    ws.edit_config(without_identity);

    let b = ws.json(&["backup", "app-data"]);
    assert_eq!(b["degraded"], false, "{b}");
    write(&ws.path("data/c.txt"), b"gamma\n");
    ws.ok(&["backup", "app-data"]);
    let list = ws.json(&["snapshots"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "the writer key decrypts manifests: {list:?}");
    assert!(list
        .iter()
        .all(|s| s["plan"] == "app-data" && s["complete"] == true));

    let to = ws.path("restored");
    let msg = ws.fails(&["restore", "app-data", "--to", to.to_str().unwrap()], 5);
    assert!(
        msg.contains("identity") && msg.contains("identity_file"),
        "{msg}"
    );
    assert!(!to.exists(), "nothing created by a refused restore");
    let msg = ws.fails(&["verify", "--read-data"], 5);
    assert!(
        msg.contains("identity") && msg.contains("identity_file"),
        "{msg}"
    );
    // Structure checks need no identity, and say what they could not check.
    let out = ws.ok(&["verify"]);
    assert!(out.contains("no identity"), "{out}");
}

#[test]
fn restore_host_without_writer_key_restores_with_the_identity_alone() {
    let ws = Workspace::new();
    small_source(&ws);
    let source = capture(&ws.path("data"));
    ws.init();
    ws.ok(&["backup", "app-data"]);
    ws.edit_config(|t| t.replace("keys/writer.key", "keys/not-on-this-host.key"));
    assert!(!ws.path("keys/not-on-this-host.key").exists());

    let to = ws.path("restored");
    ws.ok(&["restore", "app-data", "--to", to.to_str().unwrap()]);
    assert_same_tree(&source, &capture(&to), "restore without a writer key file");
    ws.ok(&["verify", "--read-data"]);
    // Adding snapshots does need the writer key file.
    let msg = ws.fails(&["backup", "app-data"], 5);
    assert!(msg.contains("not-on-this-host.key"), "{msg}");
}

#[test]
fn keys_generate_refuses_to_overwrite_and_writes_0600() {
    let ws = Workspace::new();
    let dir = ws.path("fresh-keys");
    let out = ws.ok(&["keys", "generate", "--dir", dir.to_str().unwrap()]);
    assert!(
        !out.contains("AGE-SECRET-KEY"),
        "secrets never printed: {out}"
    );
    assert_eq!(mode(&dir.join("identity.txt")), 0o600);
    assert_eq!(mode(&dir.join("writer.key")), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let recipients = std::fs::read_to_string(dir.join("recipients.txt")).unwrap();
    assert!(recipients.contains("age1"), "{recipients}");
    assert!(!recipients.contains("AGE-SECRET-KEY"));

    let before = capture(&dir);
    let out = ws.run(&["keys", "generate", "--dir", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second generate must fail");
    assert!(
        stderr.contains("already exists") && stderr.contains("identity.txt"),
        "{stderr}"
    );
    assert_eq!(capture(&dir), before, "existing keys untouched");

    // One existing key file is enough to refuse, and nothing new is written beside it.
    let partial = ws.path("partial-keys");
    write(&partial.join("writer.key"), b"precious\n");
    let out = ws.run(&["keys", "generate", "--dir", partial.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("writer.key"));
    assert_eq!(
        std::fs::read(partial.join("writer.key")).unwrap(),
        b"precious\n"
    );
    assert!(!partial.join("identity.txt").exists());
}

/// `keys rotate` (#12.2): a new recipient epoch, nothing re-uploaded; the snapshot from
/// before restores with the old identity alone; the one after, whose unchanged chunks still
/// sit in old-epoch packs, needs both lines in the identity file, and the new identity alone
/// is not enough for it (until a rewrap).
#[test]
fn rotate_starts_an_epoch_and_each_identity_reads_what_was_encrypted_to_it() {
    let ws = Workspace::new();
    small_source(&ws);
    ws.init();
    let first = ws.json(&["backup", "app-data"]);
    let before = capture(&ws.path("data"));

    let rotated = ws.json(&[
        "keys",
        "rotate",
        "--dir",
        ws.path("keys2").to_str().unwrap(),
    ]);
    assert_eq!(rotated["rotation"]["epoch"], 2, "{rotated}");
    let new_identity = ws.path("keys2/identity-epoch-2.txt");
    assert_eq!(mode(&new_identity), 0o600);
    let list = ws.json(&["keys", "list"]);
    let epochs = list["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2, "{list}");
    assert_eq!(epochs[1]["current"], true, "{list}");
    assert_eq!(epochs[0]["current"], false, "{list}");
    assert_ne!(epochs[0]["recipients"], epochs[1]["recipients"]);
    write(&ws.path("data/new.txt"), b"written after the rotation\n");
    let second = ws.json(&["backup", "app-data"]);
    assert_eq!(
        second["stats"]["new_chunks"], 2,
        "only the new file and its tree are new: chunk ids survived the rotation: {second}"
    );
    let old_snap = first["snapshot"].as_str().unwrap();
    let new_snap = second["snapshot"].as_str().unwrap();

    // The old identity alone reads the snapshot from before the rotation…
    let to = ws.path("restore-old");
    ws.ok(&[
        "restore",
        "app-data",
        "--snapshot",
        old_snap,
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_same_tree(
        &before,
        &capture(&to),
        "the snapshot from before the rotation",
    );
    // …but not the new one's tree and manifest.
    let to = ws.path("restore-new-old-key");
    ws.fails(
        &[
            "restore",
            "app-data",
            "--snapshot",
            new_snap,
            "--to",
            to.to_str().unwrap(),
        ],
        5,
    );

    // The new identity alone cannot read the old-epoch packs the new snapshot shares.
    ws.edit_config(|t| t.replace("keys/identity.txt", "keys2/identity-epoch-2.txt"));
    let to = ws.path("restore-new-only");
    ws.fails(
        &[
            "restore",
            "app-data",
            "--snapshot",
            new_snap,
            "--to",
            to.to_str().unwrap(),
        ],
        5,
    );

    // Both lines in one identity file: everything restores.
    let both = ws.path("keys2/both.txt");
    let text = format!(
        "{}{}",
        std::fs::read_to_string(ws.path("keys/identity.txt")).unwrap(),
        std::fs::read_to_string(&new_identity).unwrap()
    );
    write(&both, text.as_bytes());
    std::fs::set_permissions(&both, std::fs::Permissions::from_mode(0o600)).unwrap();
    ws.edit_config(|t| t.replace("keys2/identity-epoch-2.txt", "keys2/both.txt"));
    let to = ws.path("restore-new");
    ws.ok(&[
        "restore",
        "app-data",
        "--snapshot",
        new_snap,
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_same_tree(
        &capture(&ws.path("data")),
        &capture(&to),
        "the snapshot from after the rotation",
    );
}
