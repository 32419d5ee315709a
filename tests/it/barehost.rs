//! Restore from nothing: a new host that holds only the identity and the bucket names.
//! Read-only commands work with a config of just `[keys] identity_file` and `[[regions]]`
//! (recipients and the writer key come from the repository, plans from the manifests), and
//! `restore` works with no config file at all (`--region NAME=URL --identity FILE`), in a
//! fresh directory, creating no catalog. Each region kind: local, and S3 (s3s-fs servers).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{bin, write, Workspace};
use crate::servers::aws_env;

/// A host with nothing: an empty working directory and an empty HOME (so no default
/// config, cache or catalog can be found), and no LIFEBOAT_* variables.
struct BareHost {
    dir: tempfile::TempDir,
}

impl BareHost {
    fn new() -> BareHost {
        let host = BareHost {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(host.home()).unwrap();
        host
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.home())
            .env_remove("XDG_CACHE_HOME")
            .env_remove("LIFEBOAT_CONFIG")
            .env_remove("LIFEBOAT_LOG");
        aws_env(&mut cmd).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        crate::common::succeeded(args, self.run(args))
    }

    /// Every file under the host's directory whose name ends with `suffix`.
    fn files_ending(&self, suffix: &str) -> Vec<PathBuf> {
        crate::servers::files_under(self.dir.path())
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect()
    }
}

/// A source tree with a nested file and a symlink, backed up as plan `app-data`.
fn fill(ws: &Workspace) {
    write(&ws.path("data/a.txt"), b"first file\n");
    write(&ws.path("data/deep/b/c.bin"), &vec![7u8; 300_000]);
    std::os::unix::fs::symlink("a.txt", ws.path("data/link")).unwrap();
}

fn assert_restored(dir: &Path) {
    assert_eq!(std::fs::read(dir.join("a.txt")).unwrap(), b"first file\n");
    assert_eq!(
        std::fs::read(dir.join("deep/b/c.bin")).unwrap(),
        vec![7u8; 300_000]
    );
    assert_eq!(
        std::fs::read_link(dir.join("link")).unwrap(),
        Path::new("a.txt")
    );
}

/// The `[[regions]]` tables of `config` (the backup host's), copied as they are.
fn region_tables(config: &Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let start = text.find("[[regions]]").unwrap();
    let end = text.find("[[plans]]").unwrap_or(text.len());
    text[start..end].to_string()
}

