//! DR drills end to end with the real binary: every shipped runbook passes on local regions
//! (a directory plan and a real PostgreSQL plan); `region-outage` on two S3 test servers
//! with us-west-2 simulated down; a missed RTO exits 4 with the failed step and the cleanup
//! in the report; SIGTERM mid-drill runs cleanup and records the drill as interrupted; a gate
//! without approval fails; malformed runbooks name file, line and key; the HTML report is
//! well-formed with its timeline; `catalog sync` brings drill history back; `status` exits 0
//! after backup + restore test + drill.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{write, Workspace};
use crate::pg::{self, psql};

fn runbook(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("runbooks")
        .join(format!("{name}.toml"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A workspace with data, both regions initialised and one backup of `app-data`.
fn backed_up() -> Workspace {
    let ws = Workspace::new();
    ws.init();
    write(&ws.path("data/docs/a.txt"), b"alpha\n");
    write(&ws.path("data/docs/b.txt"), &vec![7u8; 200_000]);
    write(&ws.path("data/c.bin"), b"gamma");
    ws.ok(&["backup", "app-data"]);
    ws
}

/// The report of the newest drill, as JSON.
fn latest_report(ws: &Workspace) -> serde_json::Value {
    let out = ws.ok(&["drill", "report", "latest", "--format", "json"]);
    serde_json::from_str(&out).expect("report JSON")
}

fn step<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {report:#}"))
}

fn all_removed(report: &serde_json::Value) {
    let ledger = report["cleanup"].as_array().unwrap();
    assert!(!ledger.is_empty(), "the drill created nothing? {report:#}");
    for c in ledger {
        assert_eq!(c["removed"], true, "not cleaned up: {c}");
    }
}

#[test]
fn drill_every_shipped_runbook_passes_on_local_regions_and_status_is_healthy() {
    let db = pg::database();
    psql(&db, "CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 50) g;");
    let ws = backed_up();
    ws.edit_config(|c| format!("{c}\n[[plans]]\nname = \"appdb\"\nsource = {{ kind = \"postgres\", url = \"{db}\", allow_scratch_on_source = true }}\n"));
    ws.ok(&["backup", "appdb"]);
    ws.ok(&["verify", "--restore"]);
    let names = [
        "region-outage",
        "annual-full-restore",
        "postgres-restore",
        "bare-host",
    ];
    let paths: Vec<PathBuf> = names.iter().map(|n| runbook(n)).collect();
    let mut args = vec!["drill", "validate"];
    args.extend(paths.iter().map(|p| s(p)));
    ws.ok(&args);
    let plan = ws.ok(&["drill", "plan", s(&paths[0])]);
    assert!(
        plan.contains("region us-west-2 fails in-process") && plan.contains("nothing was changed"),
        "{plan}"
    );
    for (name, path) in names.iter().zip(&paths) {
        let v = ws.json(&[
            "drill",
            "run",
            s(path),
            "--approve-all",
            "--approver",
            "tester",
        ]);
        let r = &v["report"];
        assert_eq!(r["result"], "passed", "{name}: {r:#}");
        all_removed(r);
        assert!(Path::new(v["html"].as_str().unwrap()).exists());
        match *name {
            "region-outage" => {
                assert_eq!(r["simulated_down"][0], "us-west-2");
                let read = step(r, "restore")["outputs"]["regions_read"]
                    .as_str()
                    .unwrap()
                    .to_string();
                assert!(
                    read.starts_with("us-east-2:") && !read.contains("us-west-2"),
                    "{read}"
                );
                assert_eq!(r["approvals"][0]["approver"], "tester");
                assert_eq!(r["rto"]["met"], true);
                assert_eq!(r["rpo"].as_array().unwrap().len(), 2, "both plans");
                assert!(r["runbook"]["sha256"].as_str().unwrap().len() == 64);
            }
            "postgres-restore" => {
                assert_eq!(r["plans"], serde_json::json!(["appdb"]));
                assert_eq!(step(r, "tables")["outputs"]["value"], "1");
                assert_eq!(step(r, "verify")["outputs"]["appdb.rows"], "50");
            }
            "bare-host" => {
                let files = step(r, "verify")["outputs"]["app-data.files"]
                    .as_str()
                    .unwrap()
                    .to_string();
                assert_eq!(files, "3");
            }
            _ => {}
        }
    }
    // Scratch databases were dropped.
    let admin = format!("{}/postgres", db.rsplit_once('/').unwrap().0);
    assert_eq!(
        psql(
            &admin,
            "select count(*) from pg_database where datname like 'lifeboat_drill_%'"
        ),
        "0"
    );
    let out = ws.ok(&["status"]);
    assert!(
        // Drills that end in the same second tie on time: any of them may be "last".
        out.contains("last drill ") && out.contains("PASSED"),
        "{out}"
    );
    let list = ws.ok(&["drill", "list", "--dir", s(paths[0].parent().unwrap())]);
    assert!(
        list.contains("region-outage") && list.contains("PASSED"),
        "{list}"
    );
    // Drill start, approval and end are in the audit trail.
    let audit = ws.ok(&["audit"]);
    for what in [
        "drill start region-outage-",
        "drill approve region-outage-",
        "drill end region-outage-",
    ] {
        assert!(audit.contains(what), "{what} not audited:\n{audit}");
    }
}

#[test]
fn drill_region_outage_on_two_s3_servers_reads_only_us_east_2() {
    let t = crate::s3::two_regions("20s");
    let ws = &t.ws;
    write(&ws.path("data/a.txt"), b"over s3\n");
    crate::servers::ok(ws, &["backup", "app-data"]);
    let out = crate::servers::ok(
        ws,
        &[
            "drill",
            "run",
            s(&runbook("region-outage")),
            "--approve-all",
            "--approver",
            "ci",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let r = &v["report"];
    assert_eq!(r["result"], "passed", "{r:#}");
    let read = step(r, "restore")["outputs"]["regions_read"]
        .as_str()
        .unwrap();
    assert!(
        read.starts_with("us-east-2:") && !read.contains("us-west-2"),
        "{read}"
    );
    // The report is in both buckets (the simulated outage ended with the drill).
    let id = r["id"].as_str().unwrap();
    for (server, bucket) in [(&t.west, "lifeboat-usw2"), (&t.east, "lifeboat-use2")] {
        let obj = server
            .bucket_dir(bucket)
            .join("lifeboat/test/drills")
            .join(id);
        assert!(obj.exists(), "{} missing", obj.display());
    }
}

const FAST: &str = r#"
[runbook]
id = "fast"
scenario = "test"
frequency = "1d"

[objectives]
rto = "1s"

[[step]]
id = "declare"
kind = "declare"
simulate = "region_down:us-west-2"

[[step]]
id = "slow"
kind = "wait"
duration = "1500ms"

[[step]]
id = "restore"
kind = "restore"
region = "us-east-2"

[[step]]
id = "verify"
kind = "verify"
on = "restore"

[[step]]
id = "objectives"
kind = "assert"
rto = true
"#;

#[test]
fn drill_a_missed_rto_exits_4_names_the_step_and_cleans_up() {
    let ws = backed_up();
    let rb = ws.path("fast.toml");
    std::fs::write(&rb, FAST).unwrap();
    let out = ws.fails(&["drill", "run", s(&rb)], 4);
    assert!(
        out.contains("FAILED") && out.contains("objectives"),
        "{out}"
    );
    let r = latest_report(&ws);
    assert_eq!(r["result"], "failed");
    let failed = step(&r, "objectives");
    assert_eq!(failed["result"], "failed");
    assert!(
        failed["error"].as_str().unwrap().contains("RTO"),
        "{failed}"
    );
    assert_eq!(r["rto"]["met"], false);
    all_removed(&r);
    let md = ws.ok(&["drill", "report", "latest"]);
    assert!(
        md.contains("## Cleanup ledger") && md.contains("step objectives failed"),
        "{md}"
    );
    // A failed drill shows as failed in status, not as "never".
    let st = ws.run(&["status"]);
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        text.contains("drill fast-") && text.contains("failed"),
        "{text}"
    );
}

#[test]
fn drill_sigterm_runs_cleanup_and_records_the_drill_as_interrupted() {
    let ws = backed_up();
    let marker = ws.path("cleanup-ran");
    let rb = ws.path("long.toml");
    std::fs::write(
        &rb,
        format!(
            r#"
[runbook]
id = "long"
scenario = "interrupted"
frequency = "1d"

[[step]]
id = "declare"
kind = "declare"
simulate = "region_down:us-west-2"

[[step]]
id = "restore"
kind = "restore"

[[step]]
id = "hold"
kind = "wait"
duration = "60s"

[[cleanup]]
id = "mark"
kind = "command"
run = ["touch", "{}"]
"#,
            s(&marker)
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = ws
        .cmd(&["drill", "run", s(&rb), "--progress"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines
            .next()
            .expect("stderr ended before the wait step")
            .unwrap();
        if line.contains("step hold (wait) started") {
            break;
        }
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the wait was not cancelled"
    );
    assert!(marker.exists(), "the cleanup step did not run: {rest:?}");
    let r = latest_report(&ws);
    assert_eq!(r["result"], "interrupted");
    assert_eq!(step(&r, "hold")["result"], "cancelled");
    all_removed(&r);
    let scratch = ws.path("cache/drills");
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

#[test]
fn drill_a_gate_without_approval_times_out_and_fails() {
    let ws = backed_up();
    let rb = ws.path("gate.toml");
    std::fs::write(
        &rb,
        "[runbook]\nid = \"gate\"\nscenario = \"g\"\nfrequency = \"1d\"\n\n[[step]]\nid = \"go\"\nkind = \"approve\"\ntimeout = \"1s\"\n\n[[step]]\nid = \"restore\"\nkind = \"restore\"\n",
    )
    .unwrap();
    let out = ws.fails(&["drill", "run", s(&rb)], 4);
    assert!(out.contains("go"), "{out}");
    let r = latest_report(&ws);
    assert_ne!(step(&r, "go")["result"], "passed");
    assert_eq!(step(&r, "restore")["result"], "skipped");
    assert!(r["approvals"].as_array().unwrap().is_empty());
    // Approval by flag needs a named approver.
    ws.fails(&["drill", "run", s(&rb), "--approve", "go"], 2);
}

#[test]
fn drill_malformed_runbooks_name_file_line_and_key() {
    let ws = backed_up();
    let cases = [
        ("syntax", "[runbook\nid = \"x\"\n", "syntax.toml:1:"),
        (
            "unknown-key",
            "[runbook]\nid = \"x\"\nscenario = \"s\"\nfrequency = \"1d\"\ncolour = \"red\"\n[[step]]\nid = \"a\"\nkind = \"wait\"\nduration = \"1s\"\n",
            "unknown-key.toml:5:1: runbook.colour: unknown key `colour`",
        ),
        (
            "unknown-plan",
            "[runbook]\nid = \"x\"\nscenario = \"s\"\nfrequency = \"1d\"\nplans = [\"nope\"]\n[[step]]\nid = \"a\"\nkind = \"wait\"\nduration = \"1s\"\n",
            "unknown-plan.toml:5:10: runbook.plans: unknown plan \"nope\"",
        ),
        (
            "cycle",
            "[runbook]\nid = \"x\"\nscenario = \"s\"\nfrequency = \"1d\"\n[[step]]\nid = \"a\"\nkind = \"wait\"\nduration = \"1s\"\nafter = [\"b\"]\n[[step]]\nid = \"b\"\nkind = \"wait\"\nduration = \"1s\"\nafter = [\"a\"]\n",
            "step[0].after: cycle: a -> b -> a",
        ),
        (
            "wrong-field",
            "[runbook]\nid = \"x\"\nscenario = \"s\"\nfrequency = \"1d\"\n[[step]]\nid = \"a\"\nkind = \"wait\"\nduration = \"1s\"\nsimulate = \"region_down:us-west-2\"\n",
            "wrong-field.toml:9:12: step[0].simulate: unknown key `simulate`; a wait step takes: duration",
        ),
    ];
    for (name, text, want) in cases {
        let p = ws.path(&format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        let out = ws.fails(&["drill", "validate", s(&p)], 2);
        assert!(out.contains(want), "{name}: expected {want:?} in:\n{out}");
    }
}

/// Tags balance, and the page holds the SVG timeline with one bar per step that ran
/// (checked by Python's html.parser, not by our own code).
const HTML_CHECK: &str = r#"
import sys
from html.parser import HTMLParser
VOID = {"meta", "br", "line", "rect", "img", "hr", "input", "link"}
class P(HTMLParser):
    def __init__(self):
        super().__init__(); self.stack = []; self.rects = 0; self.svg = 0; self.refs = 0
    def handle_starttag(self, tag, attrs):
        if tag == "svg": self.svg += 1
        if tag == "rect" and ("class", "step") in attrs: self.rects += 1
        if tag in ("script", "link", "img") or any(k in ("src", "href") for k, _ in attrs): self.refs += 1
        if tag not in VOID: self.stack.append(tag)
    def handle_endtag(self, tag):
        if tag in VOID: return
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()
p = P(); p.feed(open(sys.argv[1], encoding="utf-8").read()); p.close()
assert not p.stack, f"unclosed {p.stack}"
print(p.svg, p.rects, p.refs)
"#;

#[test]
fn drill_html_report_parses_and_catalog_sync_brings_history_back() {
    let ws = backed_up();
    ws.ok(&["verify", "--restore"]);
    let v = ws.json(&[
        "drill",
        "run",
        s(&runbook("region-outage")),
        "--approve-all",
        "--approver",
        "me",
    ]);
    let id = v["report"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        ws.run(&["status"]).status.code(),
        Some(0),
        "status after backup + restore test + drill"
    );
    let html = ws.path("report.html");
    ws.ok(&["drill", "report", &id, "--format", "html", "-o", s(&html)]);
    let out = Command::new("python3")
        .arg("-c")
        .arg(HTML_CHECK)
        .arg(&html)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = String::from_utf8_lossy(&out.stdout);
    let n: Vec<u32> = counts
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(n[0], 1, "one SVG timeline");
    assert_eq!(n[1], 6, "a bar per step of region-outage");
    assert_eq!(n[2], 0, "no external assets or scripts");
    let text = std::fs::read_to_string(&html).unwrap();
    for want in [
        "Cleanup ledger",
        "Runbook SHA-256",
        "us-east-2",
        "2h",
        "1day",
        "T0",
    ] {
        assert!(text.contains(want), "{want} not in the HTML report");
    }
    // The catalog is lost: sync brings drill history back from the regions.
    for f in ["lifeboat.db", "lifeboat.db-wal", "lifeboat.db-shm"] {
        let _ = std::fs::remove_file(ws.path(f));
    }
    assert!(ws.run(&["drill", "report", &id]).status.code() != Some(0));
    let sync = ws.ok(&["catalog", "sync", "--from", "us-east-2"]);
    assert!(sync.contains("1 new to the catalog"), "{sync}");
    let md = ws.ok(&["drill", "report", &id]);
    assert!(md.contains(&id) && md.contains("PASSED"), "{md}");
    // (Restore tests live only in the catalog, so status now warns about them; the drill is back.)
    let st = ws.run(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["plans"][0]["drill"]["last"]["id"], id.as_str());
}

#[test]
fn drill_run_due_runs_ungated_runbooks_and_alerts_on_gated_ones() {
    let ws = backed_up();
    let dir = ws.path("runbooks");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["annual-full-restore", "region-outage"] {
        std::fs::copy(runbook(name), dir.join(format!("{name}.toml"))).unwrap();
    }
    let (url, got) = crate::daemon::receiver();
    let run_due = || {
        let out = ws.run(&[
            "run-due",
            "--runbooks",
            s(&dir),
            "--webhook",
            &url,
            "--json",
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let v = run_due();
    let runs = v["runs"].as_array().unwrap();
    let drill = runs
        .iter()
        .find(|r| r["plan"] == "drill#annual-full-restore")
        .unwrap_or_else(|| panic!("the ungated runbook did not run: {v:#}"));
    assert_eq!(drill["outcome"], "passed");
    assert!(
        !runs.iter().any(|r| r["plan"] == "drill#region-outage"),
        "a gated runbook ran: {v:#}"
    );
    let alerts = got.lock().unwrap().clone();
    let overdue: Vec<_> = alerts
        .iter()
        .filter(|(_, b)| b["kind"] == "drill_overdue")
        .collect();
    assert_eq!(overdue.len(), 1, "{alerts:?}");
    assert!(overdue[0].1["message"]
        .as_str()
        .unwrap()
        .contains("region-outage"));
    // The occurrence ran once: the next look finds nothing due, and alerts nothing new.
    let v = run_due();
    assert!(
        !v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["plan"].as_str().unwrap().starts_with("drill#")),
        "{v:#}"
    );
    assert_eq!(got.lock().unwrap().len(), alerts.len());
}

#[test]
fn drill_a_tripped_guard_aborts_the_drill_and_cleanup_still_runs() {
    let ws = backed_up();
    let rb = ws.path("guard.toml");
    std::fs::write(
        &rb,
        "[runbook]\nid = \"guard\"\nscenario = \"g\"\nfrequency = \"1d\"\n[guards]\nmax_duration = \"1s\"\n\n[[step]]\nid = \"declare\"\nkind = \"declare\"\nsimulate = \"region_down:us-east-2\"\n\n[[step]]\nid = \"restore\"\nkind = \"restore\"\n\n[[step]]\nid = \"hold\"\nkind = \"wait\"\nduration = \"30s\"\ntimeout = \"60s\"\n",
    )
    .unwrap();
    let started = Instant::now();
    let out = ws.fails(&["drill", "run", s(&rb)], 4);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the guard did not stop the wait"
    );
    assert!(out.contains("guard tripped: max_duration 1s"), "{out}");
    let r = latest_report(&ws);
    assert_eq!(r["result"], "failed");
    assert_eq!(step(&r, "hold")["result"], "cancelled");
    all_removed(&r);
    assert!(r["cleanup"].as_array().unwrap().iter().any(|c| c["what"]
        .as_str()
        .unwrap()
        .contains("simulated outage of region us-east-2")));
}

/// A command step that times out is killed with its whole process group: a shell script's
/// background child must not outlive the drill.
#[test]
fn drill_a_timed_out_command_step_kills_its_children_too() {
    let ws = backed_up();
    let rb = ws.path("hung.toml");
    let pidfile = ws.path("grandchild.pid");
    std::fs::write(
        &rb,
        format!(
            "[runbook]\nid = \"hung\"\nscenario = \"h\"\nfrequency = \"1d\"\n\n[[step]]\nid = \"hang\"\nkind = \"command\"\nrun = [\"sh\", \"-c\", \"sleep 300 & echo $! > {}; wait\"]\ntimeout = \"2s\"\n",
            s(&pidfile)
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = ws.fails(&["drill", "run", s(&rb)], 4);
    // Generous: the step times out after 2 s; a surviving `sleep 300` holding the output
    // pipe would keep the drill (and this call) waiting for five minutes.
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the drill waited for the step's background child"
    );
    let r = latest_report(&ws);
    assert_eq!(step(&r, "hang")["result"], "timed_out", "{out}");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let pid = pid.trim();
    // Killed: gone, or a zombie waiting for init to reap it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|st| st.rsplit(')').next().map(|r| r.trim().to_string()));
        match state {
            None => break,
            Some(st) if st.starts_with('Z') => break,
            Some(st) => assert!(
                Instant::now() < deadline,
                "the step's background child {pid} still runs ({st}) after the timeout"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
