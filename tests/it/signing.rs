//! Writers that sign and hosts that pin (#12.3), end to end through the real binary: a
//! substituted `config` or `keys/` object and a stranger's snapshot are refused with exit 5
//! by a backup host and by a restore host; a revoked writer's snapshots are refused and its
//! chunks stored again by an honest writer; an unpinned host warns with the lines to pin.
//! Local regions, and the s3s-fs server for the substituted config.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{succeeded, write, Workspace};
use crate::servers::{self, S3Region, S3sServer};

/// The lines `init` prints after "pin it:".
fn pin_lines(init_out: &str) -> String {
    let at = init_out
        .find("# in [keys]:")
        .expect("init prints pin lines");
    init_out[at..].to_string()
}

/// `config` text with `pins` (as `init`/`add-writer` print them) pasted in.
fn with_pins(config: &str, pins: &str) -> String {
    let (keys_part, table) = pins
        .split_once("[keys.writers]\n")
        .expect("a writers table");
    let inside: String = keys_part
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = config.replacen("[keys]\n", &format!("[keys]\n{inside}"), 1);
    format!("{config}\n[keys.writers]\n{table}")
}

/// A backup host's config (no identity) and a restore host's (no writer key) beside the
/// workspace's own, both from the workspace's current config.
fn hosts(ws: &Workspace) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(ws.config()).unwrap();
    let drop_line = |key: &str| -> String {
        text.lines()
            .filter(|l| !l.starts_with(key))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let backup = ws.path("backup.toml");
    let restore = ws.path("restore.toml");
    std::fs::write(&backup, drop_line("identity_file")).unwrap();
    std::fs::write(
        &restore,
        drop_line("writer_key_file").replace("recipients_file", "# recipients_file"),
    )
    .unwrap();
    (backup, restore)
}

fn run_with(ws: &Workspace, config: &Path, args: &[&str]) -> Output {
    let mut c = std::process::Command::new(crate::common::bin());
    c.arg("--config").arg(config).args(args);
    servers::aws_env(&mut c);
    let _ = ws;
    c.output().expect("run lifeboat")
}

/// Require exit 5 and a message naming `needles`; returns the output.
fn refused(ws: &Workspace, config: &Path, args: &[&str], needles: &[&str]) -> String {
    let text = crate::common::exited(&run_with(ws, config, args), args, 5);
    for n in needles {
        assert!(text.contains(n), "lifeboat {args:?}: no {n:?} in\n{text}");
    }
    text
}

fn restore_args(to: &Path) -> Vec<String> {
    vec![
        "restore".into(),
        "app-data".into(),
        "--to".into(),
        to.to_str().unwrap().into(),
    ]
}

/// A pinned workspace with one snapshot of `data/`.
fn pinned_workspace() -> (Workspace, String) {
    let ws = Workspace::new();
    write(&ws.path("data/a.txt"), b"alpha\n");
    let out = ws.ok(&["init"]);
    let pins = pin_lines(&out);
    ws.edit_config(|c| with_pins(c, &pins));
    ws.ok(&["backup", "app-data"]);
    (ws, pins)
}

#[test]
fn prune_signs_its_consolidated_index_files_so_it_needs_a_trusted_writer_key() {
    let (ws, _) = pinned_workspace();
    ws.ok(&["backup", "app-data"]);
    let (_, restore) = hosts(&ws);
    // The identity alone (a restore host) may not write index files nobody signs.
    refused(
        &ws,
        &restore,
        &["prune", "--grace", "0s"],
        &["no trusted writer key", "keys add-writer"],
    );
    // Identity and a pinned writer key: prune runs and backups still dedup against its index.
    ws.json(&["prune", "--grace", "0s"]);
    let again = ws.json(&["backup", "app-data"]);
    assert_eq!(again["stats"]["new_chunks"], 0, "{again}");
}

