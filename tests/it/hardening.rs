//! The host side of "nothing lost across faults": hung children are killed by the run's
//! timeout and by SIGTERM (the lease is released, nothing partial is kept); children never
//! see lifeboat's secret variables; a secret file others can read is refused with the
//! `chmod` that fixes it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat::catalog::{Catalog, Phase, RunKind};

use crate::common::Workspace;
use crate::ops::{catalog_url, rt};

/// A marker no other process on the machine has on its command line.
fn marker() -> String {
    format!(
        "lifeboat-hang-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A command that blocks forever without output, in a child of its own (`sh` forks the
/// `sleep`, so only a process-group kill stops both). `exec -a` names the sleep `marker`.
fn hanging_command(marker: &str) -> String {
    format!("[\"bash\", \"-c\", \"(exec -a {marker} sleep 1000); true\"]")
}

/// Processes whose command line contains `marker`.
fn alive(marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(marker) && !text.contains("bash -c") {
                out.push(format!("{}: {text}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// Wait for `child`, killing it and failing the test after `limit`.
fn wait_within(mut child: Child, limit: Duration, what: &str) -> (Option<i32>, String, Duration) {
    use std::io::Read;
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut text = String::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut text);
            }
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut text);
            }
            return (st.code(), text, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Send SIGTERM to `child`.
fn sigterm(child: &Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Once the hanging command named `marker` runs, SIGTERM `child` (lifeboat): it must stop
/// within seconds and take the command's whole process group with it. Its exit code and
/// output.
fn stops_on_sigterm(child: Child, marker: &str, what: &str) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{what}: the command never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm(&child);
    let (code, text, took) = wait_within(child, Duration::from_secs(30), what);
    assert!(
        took < Duration::from_secs(10),
        "{what} stopped after {took:?}: {text}"
    );
    assert!(
        alive(marker).is_empty(),
        "{what}: the command survived: {:?}",
        alive(marker)
    );
    (code, text)
}

fn add_plan(ws: &Workspace, name: &str, source: &str, extra: &str) {
    ws.edit_config(|c| {
        format!("{c}\n[[plans]]\nname = \"{name}\"\nsource = {{ {source} }}\n{extra}")
    });
}

fn runs(ws: &Workspace, plan: &str) -> Vec<lifeboat::catalog::RunRecord> {
    let url = catalog_url(ws);
    rt().block_on(async {
        Catalog::open(&url)
            .await
            .unwrap()
            .runs(Some(plan), Some(RunKind::Backup), 100)
            .await
            .unwrap()
    })
}

fn lease_is_free(ws: &Workspace, plan: &str) -> bool {
    let url = catalog_url(ws);
    rt().block_on(async {
        let c = Catalog::open(&url).await.unwrap();
        let now = lifeboat::host::now_secs();
        c.acquire_lease(plan, "test-probe", now, now + 5)
            .await
            .unwrap()
    })
}

/// A workspace whose plan `hang` (due at once) backs up a command that hangs; the marker.
fn hanging_plan() -> (Workspace, String) {
    let ws = Workspace::new();
    ws.init();
    let m = marker();
    add_plan(
        &ws,
        "hang",
        &format!(
            "kind = \"command\", command = {}, restore_command = [\"true\"]",
            hanging_command(&m)
        ),
        "schedule = \"0 0 1 1 *\"\n",
    );
    (ws, m)
}

#[test]
fn a_command_that_hangs_without_output_is_killed_by_the_run_timeout() {
    let (ws, m) = hanging_plan();
    let child = ws
        .cmd(&["run-due", "--timeout", "2s", "--retries", "0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, text, took) = wait_within(child, Duration::from_secs(60), "run-due");
    assert_eq!(code, Some(1), "{text}");
    assert!(took < Duration::from_secs(30), "took {took:?}: {text}");
    assert!(text.contains("timed out after 2s"), "{text}");
    let hang = runs(&ws, "hang");
    assert_eq!(hang.len(), 1, "{hang:?}");
    assert_eq!(hang[0].phase, Phase::Failed, "{hang:?}");
    assert!(
        alive(&m).is_empty(),
        "the command's process group survived: {:?}",
        alive(&m)
    );
    assert!(
        lease_is_free(&ws, "hang"),
        "the plan lease was not released"
    );
    // Nothing partial: no snapshot of the plan, and the repository verifies.
    assert_eq!(
        ws.json(&["snapshots", "--plan", "hang"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    ws.ok(&["verify"]);
}

#[test]
fn sigterm_stops_the_daemon_within_seconds_while_a_command_hangs() {
    let (ws, m) = hanging_plan();
    let d = ws
        .cmd(&["daemon", "--tick", "200ms", "--listen", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, text) = stops_on_sigterm(d, &m, "daemon");
    assert_eq!(code, Some(0), "{text}");
    let hang = runs(&ws, "hang");
    assert_eq!(hang.len(), 1, "{hang:?}");
    assert_eq!(hang[0].phase, Phase::Cancelled, "{hang:?}\n{text}");
    assert!(
        lease_is_free(&ws, "hang"),
        "the plan lease was not released"
    );
}

const SECRET_VALUES: [(&str, &str); 4] = [
    (
        "LIFEBOAT_WEBHOOK_URL",
        "https://hooks.example/secret-token-8812",
    ),
    (
        "LIFEBOAT_SLACK_WEBHOOK_URL",
        "https://slack.example/secret-token-9923",
    ),
    ("LB_TEST_DB_PASSWORD", "db-password-7734"),
    ("LB_TEST_WRITER_KEY", ""),
];

#[test]
fn children_get_an_environment_without_lifeboats_secrets() {
    let ws = Workspace::new();
    ws.init();
    // The writer key by variable, a database password by variable (another plan's).
    let writer_key = std::fs::read_to_string(ws.path("keys/writer.key")).unwrap();
    ws.edit_config(|c| {
        c.lines()
            .map(|l| {
                if l.starts_with("writer_key_file") {
                    "writer_key_env = \"LB_TEST_WRITER_KEY\"".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    add_plan(
        &ws,
        "db",
        "kind = \"postgres\", url = \"postgres://app@127.0.0.1:1/app\", password_env = \"LB_TEST_DB_PASSWORD\"",
        "",
    );
    let restored_env = ws.path("restore-env.txt");
    add_plan(
        &ws,
        "envdump",
        &format!(
            "kind = \"command\", command = [\"env\"], restore_command = [\"sh\", \"-c\", \"cat >/dev/null; env > {}\"]",
            restored_env.display()
        ),
        "",
    );
    let with_secrets = |args: &[&str]| {
        let mut c = ws.cmd(args);
        for (k, v) in SECRET_VALUES {
            c.env(k, if v.is_empty() { writer_key.trim() } else { v });
        }
        c.env("LB_TEST_HARMLESS", "visible-4411");
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    with_secrets(&["backup", "envdump"]);
    let dumped = ws.path("dumped-env.txt");
    with_secrets(&["restore", "envdump", "--to", dumped.to_str().unwrap()]);
    with_secrets(&["restore", "envdump"]);
    for (what, file) in [
        ("command source", &dumped),
        ("restore_command", &restored_env),
    ] {
        let env = std::fs::read_to_string(file).unwrap();
        assert!(
            env.contains("LB_TEST_HARMLESS=visible-4411"),
            "{what}: {env}"
        );
        for (k, v) in SECRET_VALUES {
            assert!(!env.contains(&format!("{k}=")), "{what} saw {k}: {env}");
            if !v.is_empty() {
                assert!(!env.contains(v), "{what} saw {k}'s value");
            }
        }
        assert!(
            !env.contains(writer_key.trim()),
            "{what} saw the writer key"
        );
    }
}

#[test]
fn a_key_file_others_can_read_is_refused_with_the_chmod() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new();
    ws.init();
    let key = ws.path("keys/writer.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = ws.fails(&["backup", "app-data"], 5);
    assert!(
        text.contains(&format!("chmod 600 {}", key.display())),
        "{text}"
    );
    assert!(text.contains("mode 0644"), "{text}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    ws.ok(&["backup", "app-data"]);
}

#[test]
fn a_panicked_daemon_run_is_recorded_as_failed_and_the_plan_runs_again() {
    let ws = crate::ops::ready();
    crate::ops::set_schedule(&ws, "*/2 * * * * *");
    let trigger = ws.path("panic-once");
    std::fs::write(&trigger, b"").unwrap();
    let d = ws
        .cmd(&[
            "daemon",
            "--tick",
            "200ms",
            "--backoff",
            "100ms",
            "--retries",
            "0",
            "--listen",
            "none",
        ])
        .env("LIFEBOAT_TEST_PANIC_ONCE", &trigger)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let r = runs(&ws, "app-data");
        if r.iter().any(|r| r.phase == Phase::Succeeded)
            && r.iter().any(|r| r.phase == Phase::Failed)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed run followed by a good one: {r:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    sigterm(&d);
    let (code, text, _) = wait_within(d, Duration::from_secs(30), "daemon after SIGTERM");
    assert_eq!(code, Some(0), "{text}");
    assert!(!trigger.exists(), "the fault never fired");
    let r = runs(&ws, "app-data");
    let failed: Vec<_> = r.iter().filter(|r| r.phase == Phase::Failed).collect();
    assert_eq!(failed.len(), 1, "{r:#?}");
    let error = failed[0].error.as_deref().unwrap_or_default();
    assert!(
        error.contains("panicked") && error.contains("LIFEBOAT_TEST_PANIC_ONCE"),
        "{error}"
    );
    assert!(failed[0].ended_at.is_some(), "{r:#?}");
    assert!(
        !r.iter().any(|r| r.phase == Phase::Running),
        "a run was left running: {r:#?}"
    );
}

/// Run lifeboat as root without the capabilities that let root read every file, so file
/// permissions apply to it as to any user.
pub(crate) fn without_dac(ws: &Workspace, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--bounding-set=-dac_override,-dac_read_search", "--"])
        .arg(crate::common::bin())
        .arg("--config")
        .arg(ws.config())
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

#[test]
fn unreadable_entries_are_skipped_and_the_snapshot_is_committed_partial() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new();
    crate::common::write(&ws.path("data/a.txt"), b"alpha\n");
    crate::common::write(&ws.path("data/secret.bin"), b"no one may read this\n");
    crate::common::write(&ws.path("data/locked/inner.txt"), b"inner\n");
    crate::common::write(&ws.path("data/z.txt"), b"zulu\n");
    ws.init();
    let secret = ws.path("data/secret.bin");
    let locked = ws.path("data/locked");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = without_dac(&ws, &["backup", "app-data", "--json"]);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "partial backup: {stderr}");
    assert!(
        stderr.contains("PARTIAL: 2 entries could not be read"),
        "{stderr}"
    );
    for p in [&secret, &locked] {
        assert!(
            stderr.contains(&format!("{}: ", p.display())),
            "{p:?} not named: {stderr}"
        );
    }
    assert!(stderr.contains("permission denied"), "{stderr}");
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["partial"], true, "{b}");
    assert_eq!(b["degraded"], false, "every region holds it: {b}");
    assert_eq!(b["unreadable"].as_array().unwrap().len(), 2, "{b}");

    // Committed in both regions, marked partial in the listing and in status.
    let list = ws.json(&["snapshots"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["complete"], true, "{list}");
    assert_eq!(list[0]["partial"], true, "{list}");
    let text = ws.ok(&["snapshots"]);
    assert!(text.contains("PARTIAL: 2 unreadable"), "{text}");
    let out = ws.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let note = status.to_string();
    assert!(note.contains("is partial"), "{status}");

    // Everything readable is in it.
    let to = ws.path("restored");
    ws.ok(&["restore", "app-data", "--to", to.to_str().unwrap()]);
    assert_eq!(std::fs::read(to.join("a.txt")).unwrap(), b"alpha\n");
    assert_eq!(std::fs::read(to.join("z.txt")).unwrap(), b"zulu\n");
    assert!(!to.join("secret.bin").exists());
    ws.ok(&["verify"]);

    // Readable again: the next backup is whole (exit 0) and holds the file.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = without_dac(&ws, &["backup", "app-data", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = ws.json(&["snapshots"]);
    assert_eq!(list[1]["partial"], false, "{list}");
}

/// A snapshot committed with a manifest dated `ahead` seconds in the future, as a backup
/// host with a fast clock (or a forger) would write it.
fn commit_future_snapshot(ws: &Workspace, ahead: i64) -> String {
    use lifeboat_repo::snapshot::{Manifest, SourceInfo, MANIFEST_VERSION};
    use std::sync::Arc;
    let config = lifeboat::config::Config::load(&ws.config()).unwrap();
    rt().block_on(async move {
        let repo = lifeboat::engine::open(&config, lifeboat::engine::KeyNeed::Write, None)
            .await
            .unwrap();
        let index = Arc::new(repo.load_index().await.unwrap());
        let handle = tokio::runtime::Handle::current();
        let targets: Vec<usize> = (0..repo.regions.len()).collect();
        tokio::task::spawn_blocking(move || {
            let mut w = lifeboat_repo::writer::BackupWriter::start(
                repo,
                index,
                "app-data",
                &targets,
                handle,
                lifeboat_repo::Cancel::new(),
                Arc::new(lifeboat_repo::Progress::default()),
            )
            .unwrap();
            let root = w
                .add_tree(&mut lifeboat_repo::tree::Tree::default())
                .unwrap();
            let time = lifeboat::host::now_secs() + ahead;
            let manifest = Manifest {
                version: MANIFEST_VERSION,
                plan: "app-data".into(),
                host: "fast-clock".into(),
                time,
                end_time: time + 1,
                committed_ns: 0,
                source: SourceInfo {
                    kind: "dir".into(),
                    location: "/elsewhere".into(),
                },
                root,
                stats: Default::default(),
                probes: Default::default(),
                unreadable: Vec::new(),
                sealed: false,
                details_error: None,
            };
            w.finish(manifest).unwrap().snapshot.to_hex()
        })
        .await
        .unwrap()
    })
}

#[test]
fn a_snapshot_dated_in_the_future_is_flagged_and_does_not_count_for_the_rpo() {
    let ws = crate::ops::ready();
    ws.ok(&["backup", "app-data"]);
    let honest = ws.json(&["snapshots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let future = commit_future_snapshot(&ws, 3 * 3600);
    ws.ok(&["catalog", "sync"]);

    let out = ws.run(&["verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains(&future[..8]) && warnings.contains("in the future"),
        "{report}"
    );
    assert!(!warnings.contains(&honest[..8]), "{report}");

    let out = ws.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plan = status
        .as_array()
        .or_else(|| status["plans"].as_array())
        .and_then(|a| a.iter().find(|p| p["plan"] == "app-data"))
        .unwrap_or_else(|| panic!("{status}"))
        .clone();
    assert_eq!(plan["rpo"]["snapshot"], honest.as_str(), "{plan}");
    assert!(
        plan["rpo"]["note"]
            .as_str()
            .unwrap()
            .contains("in the future"),
        "{plan}"
    );
    assert_ne!(plan["rpo"]["level"], "ok", "{plan}");
}

fn replicate_runs(ws: &Workspace) -> Vec<lifeboat::catalog::RunRecord> {
    let url = catalog_url(ws);
    rt().block_on(async {
        Catalog::open(&url)
            .await
            .unwrap()
            .runs(None, Some(RunKind::Replicate), 100)
            .await
            .unwrap()
    })
}

#[test]
fn run_due_heals_a_region_that_missed_a_backup_once_it_answers_with_backoff() {
    let ws = crate::ops::ready();
    let east = ws.region("us-east-2");
    let away = ws.path("us-east-2.unplugged");
    std::fs::rename(&east, &away).unwrap();
    let text = ws.fails(&["backup", "app-data"], 3);
    assert!(text.contains("DEGRADED"), "{text}");
    let degraded = ws.json(&["snapshots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Still down: run-due tries to heal, fails, and then waits (backoff) before trying again.
    let out = ws.run(&["run-due", "--backoff", "1h", "--retries", "0", "--json"]);
    assert!(out.status.code().is_some(), "{out:?}");
    let heals = replicate_runs(&ws);
    assert_eq!(heals.len(), 1, "one heal attempt: {heals:#?}");
    assert_ne!(heals[0].phase, Phase::Succeeded, "{heals:#?}");
    ws.run(&["run-due", "--backoff", "1h", "--retries", "0"]);
    assert_eq!(replicate_runs(&ws).len(), 1, "retried within the backoff");

    // The region answers again: the next run-due (short backoff) heals it.
    std::fs::rename(&away, &east).unwrap();
    // (The backoff counts from the failed attempt's end, in whole seconds.)
    std::thread::sleep(Duration::from_millis(2100));
    ws.ok(&["run-due", "--backoff", "1s", "--retries", "0"]);
    let heals = replicate_runs(&ws);
    assert_eq!(heals.len(), 2, "{heals:#?}");
    assert_eq!(heals[0].phase, Phase::Succeeded, "{heals:#?}");
    let list = ws.json(&["snapshots"]);
    let first = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == degraded.as_str())
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(first["complete"], true, "{list}");
    assert_eq!(
        first["regions"],
        serde_json::json!(["us-west-2", "us-east-2"]),
        "{list}"
    );
    for s in list.as_array().unwrap() {
        assert_eq!(s["complete"], true, "{list}");
    }
    // The catalog knows, so nothing is left to heal and the RPO counts it.
    ws.ok(&["run-due"]);
    assert_eq!(replicate_runs(&ws).len(), 2, "healed twice");
    ws.ok(&["verify"]);
}

#[test]
fn sigterm_stops_a_restore_whose_restore_command_hangs() {
    let ws = Workspace::new();
    ws.init();
    let m = marker();
    // Reads nothing and never exits: the stream blocks on a full pipe.
    add_plan(
        &ws,
        "stuck",
        &format!(
            "kind = \"command\", command = [\"head\", \"-c\", \"1000000\", \"/dev/zero\"], restore_command = {}",
            hanging_command(&m)
        ),
        "",
    );
    ws.ok(&["backup", "stuck"]);
    let child = ws
        .cmd(&["restore", "stuck"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, text) = stops_on_sigterm(child, &m, "restore");
    assert_eq!(code, Some(130), "{text}");
}
