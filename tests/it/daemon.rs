//! The daemon through the real binary: two daemons sharing a catalog never run the same
//! occurrence twice; SIGTERM stops a backup with nothing partial visible; /metrics and
//! /healthz; webhook alerts against a real HTTP receiver on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lifeboat::catalog::{Catalog, Phase, RunKind};
use serde_json::Value;

use crate::common::Workspace;
use crate::ops::{catalog_url, json, ready, rt, set_catalog, set_schedule};
use crate::pg;

pub fn spawn_daemon(ws: &Workspace, extra: &[&str]) -> Child {
    let mut args = vec!["daemon", "--tick", "200ms", "--backoff", "100ms"];
    args.extend_from_slice(extra);
    ws.cmd(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon")
}

pub fn terminate(child: &mut Child) -> (Option<i32>, String) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (st.code(), err);
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two daemons share one catalog and a schedule firing every 2 seconds.
fn two_daemons(catalog: Option<String>) {
    let ws = ready();
    if let Some(url) = &catalog {
        set_catalog(&ws, url);
    }
    set_schedule(&ws, "*/2 * * * * *");
    let url = catalog.unwrap_or_else(|| catalog_url(&ws));
    let mut a = spawn_daemon(&ws, &["--listen", "none"]);
    let mut b = spawn_daemon(&ws, &["--listen", "none"]);
    std::thread::sleep(Duration::from_secs(7));
    let (ca, ea) = terminate(&mut a);
    let (cb, eb) = terminate(&mut b);
    assert_eq!(ca, Some(0), "daemon a: {ea}");
    assert_eq!(cb, Some(0), "daemon b: {eb}");
    let runs = rt().block_on(async {
        let c = Catalog::open(&url).await.unwrap();
        c.runs(Some("app-data"), Some(RunKind::Backup), 1000)
            .await
            .unwrap()
    });
    assert!(
        runs.len() >= 2,
        "expected several runs in 7 s, got {runs:?}\n{ea}\n{eb}"
    );
    let mut occurrences: Vec<i64> = runs.iter().map(|r| r.scheduled_for.unwrap()).collect();
    let n = occurrences.len();
    occurrences.sort();
    occurrences.dedup();
    assert_eq!(occurrences.len(), n, "an occurrence ran twice: {runs:#?}");
    let hosts: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.host.as_str()).collect();
    assert!(!hosts.is_empty());
    for r in &runs {
        assert!(
            matches!(r.phase, Phase::Succeeded | Phase::Cancelled),
            "unexpected phase: {r:?}"
        );
    }
}

#[test]
fn two_daemons_on_postgres_never_run_an_occurrence_twice() {
    two_daemons(Some(pg::database()));
}

#[test]
fn two_daemons_on_sqlite_never_run_an_occurrence_twice() {
    two_daemons(None);
}

#[test]
fn sigterm_stops_a_running_backup_with_nothing_partial_visible() {
    let ws = ready();
    // Big enough that the backup is still running when the signal comes.
    let mut f = std::fs::File::create(ws.path("data/big.bin")).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for _ in 0..400 {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        f.write_all(&block).unwrap();
    }
    drop(f);
    let url = catalog_url(&ws);
    let mut d = spawn_daemon(&ws, &["--listen", "none"]);
    // Wait for the backup to start.
    let deadline = Instant::now() + Duration::from_secs(60);
    rt().block_on(async {
        loop {
            if let Ok(c) = Catalog::open(&url).await {
                if let Ok(runs) = c.runs(None, None, 10).await {
                    if runs.iter().any(|r| r.phase == Phase::Running) {
                        break;
                    }
                }
            }
            assert!(Instant::now() < deadline, "backup never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let (code, err) = terminate(&mut d);
    assert_eq!(code, Some(0), "{err}");
    let runs = rt().block_on(async {
        Catalog::open(&url)
            .await
            .unwrap()
            .runs(None, None, 10)
            .await
            .unwrap()
    });
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].phase, Phase::Cancelled, "{runs:?}\n{err}");
    let snaps = json(&ws.ok(&["snapshots", "--json"]));
    assert_eq!(
        snaps.as_array().unwrap().len(),
        0,
        "no partial snapshot: {snaps}"
    );
    // Nothing damaged: the repository verifies, and the next backup works.
    ws.ok(&["verify"]);
    ws.ok(&["backup", "app-data"]);
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Scrape `/metrics` at `addr` until the exposition contains `needle` (60 s at most).
pub fn scrape_until(addr: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = write!(s, "GET /metrics HTTP/1.1\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.contains(needle) {
                return out;
            }
        }
        assert!(Instant::now() < deadline, "metrics never showed {needle}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn daemon_serves_metrics_and_health() {
    let ws = ready();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut d = spawn_daemon(&ws, &["--listen", &addr]);
    let body = scrape_until(
        &addr,
        "lifeboat_last_success_timestamp_seconds{plan=\"app-data\"}",
    );
    for needle in [
        "# TYPE lifeboat_rpo_seconds gauge",
        "lifeboat_rpo_seconds{plan=\"app-data\"}",
        "lifeboat_rpo_target_seconds{plan=\"app-data\"} 86400",
        "lifeboat_rto_target_seconds{plan=\"app-data\"} 7200",
        "lifeboat_region_healthy{plan=\"app-data\",region=\"us-east-2\"} 1",
        "lifeboat_backup_bytes{plan=\"app-data\"}",
        "lifeboat_plan_status{plan=\"app-data\"} 1",
    ] {
        assert!(body.contains(needle), "missing {needle} in\n{body}");
    }
    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(&addr, "/nope").0, 404);
    let (code, err) = terminate(&mut d);
    assert_eq!(code, Some(0), "{err}");
}

/// An HTTP receiver on 127.0.0.1 that records every POST body.
/// Request paths and JSON bodies, in arrival order.
pub type Received = Arc<Mutex<Vec<(String, Value)>>>;

pub fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let got2 = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                        let v = serde_json::from_str(&body[..len]).unwrap_or(Value::Null);
                        got2.lock().unwrap().push((path, v));
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        );
                        break;
                    }
                }
            }
        }
    });
    (url, got)
}

