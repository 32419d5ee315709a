//! Sealed manifest details (#12.4), end to end through the real binary: two backup hosts
//! (writers added with `keys add-writer`), one directory plan and one PostgreSQL plan (a
//! real cluster from `pg`) in one repository. Writer A's age key opens writer B's manifest
//! (it must list snapshots) but finds neither B's source location, nor its root tree id, nor
//! a probe value or table name, and cannot open the sealed details; a restore host (the
//! identity) restores B's snapshot and shows its location. On a writer-only host
//! `snapshots`, `status` and `catalog sync` work and show the location as sealed, and a
//! restore fails with the identity error (exit 5). A details blob swapped in from another
//! snapshot is refused by the signature (exit 5). Debian's `age` CLI does the decrypting.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{exited, write, Workspace};
use crate::pg::{self, psql};

/// `age -d -i identity` of `bytes`; `None` when age refuses.
fn age_open(identity: &Path, bytes: &[u8], scratch: &Path) -> Option<Vec<u8>> {
    let file = scratch.join("sealed-input.age");
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(&file)
        .output()
        .expect("age CLI (installed by .ci/deps.sh)");
    out.status.success().then_some(out.stdout)
}

/// `base64 -d` (coreutils) of `text`.
fn base64_decode(text: &str, ws: &Workspace) -> Vec<u8> {
    let file = ws.path("details.b64");
    std::fs::write(&file, text).unwrap();
    let out = Command::new("base64")
        .arg("-d")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "base64 -d");
    out.stdout
}

/// A manifest plaintext's signed JSON (inside the writer's envelope).
fn signed_json(plain: &[u8]) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(plain).expect("manifest JSON");
    v.get("signed").cloned().unwrap_or(v)
}