#[test]
fn unpinned_hosts_warn_once_with_the_lines_and_pinned_hosts_do_not() {
    let ws = Workspace::new();
    write(&ws.path("data/a.txt"), b"alpha\n");
    let out = ws.run(&["init"]);
    let init = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    // init prints the lines on stdout itself: no warning about them on top.
    assert!(!err.contains("not pinned"), "{err}");
    let pins = pin_lines(&init);
    assert!(pins.contains("repository_id = \""), "{pins}");
    assert!(pins.contains("repository_secrets = \"blake3:"), "{pins}");
    assert!(pins.contains("default = \"ed25519:"), "{pins}");
    let out = ws.run(&["backup", "app-data"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("repository not pinned").count(), 1, "{err}");
    assert!(err.contains("repository_secrets"), "{err}");
    ws.edit_config(|c| with_pins(c, &pins));
    let out = ws.run(&["backup", "app-data"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("not pinned"), "{err}");
    let to = ws.path("restored");
    let args = restore_args(&to);
    ws.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(std::fs::read(to.join("a.txt")).unwrap(), b"alpha\n");
}

#[test]
fn a_substituted_keys_object_is_refused_by_backup_and_restore_hosts() {
    let (ws, _) = pinned_workspace();
    let (backup, restore) = hosts(&ws);
    // A secrets object with the right repository id, epoch and recipients but secrets of
    // the attacker's choosing (recipients are public: anyone can make one).
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.region("us-west-2").join("config")).unwrap())
            .unwrap();
    let id = config["id"].as_str().unwrap();
    let parse =
        |v: &serde_json::Value| lifeboat_repo::keys::parse_recipient(v.as_str().unwrap()).unwrap();
    let mut to: Vec<_> = config["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(parse)
        .collect();
    to.push(parse(&config["writer_recipient"]));
    let refs: Vec<&_> = to.iter().collect();
    let forged = lifeboat_repo::secrets::RepoSecrets::generate(rand::random())
        .seal(id, 1, &refs)
        .unwrap();
    for r in ["us-west-2", "us-east-2"] {
        std::fs::write(ws.region(r).join("keys/secrets-0001.age"), &forged).unwrap();
    }
    let needles = [
        "keys/secrets-0001.age",
        "region us-west-2",
        "substituted key object",
    ];
    refused(&ws, &backup, &["backup", "app-data"], &needles);
    let to = ws.path("r1");
    let args = restore_args(&to);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&ws, &restore, &args, &needles);
    refused(&ws, &restore, &["snapshots"], &needles);
    assert!(!to.exists(), "nothing restored from a forged repository");
}

