//! The `command` source and restore tests of command and directory plans: a command's stdout
//! round-trips through its restore_command, a file and stdout; a failing command fails the
//! backup with its stderr and leaves no snapshot; `verify --restore` passes on good
//! snapshots, fails (exit 4, naming what differs) on a failing verify_command or tampered
//! packs, and its result reaches `status`.

use crate::common::{write_random, Workspace, XorShift};

/// A command that prints ~2.4 MB of text with non-ASCII lines (several chunks).
const PRODUCER: &str =
    "i=0; while [ $i -lt 60000 ]; do printf 'row %s ünïcode ✓ %s\\n' $i $((i*i)); i=$((i+1)); done";

fn produced() -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .args(["-c", PRODUCER])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn toml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("[{}]", quoted.join(", "))
}

fn add_command_plan(
    ws: &Workspace,
    name: &str,
    command: &[&str],
    restore: &[&str],
    verify: Option<&[&str]>,
) {
    let verify = verify
        .map(|v| format!(", verify_command = {}", toml_list(v)))
        .unwrap_or_default();
    ws.edit_config(|c| {
        format!(
            "{c}\n[[plans]]\nname = \"{name}\"\nsource = {{ kind = \"command\", command = {}, restore_command = {}{verify} }}\n",
            toml_list(command),
            toml_list(restore)
        )
    });
}

fn snapshot_count(ws: &Workspace, plan: &str) -> usize {
    ws.json(&["snapshots", "--plan", plan])
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn command_round_trips_through_restore_command_file_and_stdout() {
    let ws = Workspace::new();
    ws.init();
    let restored = ws.path("restored.out");
    let check = "cat > \"$LIFEBOAT_SCRATCH_DIR/x\" && grep -q 'row 59999 ünïcode' \"$LIFEBOAT_SCRATCH_DIR/x\"";
    add_command_plan(
        &ws,
        "cmd",
        &["sh", "-c", PRODUCER],
        &["sh", "-c", &format!("cat > '{}'", restored.display())],
        Some(&["sh", "-c", check]),
    );
    let out = ws.ok(&["backup", "cmd"]);
    assert!(out.contains("snapshot"), "{out}");
    let want = produced();

    ws.ok(&["restore", "cmd"]);
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        want,
        "restore_command output"
    );

    let file = ws.path("copy.out");
    ws.ok(&["restore", "cmd", "--to", file.to_str().unwrap()]);
    assert_eq!(std::fs::read(&file).unwrap(), want);
    // An existing file is not overwritten unless asked.
    ws.fails(&["restore", "cmd", "--to", file.to_str().unwrap()], 1);
    ws.ok(&[
        "restore",
        "cmd",
        "--to",
        file.to_str().unwrap(),
        "--overwrite",
    ]);

    let out = ws.run(&["restore", "cmd", "--to", "-", "--from", "us-east-2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == want,
        "stdout differs from the command's output"
    );

    let out = ws.ok(&["verify", "--restore", "--plan", "cmd"]);
    assert!(out.starts_with("PASS cmd (command)"), "{out}");
    assert!(out.contains("verify_command"), "{out}");

    // A verify_command that rejects the stream fails the test (exit 4).
    ws.edit_config(|c| c.replace("grep -q 'row 59999", "grep -q 'no such row"));
    let out = ws.fails(&["verify", "--restore", "--plan", "cmd"], 4);
    assert!(out.contains("FAIL cmd (command)"), "{out}");
    assert!(out.contains("exited with status 1"), "{out}");
}

#[test]
fn command_failure_fails_the_backup_with_its_stderr_and_leaves_no_snapshot() {
    let ws = Workspace::new();
    ws.init();
    add_command_plan(
        &ws,
        "bad",
        &[
            "sh",
            "-c",
            "head -c 3000000 /dev/urandom; echo 'boom: disk on fire' >&2; exit 3",
        ],
        &["true"],
        None,
    );
    let out = ws.fails(&["backup", "bad"], 1);
    assert!(out.contains("boom: disk on fire"), "{out}");
    assert!(out.contains("exited with status 3"), "{out}");
    assert_eq!(snapshot_count(&ws, "bad"), 0);

    add_command_plan(
        &ws,
        "missing",
        &["lifeboat-no-such-program"],
        &["true"],
        None,
    );
    let out = ws.fails(&["backup", "missing"], 1);
    assert!(out.contains("command not found"), "{out}");
    assert_eq!(snapshot_count(&ws, "missing"), 0);
    ws.ok(&["verify"]);
}

/// Flip one byte in the middle of the biggest pack, in both regions. With more than one
/// 16 MiB pack of incompressible data, the biggest holds only file data (trees go last).
fn tamper_biggest_pack(ws: &Workspace) {
    for region in ["us-west-2", "us-east-2"] {
        let biggest = ws
            .objects(region, "data")
            .into_iter()
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        let mut bytes = std::fs::read(&biggest).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&biggest, bytes).unwrap();
    }
}