/// A backup host's config: only writer `name`'s key, its own catalog and cache.
fn writer_host(ws: &Workspace, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(ws.config()).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("identity_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = text
        .replace("keys/writer.key", &format!("keys/writer-{name}.key"))
        .replace("lifeboat.db", &format!("lifeboat-{name}.db"))
        .replace("/cache\"", &format!("/cache-{name}\""));
    let path = ws.path(&format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run_with(config: &Path, args: &[&str]) -> Output {
    Command::new(crate::common::bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("LIFEBOAT_CONFIG")
        .output()
        .expect("run lifeboat")
}

fn ok_with(config: &Path, args: &[&str]) -> String {
    crate::common::succeeded(args, run_with(config, args))
}

fn json_with(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&ok_with(config, &all)).expect("--json output")
}

/// The snapshot of `plan` as `snapshots --json` lists it on the host of `config`.
fn listed(config: &Path, plan: &str) -> serde_json::Value {
    let v = json_with(config, &["snapshots", "--plan", plan]);
    v.as_array().unwrap().last().expect("a snapshot").clone()
}

/// The details key's secret, as an identity file `age -i` reads (opened with the identity).
fn details_identity(ws: &Workspace) -> PathBuf {
    let obj = std::fs::read(ws.path("us-west-2/keys/details-0001.age")).unwrap();
    let plain = age_open(&ws.path("keys/identity.txt"), &obj, &ws.path("")).expect("identity");
    let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    let path = ws.path("details-identity.txt");
    write(
        &path,
        format!("{}\n", v["identity"].as_str().unwrap()).as_bytes(),
    );
    path
}

struct Hosts {
    ws: Workspace,
    a: PathBuf,
    b: PathBuf,
    db_snapshot: String,
    dir_snapshot: String,
}

/// Writers `hosta` (plan `app-data`, a directory) and `hostb` (plan `ledger`, PostgreSQL
/// with probes), one snapshot each.
fn two_hosts() -> Hosts {
    let db = pg::database();
    psql(
        &db,
        "CREATE TABLE secret_ledger (id int primary key, memo text); \
         INSERT INTO secret_ledger SELECT g, 'zebra ' || g FROM generate_series(1, 37) g;",
    );
    let ws = Workspace::new();
    write(&ws.path("data/a.txt"), b"alpha\n");
    ws.init();
    ws.edit_config(|c| {
        format!(
            "{c}\n[[plans]]\nname = \"ledger\"\nsource = {{ kind = \"postgres\", url = \"{db}\", allow_scratch_on_source = true, probes = [{{ name = \"quagga count\", sql = \"select 'quagga-' || count(*) from secret_ledger\" }}] }}\n"
        )
    });
    let keys = ws.path("keys");
    for w in ["hosta", "hostb"] {
        ws.ok(&["keys", "add-writer", w, "--dir", keys.to_str().unwrap()]);
    }
    let (a, b) = (writer_host(&ws, "hosta"), writer_host(&ws, "hostb"));
    let dir_snapshot = json_with(&a, &["backup", "app-data"])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let db_snapshot = json_with(&b, &["backup", "ledger"])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    Hosts {
        ws,
        a,
        b,
        db_snapshot,
        dir_snapshot,
    }
}

#[test]
fn sealed_a_writer_reads_another_hosts_manifest_but_not_its_details() {
    let h = two_hosts();
    let ws = &h.ws;
    let manifest = std::fs::read(ws.path(&format!("us-west-2/snapshots/{}", h.db_snapshot)))
        .expect("B's manifest");
    let writer_a = ws.path("keys/writer-hosta.key");
    let plain = age_open(&writer_a, &manifest, &ws.path("")).expect("A lists B's snapshots");
    let m = signed_json(&plain);
    assert_eq!(m["plan"], "ledger", "{m}");
    assert!(
        m.get("root").is_none() && m["source"].get("location").is_none(),
        "{m}"
    );
    let text = String::from_utf8_lossy(&plain).to_string();

    // What the restore host sees: the location, and (through the details key) the root.
    let restore_host = ws.config();
    let full = listed(&restore_host, "ledger");
    assert_eq!(full["sealed"], false, "{full}");
    let location = full["source"]["location"].as_str().unwrap().to_string();
    assert!(location.contains("lb_"), "{full}");
    let blob = base64_decode(m["details"].as_str().expect("sealed details"), ws);
    assert!(
        age_open(&writer_a, &blob, &ws.path("")).is_none(),
        "writer A opens the details"
    );
    assert!(age_open(&ws.path("keys/writer-hostb.key"), &blob, &ws.path("")).is_none());
    let details = age_open(&details_identity(ws), &blob, &ws.path("")).expect("details key");
    let details: serde_json::Value = serde_json::from_slice(&details).unwrap();
    let root = details["root"].as_str().unwrap();
    assert_eq!(root.len(), 64, "{details}");
    assert!(details.to_string().contains("quagga-37"), "{details}");
    assert!(details.to_string().contains("secret_ledger"), "{details}");
    for secret in [location.as_str(), root, "quagga", "secret_ledger", "zebra"] {
        assert!(
            !text.contains(secret),
            "{secret:?} readable by writer A: {text}"
        );
    }

    // The restore host restores B's snapshot (pg_restore into a fresh database).
    let target = pg::database();
    ok_with(
        &restore_host,
        &[
            "restore",
            "ledger",
            "--snapshot",
            &h.db_snapshot,
            "--to",
            &target,
        ],
    );
    assert_eq!(psql(&target, "select count(*) from secret_ledger"), "37");

    // Writer-only host A: listing, status and catalog sync work, the location is sealed.
    let seen = listed(&h.a, "ledger");
    assert_eq!(seen["sealed"], true, "{seen}");
    assert_eq!(seen["source"]["location"], "(sealed)", "{seen}");
    assert_eq!(seen["source"]["kind"], "postgres", "{seen}");
    assert_eq!(seen["id"], full["id"]);
    let own = listed(&h.a, "app-data");
    assert_eq!(own["id"].as_str().unwrap(), h.dir_snapshot);
    assert_eq!(own["sealed"], true, "its own plan too, once stored: {own}");
    let sync = ok_with(&h.a, &["catalog", "sync"]);
    assert!(!sync.contains(&location), "{sync}");
    let status = run_with(&h.a, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status");
    let ledger = status["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plan"] == "ledger")
        .unwrap_or_else(|| panic!("ledger in {status}"));
    assert!(
        ledger["rpo"]["age_seconds"].as_i64().is_some(),
        "RPO known on the writer host: {ledger}"
    );
    assert!(!status.to_string().contains(&location), "{status}");
    let keys = json_with(&h.a, &["keys", "list"]);
    assert_eq!(keys["details_readable_here"], false, "{keys}");
    assert!(keys["details_recipient"].as_str().is_some(), "{keys}");
    // Rotation writes the new epoch's copy of the details key: refused without the identity.
    let recipient = std::fs::read_to_string(ws.path("keys/recipients.txt")).unwrap();
    let recipient = recipient.lines().find(|l| l.starts_with("age1")).unwrap();
    let out = run_with(&h.a, &["keys", "rotate", "--recipient", recipient]);
    let err = exited(&out, &["keys", "rotate"], 5);
    assert!(err.contains("identity"), "{err}");
    let to = ws.path("restored-on-a");
    let out = run_with(&h.a, &["restore", "app-data", "--to", to.to_str().unwrap()]);
    let err = exited(&out, &["restore"], 5);
    assert!(err.contains("identity"), "{err}");
    assert!(!to.join("a.txt").exists());
    let _ = &h.b;
}

#[test]
fn sealed_a_details_blob_swapped_from_another_snapshot_is_refused() {
    let h = two_hosts();
    let ws = &h.ws;
    let identity = ws.path("keys/identity.txt");
    let read = |id: &str| {
        let bytes = std::fs::read(ws.path(&format!("us-west-2/snapshots/{id}"))).unwrap();
        String::from_utf8(age_open(&identity, &bytes, &ws.path("")).unwrap()).unwrap()
    };
    let (victim, donor) = (read(&h.db_snapshot), read(&h.dir_snapshot));
    let details = |text: &str| {
        signed_json(text.as_bytes())["details"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The envelope byte for byte, with the other snapshot's details in place of its own.
    let forged = victim.replace(&details(&victim), &details(&donor));
    assert_ne!(forged, victim);
    // Re-encrypted to the recipients and stored under the name its payload hashes to, in
    // both regions: only the signature can tell.
    let file = ws.path("forged.json");
    std::fs::write(&file, forged).unwrap();
    let out = Command::new("age")
        .arg("-e")
        .arg("-R")
        .arg(ws.path("keys/recipients.txt"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let payload = lifeboat_repo::id::age_payload(&out.stdout).unwrap();
    let id = lifeboat_repo::Id::of_stored(payload).to_hex();
    for r in ["us-west-2", "us-east-2"] {
        std::fs::write(ws.path(&format!("{r}/snapshots/{id}")), &out.stdout).unwrap();
    }
    let to = ws.path("restored");
    let out = run_with(
        &ws.config(),
        &[
            "restore",
            "ledger",
            "--snapshot",
            &id,
            "--to",
            to.to_str().unwrap(),
        ],
    );
    let err = exited(&out, &["restore"], 5);
    assert!(err.contains("signature"), "{err}");
    let _ = (&h.a, &h.b);
}

/// The v1 fixture's keys and repository (both regions) in a fresh workspace.
fn fixture_workspace() -> Workspace {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    for k in ["identity.txt", "writer.key", "recipients.txt"] {
        let to = ws.path(&format!("keys/{k}"));
        std::fs::copy(src.join(k), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for r in ["us-west-2", "us-east-2"] {
        let out = Command::new("cp")
            .arg("-r")
            .arg(src.join("repo"))
            .arg(ws.path(r))
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    ws
}

/// The newest manifest of region us-west-2 as writer key `key` reads it (signed JSON).
fn newest_as_writer(ws: &Workspace, key: &str, id: &str) -> (serde_json::Value, String) {
    let bytes = std::fs::read(ws.path(&format!("us-west-2/snapshots/{id}"))).unwrap();
    let plain = age_open(&ws.path(key), &bytes, &ws.path("")).expect("writer opens it");
    (
        signed_json(&plain),
        String::from_utf8_lossy(&plain).to_string(),
    )
}

#[test]
fn sealed_a_repository_without_a_details_key_works_until_upgrade_adds_one() {
    let ws = fixture_workspace();
    write(&ws.path("data/a.txt"), b"alpha\n");
    // v1 -> v2 without the details key: how a v2 repository made before it looks.
    let regions: Vec<lifeboat_repo::Region> = ["us-west-2", "us-east-2"]
        .iter()
        .map(|r| lifeboat_repo::Region {
            name: r.to_string(),
            backend: std::sync::Arc::new(lifeboat_repo::backend::LocalBackend::new(ws.path(r)))
                as lifeboat_repo::backend::DynBackend,
        })
        .collect();
    let keys = lifeboat_repo::keys::Keyring {
        recipients: Vec::new(),
        writer: Some(
            lifeboat_repo::keys::WriterKey::parse(
                &std::fs::read_to_string(ws.path("keys/writer.key")).unwrap(),
            )
            .unwrap(),
        ),
        identity: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(lifeboat_repo::upgrade::upgrade(
        &regions,
        keys,
        lifeboat_repo::upgrade::UpgradeStep::Format,
    ))
    .expect("upgrade to v2 without a details key");

    // keys list and status say why details are readable by writers.
    let list = ws.json(&["keys", "list"]);
    assert!(list["details_recipient"].is_null(), "{list}");
    assert!(
        list["details_note"]
            .as_str()
            .unwrap()
            .contains("lifeboat upgrade"),
        "{list}"
    );
    let status = ws.run(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("manifest details readable by writers: run `lifeboat upgrade`"),
        "{text}"
    );
    // Backups and restores work; the manifest is in the clear layout, as before.
    let clear = ws.json(&["backup", "app-data"])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let (m, _) = newest_as_writer(&ws, "keys/writer.key", &clear);
    assert!(m.get("details").is_none() && m.get("root").is_some(), "{m}");
    let to = ws.path("restored-clear");
    ws.ok(&["restore", "app-data", "--to", to.to_str().unwrap()]);
    assert_eq!(std::fs::read(to.join("a.txt")).unwrap(), b"alpha\n");

    // upgrade adds the key (and prints the new pin); the next manifest is sealed.
    let report = ws.json(&["upgrade"]);
    let added = report["details_key_added"]
        .as_str()
        .expect("details key added");
    assert!(
        report["pin_lines"]
            .as_str()
            .unwrap()
            .contains("repository_secrets = \"blake3:"),
        "{report}"
    );
    for r in ["us-west-2", "us-east-2"] {
        assert!(ws.path(&format!("{r}/keys/details-0001.age")).exists());
    }
    let again = ws.json(&["upgrade"]);
    assert!(
        again.get("details_key_added").is_none(),
        "idempotent: {again}"
    );
    let list = ws.json(&["keys", "list"]);
    assert_eq!(list["details_recipient"], added, "{list}");
    assert_eq!(list["details_readable_here"], true, "{list}");
    write(&ws.path("data/b.txt"), b"beta\n");
    let sealed = ws.json(&["backup", "app-data"])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let (m, text) = newest_as_writer(&ws, "keys/writer.key", &sealed);
    assert!(m.get("details").is_some() && m.get("root").is_none(), "{m}");
    assert!(!text.contains(ws.path("data").to_str().unwrap()), "{text}");
    // Both restore: the old one in the clear, the new one through the details key.
    for (id, to, has_b) in [(&clear, "r-old", false), (&sealed, "r-new", true)] {
        let to = ws.path(to);
        ws.ok(&[
            "restore",
            "app-data",
            "--snapshot",
            id,
            "--to",
            to.to_str().unwrap(),
        ]);
        assert_eq!(to.join("b.txt").exists(), has_b, "{id}");
    }
    // Without lifeboat: recover.py opens the sealed details with the identity.
    let out = ws.path("recovered");
    crate::recovery::recover_py_snapshot(&ws, &out, Some(&sealed));
    assert_eq!(std::fs::read(out.join("b.txt")).unwrap(), b"beta\n");
}