#[test]
fn webhooks_fire_once_per_incident_and_when_it_clears() {
    let ws = ready();
    let (url, got) = receiver();
    let json_hook = format!("{url}/generic");
    let slack_hook = format!("{url}/slack");
    let run_due = |ws: &Workspace| {
        ws.run(&[
            "run-due",
            "--retries",
            "0",
            "--webhook",
            &json_hook,
            "--slack-webhook",
            &slack_hook,
        ])
    };
    // The source is missing: the backup fails, and there is no snapshot (RPO breach).
    std::fs::rename(ws.path("data"), ws.path("data.away")).unwrap();
    let out = run_due(&ws);
    assert_eq!(out.status.code(), Some(1));
    let first: Vec<(String, Value)> = got.lock().unwrap().clone();
    let generic: Vec<&Value> = first
        .iter()
        .filter(|(p, _)| p == "/generic")
        .map(|(_, v)| v)
        .collect();
    let mut kinds: Vec<&str> = generic
        .iter()
        .map(|v| v["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(kinds, vec!["rpo_breach", "run_failed"], "{first:?}");
    assert!(generic
        .iter()
        .all(|v| v["event"] == "firing" && v["plan"] == "app-data"));
    let slack: Vec<&Value> = first
        .iter()
        .filter(|(p, _)| p == "/slack")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(slack.len(), 2);
    assert!(slack
        .iter()
        .all(|v| v["text"].as_str().unwrap().contains("app-data")));

    // Still broken: no new notification.
    run_due(&ws);
    assert_eq!(
        got.lock().unwrap().len(),
        4,
        "one notification per incident"
    );

    // Fixed: both incidents clear, once.
    std::fs::rename(ws.path("data.away"), ws.path("data")).unwrap();
    ws.ok(&["backup", "app-data"]);
    let out = run_due(&ws);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = got.lock().unwrap().clone();
    let resolved: Vec<&Value> = all[4..]
        .iter()
        .filter(|(p, _)| p == "/generic")
        .map(|(_, v)| v)
        .collect();
    let mut kinds: Vec<&str> = resolved
        .iter()
        .map(|v| v["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(kinds, vec!["rpo_breach", "run_failed"], "{all:?}");
    assert!(resolved.iter().all(|v| v["event"] == "resolved"));
    run_due(&ws);
    assert_eq!(got.lock().unwrap().len(), 8, "nothing more once cleared");
}

#[test]
fn daemon_sync_notices_a_region_losing_a_snapshot() {
    let ws = ready();
    ws.ok(&["backup", "app-data"]);
    let status = || {
        json(&String::from_utf8_lossy(
            &ws.run(&["status", "--json"]).stdout,
        ))
    };
    assert_eq!(status()["plans"][0]["regions"][1]["health"], "ok");
    // us-east-2 loses the snapshot behind lifeboat's back.
    for entry in std::fs::read_dir(ws.path("us-east-2/snapshots")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let mut d = spawn_daemon(&ws, &["--listen", "none", "--sync-every", "1s"]);
    // The sync notices (the region shows degraded), and healing then copies the snapshot
    // back: either state may be the one status shows when it is read, the end is healed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = status();
        if v["plans"][0]["regions"][1]["health"] == "degraded" {
            assert_eq!(v["plans"][0]["rpo"]["level"], "breach", "{v}");
        }
        let back = std::fs::read_dir(ws.path("us-east-2/snapshots"))
            .unwrap()
            .count()
            > 0;
        if back && v["plans"][0]["regions"][1]["health"] == "ok" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon's sync never noticed (and healing never restored): {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, err) = terminate(&mut d);
    assert_eq!(code, Some(0), "{err}");
}