#[test]
fn a_strangers_snapshot_is_refused_and_a_revoked_writers_chunks_are_stored_again() {
    let (ws, pins) = pinned_workspace();
    let (backup, restore) = hosts(&ws);
    // A second backup host: writer db2, with its own data.
    let out = ws.ok(&[
        "keys",
        "add-writer",
        "db2",
        "--dir",
        ws.path("keys").to_str().unwrap(),
    ]);
    assert!(out.contains("db2 = \"ed25519:"), "{out}");
    let db2_key = ws.path("keys/writer-db2.key");
    let db2 = ws.path("db2.toml");
    let text = std::fs::read_to_string(&backup).unwrap();
    std::fs::write(
        &db2,
        text.replace(
            &ws.path("keys/writer.key").display().to_string(),
            &db2_key.display().to_string(),
        ),
    )
    .unwrap();
    let shared = b"shared content, first stored by db2\n".repeat(4000);
    write(&ws.path("data/shared.bin"), &shared);
    // db2 is not pinned anywhere yet: a stranger to every host, itself included.
    refused(
        &ws,
        &db2,
        &["backup", "app-data"],
        &["not a trusted writer"],
    );
    // Unpinned, it may write (its hosts accept what config lists), like a stolen host would.
    let unpinned = std::fs::read_to_string(&db2)
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with("[keys.writers]"))
        .filter(|l| !l.starts_with("repository_"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    std::fs::write(&db2, unpinned).unwrap();
    succeeded(&["backup"], run_with(&ws, &db2, &["backup", "app-data"]));
    let needles = [
        "signed by writer \"db2\"",
        "not in [keys.writers]",
        "region us-west-2",
    ];
    refused(&ws, &restore, &["snapshots"], &needles);
    refused(&ws, &backup, &["backup", "app-data"], &needles[..2]);

    // Pinned everywhere: trusted, and the default writer deduplicates against it.
    let pinned_db2 = format!(
        "{pins}db2 = \"{}\"\n",
        lifeboat_repo::keys::WriterKey::parse(
            &std::fs::read_to_string(ws.path("keys/writer-db2.key")).unwrap()
        )
        .unwrap()
        .signing_public()
    );
    for cfg in [&backup, &restore] {
        let t = std::fs::read_to_string(cfg).unwrap();
        let t = t.replace(
            &pins[pins.find("[keys.writers]").unwrap()..],
            &pinned_db2[pinned_db2.find("[keys.writers]").unwrap()..],
        );
        std::fs::write(cfg, t).unwrap();
    }
    let listed = succeeded(
        &["snapshots"],
        run_with(&ws, &restore, &["snapshots", "--json"]),
    );
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let snaps = listed
        .as_array()
        .or(listed["snapshots"].as_array())
        .unwrap()
        .clone();
    assert_eq!(snaps.len(), 2, "{listed}");
    let b = succeeded(
        &["backup"],
        run_with(&ws, &backup, &["backup", "app-data", "--json"]),
    );
    let b: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert!(
        b["stats"]["new_bytes"].as_u64().unwrap() < shared.len() as u64,
        "the shared file was deduplicated against db2's chunks: {b}"
    );
    let db2_snap = snaps
        .iter()
        .map(|s| {
            s["id"]
                .as_str()
                .or(s["snapshot"].as_str())
                .unwrap()
                .to_string()
        })
        .nth(1)
        .unwrap();

    // Revoked: db2's snapshot is refused, its chunks no longer count for dedup.
    ws.ok(&["keys", "revoke-writer", "db2"]);
    let to = ws.path("r-db2");
    let mut args = restore_args(&to);
    args.extend(["--snapshot".to_string(), db2_snap.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(
        &ws,
        &restore,
        &args,
        &["signed by writer db2, which has been revoked"],
    );
    refused(&ws, &db2, &["backup", "app-data"], &["revoked"]);
    write(&ws.path("data/a.txt"), b"alpha, changed\n");
    let b = succeeded(
        &["backup"],
        run_with(&ws, &backup, &["backup", "app-data", "--json"]),
    );
    let b: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert!(
        b["stats"]["new_bytes"].as_u64().unwrap() >= shared.len() as u64,
        "after the revocation the honest writer stores the shared chunks again: {b}"
    );
    // And the honest writer's newest snapshot restores, from the restore host.
    let to = ws.path("r-latest");
    let args = restore_args(&to);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    succeeded(&args, run_with(&ws, &restore, &args));
    assert_eq!(std::fs::read(to.join("shared.bin")).unwrap(), shared);
}

#[test]
fn a_substituted_config_in_an_s3_region_is_refused_by_backup_and_restore_hosts() {
    let server = S3sServer::start(&["west", "east"]);
    let endpoint = server.endpoint();
    let ws = servers::s3_workspace(&[
        S3Region {
            name: "us-west-2",
            bucket: "west",
            endpoint: endpoint.clone(),
            extra: "",
        },
        S3Region {
            name: "us-east-2",
            bucket: "east",
            endpoint: endpoint.clone(),
            extra: "",
        },
    ]);
    write(&ws.path("data/a.txt"), b"alpha\n");
    let out = servers::ok(&ws, &["init"]);
    let pins = pin_lines(&out);
    ws.edit_config(|c| with_pins(c, &pins));
    servers::ok(&ws, &["backup", "app-data"]);
    // Another repository's config (same keys: a bucket writer swapping whole repositories).
    let other = Workspace::new();
    for f in ["identity.txt", "writer.key", "recipients.txt"] {
        std::fs::copy(
            ws.path(&format!("keys/{f}")),
            other.path(&format!("keys/{f}")),
        )
        .unwrap();
    }
    other.ok(&["init"]);
    for bucket in ["west", "east"] {
        let config_path = server.bucket_dir(bucket).join("lifeboat/test/config");
        assert!(config_path.exists(), "{}", config_path.display());
        std::fs::copy(other.region("us-west-2").join("config"), &config_path).unwrap();
    }
    let (backup, restore) = hosts(&ws);
    let needles = ["config in region us-west-2", "pins repository_id"];
    refused(&ws, &backup, &["backup", "app-data"], &needles);
    refused(&ws, &restore, &["snapshots"], &needles);
    let to = ws.path("r");
    let args = restore_args(&to);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&ws, &restore, &args, &needles);
}