fn status_rto(ws: &Workspace, plan: &str) -> serde_json::Value {
    let out = ws.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plan"] == plan)
        .unwrap_or_else(|| panic!("no plan {plan} in {v}"))["rto"]
        .clone()
}

#[test]
fn restore_test_of_a_directory_plan_is_recorded_and_a_tampered_snapshot_fails() {
    let ws = Workspace::new();
    ws.init();
    let mut rng = XorShift::new(3);
    write_random(&ws.path("data/big.bin"), 20 << 20, &mut rng);
    std::fs::write(ws.path("data/ünï.txt"), "hello\n").unwrap();
    ws.ok(&["backup", "app-data"]);
    assert!(status_rto(&ws, "app-data")["last_test_passed"].is_null());

    let v = ws.json(&["verify", "--restore", "--plan", "app-data"]);
    let t = &v["restore_tests"][0];
    assert_eq!(t["passed"], true, "{v}");
    assert_eq!(t["kind"], "dir");
    assert!(t["bytes"].as_u64().unwrap() >= 20 << 20, "{v}");
    assert!(t["duration_ms"].as_i64().unwrap() > 0);
    // The RTO includes what a real restore pays first: the listing and the index load.
    let phases = t["phases_ms"].as_object().expect("phase timings");
    let names: Vec<&str> = phases.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["index", "list", "restore"], "{v}");
    let sum: i64 = phases.values().map(|p| p.as_i64().unwrap()).sum();
    assert_eq!(t["duration_ms"].as_i64().unwrap(), sum.max(1), "{v}");
    let rto = status_rto(&ws, "app-data");
    assert_eq!(rto["last_test_passed"], true, "{rto}");
    assert!(rto["last_test_seconds"].as_f64().is_some(), "{rto}");
    // Nothing is left in the scratch space.
    let scratch = ws.path("cache/restore-tests");
    if scratch.exists() {
        assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    }

    tamper_biggest_pack(&ws);
    let out = ws.fails(&["verify", "--restore", "--plan", "app-data"], 4);
    assert!(out.contains("FAIL app-data (dir)"), "{out}");
    assert!(out.contains("is corrupt: files big.bin:"), "{out}");
    assert!(out.contains("no region has a good copy"), "{out}");
    let rto = status_rto(&ws, "app-data");
    assert_eq!(rto["last_test_passed"], false, "{rto}");
}

#[test]
fn restore_test_of_a_tampered_command_snapshot_names_the_stream() {
    let ws = Workspace::new();
    ws.init();
    // More than one 16 MiB pack of incompressible data: the biggest pack holds only data,
    // so the root tree stays readable and the damage is found inside the stream.
    let mut rng = XorShift::new(9);
    let source = ws.path("source.bin");
    write_random(&source, 20 << 20, &mut rng);
    add_command_plan(
        &ws,
        "cmd",
        &["cat", source.to_str().unwrap()],
        &["true"],
        None,
    );
    ws.ok(&["backup", "cmd"]);
    ws.ok(&["backup", "app-data"]);
    let out = ws.ok(&["verify", "--restore"]);
    assert!(out.contains("PASS cmd (command)"), "{out}");
    assert!(out.contains("PASS app-data (dir)"), "{out}");
    tamper_biggest_pack(&ws);
    let out = ws.fails(&["verify", "--restore", "--plan", "cmd"], 4);
    assert!(out.contains("FAIL cmd (command)"), "{out}");
    assert!(out.contains("command.out: chunk"), "{out}");
    assert!(out.contains("no region has a good copy"), "{out}");
    // Restoring it for real fails too (exit 4), after only verified bytes.
    let out = ws.run(&["restore", "cmd", "--to", "-"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.len() < 20 << 20,
        "the whole stream was delivered"
    );
}

#[test]
fn run_due_runs_a_scheduled_restore_test_once_and_status_shows_it() {
    let ws = Workspace::new();
    ws.init();
    add_command_plan(&ws, "cmd", &["sh", "-c", PRODUCER], &["true"], None);
    // Due at once (the last occurrence is caught up), then not again until next year.
    ws.edit_config(|c| format!("{c}verify_schedule = \"0 0 1 1 *\"\n"));
    ws.ok(&["backup", "cmd"]);
    let v = ws.json(&["run-due"]);
    let runs = v["runs"].as_array().unwrap();
    let test = runs
        .iter()
        .find(|r| r["plan"] == "cmd#restore-test")
        .unwrap_or_else(|| panic!("no restore test run: {v}"));
    assert_eq!(test["outcome"], "passed", "{v}");
    let rto = status_rto(&ws, "cmd");
    assert_eq!(rto["last_test_passed"], true, "{rto}");
    let v = ws.json(&["run-due"]);
    assert!(
        !v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["plan"] == "cmd#restore-test"),
        "ran twice: {v}"
    );
}