/// The read-only commands on a bare host, first with a config of only the identity and the
/// regions, then with no config at all. `region_args` are the `--region` values.
fn restore_from_nothing(ws: &Workspace, region_args: &[String]) {
    let host = BareHost::new();
    std::fs::copy(ws.path("keys/identity.txt"), host.path("identity.txt")).unwrap();

    // 1. Only [keys] identity_file and [[regions]]; plan app-data is not declared.
    let config = host.path("restore.toml");
    std::fs::write(
        &config,
        format!(
            "[keys]\nidentity_file = \"identity.txt\"\n\n{}",
            region_tables(&ws.config())
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let listed = host.ok(&["--config", c, "snapshots", "--plan", "app-data", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["plan"], "app-data");
    host.ok(&["--config", c, "restore", "app-data", "--to", "out1"]);
    assert_restored(&host.path("out1"));
    let verified = host.ok(&["--config", c, "verify", "--read-data"]);
    assert!(verified.contains("verify: ok"), "{verified}");
    let synced = host.ok(&["--config", c, "catalog", "sync"]);
    assert!(synced.contains("2 snapshots"), "{synced}");
    // A plan that is neither declared nor in the repository is named, with those that are.
    let out = host.run(&["--config", c, "restore", "nope", "--to", "out-x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no plan \"nope\""), "{err}");
    assert!(err.contains("its plans: app-data"), "{err}");
    // Backups still need what a backup host has, and say so.
    let out = host.run(&["--config", c, "init"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("keys.recipients: none configured"), "{err}");

    // 2. No config file at all: a fresh directory, nothing but the identity.
    let host = BareHost::new();
    std::fs::copy(ws.path("keys/identity.txt"), host.path("identity.txt")).unwrap();
    let mut args: Vec<&str> = Vec::new();
    for r in region_args {
        args.extend(["--region", r.as_str()]);
    }
    let with = |rest: &[&'static str]| {
        let mut a = args.clone();
        a.extend(["--identity", "identity.txt"]);
        a.extend_from_slice(rest);
        a
    };
    let listed = host.ok(&with(&["snapshots"]));
    assert!(listed.contains("app-data"), "{listed}");
    let restored = host.ok(&with(&["restore", "app-data", "--to", "out2"]));
    assert!(restored.contains("every file verified"), "{restored}");
    assert_restored(&host.path("out2"));
    // The stream plan, not declared anywhere on this host, comes back into a file.
    host.ok(&with(&["restore", "app-stream", "--to", "stream.out"]));
    assert_eq!(
        std::fs::read(host.path("stream.out")).unwrap(),
        b"a stream of bytes\n"
    );
    assert!(
        host.files_ending(".db").is_empty() && host.files_ending(".db-wal").is_empty(),
        "a config-less restore created a catalog: {:?}",
        host.files_ending(".db")
    );
    assert!(!host.path("lifeboat.toml").exists());
    // A command that records history needs a catalog, which the command line has not.
    let out = host.run(&with(&["status"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("give a config file with --config"), "{err}");
    // Without the identity nothing can be decrypted; the message says what is missing.
    let mut no_identity = args.clone();
    no_identity.extend(["restore", "app-data", "--to", "out3"]);
    let out = host.run(&no_identity);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!host.path("out3").exists());
}

/// Backs up `app-data` and a command plan `app-stream` on the backup host.
fn back_up(ws: &Workspace, run: impl Fn(&[&str]) -> String) {
    fill(ws);
    ws.edit_config(|c| {
        format!("{c}\n[[plans]]\nname = \"app-stream\"\nsource = {{ kind = \"command\", command = [\"printf\", \"a stream of bytes\\\\n\"], restore_command = [\"cat\"] }}\n")
    });
    run(&["backup", "app-data"]);
    run(&["backup", "app-stream"]);
}

#[test]
fn bare_host_restores_from_local_regions() {
    let ws = Workspace::new();
    ws.init();
    back_up(&ws, |a| ws.ok(a));
    let regions = [
        format!("us-west-2=local:{}", ws.region("us-west-2").display()),
        format!("us-east-2=local:{}", ws.region("us-east-2").display()),
    ];
    restore_from_nothing(&ws, &regions);
    // One region alone is enough (the other may be the one that burned).
    let host = BareHost::new();
    let identity = ws.path("keys/identity.txt");
    host.ok(&[
        "--region",
        &regions[1],
        "--identity",
        identity.to_str().unwrap(),
        "restore",
        "app-data",
        "--to",
        "only-east",
    ]);
    assert_restored(&host.path("only-east"));
}

#[test]
fn bare_host_restores_from_s3_regions() {
    let t = crate::s3::two_regions("20s");
    let ws = &t.ws;
    back_up(ws, |a| crate::servers::ok(ws, a));
    let regions = [
        format!(
            "us-west-2=s3://lifeboat-usw2/lifeboat/test?endpoint={}",
            t.west_proxy.endpoint()
        ),
        format!(
            "us-east-2=s3://lifeboat-use2/lifeboat/test?endpoint={}",
            t.east_proxy.endpoint()
        ),
    ];
    restore_from_nothing(ws, &regions);
}

#[test]
fn region_arguments_are_checked_like_config_tables() {
    let host = BareHost::new();
    let out = host.run(&[
        "--region",
        "dr=s3://Not_A_Bucket",
        "restore",
        "app",
        "--to",
        "x",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--region dr=s3://Not_A_Bucket: bucket: invalid bucket name"),
        "{err}"
    );
    let out = host.run(&[
        "--config",
        "x.toml",
        "--region",
        "dr=local:/tmp",
        "snapshots",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not both"), "{err}");
}
