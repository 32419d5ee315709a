//! Secrets never reach the logs: the identity, the writer key and a database password are
//! absent from stderr in both log formats, at debug level, across the commands that load
//! them.

use crate::common::Workspace;
use crate::ops::{ready, set_catalog};
use crate::pg;

const PG_PASSWORD: &str = "pg-Secret-Password-4242";

fn secrets(ws: &Workspace) -> Vec<String> {
    let mut out = vec![PG_PASSWORD.to_string()];
    for f in ["keys/identity.txt", "keys/writer.key"] {
        let text = std::fs::read_to_string(ws.path(f)).unwrap();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            out.push(line.trim().to_string());
            // Also the key material without its prefix.
            if let Some((_, rest)) = line.trim().split_once('-') {
                if rest.len() > 20 {
                    out.push(rest[rest.len() - 20..].to_string());
                }
            }
        }
    }
    assert!(
        out.iter().any(|s| s.starts_with("AGE-SECRET-KEY-")),
        "{out:?}"
    );
    out
}

fn check(ws: &Workspace, secrets: &[String], format: &str) {
    let restore_to = ws.path(&format!("restore-{format}"));
    let runs: Vec<Vec<&str>> = vec![
        vec!["backup", "app-data"],
        vec!["snapshots"],
        vec!["restore", "app-data", "--to", restore_to.to_str().unwrap()],
        vec!["verify", "--read-data"],
        vec!["status"],
        vec!["run-due"],
        vec!["catalog", "sync"],
        vec!["audit", "--verify"],
        // Failures print errors with context: still no secrets.
        vec![
            "restore",
            "app-data",
            "--snapshot",
            "ffff",
            "--to",
            "/nonexistent/x",
        ],
    ];
    let mut logged = 0;
    for args in runs {
        let mut all = vec!["--log-format", format, "-vv"];
        all.extend_from_slice(&args);
        let out = ws
            .cmd(&all)
            .env("LIFEBOAT_LOG", "debug")
            .env("PGPASSWORD", PG_PASSWORD)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        logged += stderr.lines().count();
        for s in secrets {
            assert!(
                !stderr.contains(s.as_str()),
                "secret in {format} logs of {args:?}:\n{stderr}"
            );
            assert!(!stdout.contains(s.as_str()), "secret in output of {args:?}");
        }
        if format == "json" {
            for line in stderr.lines().filter(|l| l.starts_with('{')) {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            }
        }
    }
    assert!(
        logged > 20,
        "expected debug logs to check, got {logged} lines"
    );
}

#[test]
fn secrets_never_appear_in_text_or_json_logs() {
    let ws = ready();
    // A PostgreSQL catalog, its password given the supported way (PGPASSWORD).
    set_catalog(&ws, &pg::database());
    let secrets = secrets(&ws);
    check(&ws, &secrets, "text");
    check(&ws, &secrets, "json");
}

/// Runs `lifeboat -v snapshots` (which logs at info level) under a pseudo-terminal made by
/// util-linux `script`, or plainly with stderr on a pipe; returns what it wrote.
fn log_output(ws: &Workspace, pty: bool, no_color: Option<&str>) -> String {
    let lifeboat = crate::common::bin();
    let mut cmd = if pty {
        let mut c = std::process::Command::new("script");
        c.args(["-qefc"])
            .arg(format!(
                "{} --config {} -v snapshots",
                lifeboat.display(),
                ws.config().display()
            ))
            .arg("/dev/null");
        c
    } else {
        ws.cmd(&["-v", "snapshots"])
    };
    cmd.env_remove("NO_COLOR").env_remove("LIFEBOAT_LOG");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let ws = Workspace::new();
    ws.init();
    // On a terminal the level is coloured: the check below can see escape codes.
    let tty = log_output(&ws, true, None);
    assert!(tty.contains("INFO"), "{tty}");
    assert!(tty.contains("\x1b["), "no colour on a terminal: {tty:?}");
    for (pty, no_color) in [(false, None), (true, Some("1")), (false, Some("1"))] {
        let text = log_output(&ws, pty, no_color);
        assert!(text.contains("INFO"), "{text}");
        assert!(
            !text.contains('\x1b'),
            "escape codes with pty={pty} NO_COLOR={no_color:?}: {text:?}"
        );
    }
}
