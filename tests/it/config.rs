//! Bad input is a clear error, never a guess: malformed lifeboat.toml names the file, line,
//! column and key (exit 2); a missing secret file names the file and the key to fix
//! (exit 5); `init` never overwrites a repository.

use crate::common::Workspace;

/// The 1-based line of the first line of lifeboat.toml containing `needle`.
fn line_of(ws: &Workspace, needle: &str) -> usize {
    let text = std::fs::read_to_string(ws.config()).unwrap();
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the config"))
        + 1
}

fn at_line(ws: &Workspace, line: usize) -> String {
    format!("{}:{line}:", ws.config().display())
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let ws = Workspace::new();
    ws.edit_config(|t| t.replace("[keys]\n", "[keys]\ncolour = \"blue\"\n"));
    let line = line_of(&ws, "colour");
    let msg = ws.fails(&["snapshots"], 2);
    assert!(msg.contains(&at_line(&ws, line)), "{msg}");
    assert!(
        msg.contains("keys.colour") && msg.contains("unknown key"),
        "{msg}"
    );
}

#[test]
fn bad_duration_names_file_line_and_key() {
    let ws = Workspace::new();
    ws.edit_config(|t| t.replace("rpo = \"24h\"", "rpo = \"24 parsecs\""));
    let line = line_of(&ws, "parsecs");
    let msg = ws.fails(&["backup", "app-data"], 2);
    assert!(msg.contains(&at_line(&ws, line)), "{msg}");
    assert!(msg.contains("rpo") && msg.contains("24 parsecs"), "{msg}");
}

#[test]
fn toml_syntax_error_names_file_and_line() {
    let ws = Workspace::new();
    ws.edit_config(|t| format!("{t}\nbroken = [\n"));
    let lines = std::fs::read_to_string(ws.config())
        .unwrap()
        .lines()
        .count();
    let msg = ws.fails(&["snapshots"], 2);
    assert!(
        msg.contains(&format!("{}:", ws.config().display())),
        "{msg}"
    );
    // The parser reports the unterminated array at or just after its opening line.
    assert!(
        msg.contains(&at_line(&ws, lines)) || msg.contains(&at_line(&ws, lines + 1)),
        "{msg}"
    );
}

#[test]
fn missing_writer_key_file_names_the_file_and_the_key() {
    let ws = Workspace::new();
    ws.edit_config(|t| t.replace("keys/writer.key", "keys/nope.key"));
    let missing = ws.path("keys/nope.key");
    for args in [&["init"][..], &["backup", "app-data"][..]] {
        let msg = ws.fails(args, 5);
        assert!(msg.contains(missing.to_str().unwrap()), "{args:?}: {msg}");
        assert!(msg.contains("writer_key_file"), "{args:?}: {msg}");
    }
    assert!(!ws.path("us-west-2/config").exists(), "nothing initialised");
}

#[test]
fn init_twice_refuses_to_overwrite() {
    let ws = Workspace::new();
    let first = ws.json(&["init"]);
    let id = first["repository"].as_str().unwrap().to_string();
    assert_eq!(
        first["created_in"],
        serde_json::json!(["us-west-2", "us-east-2"])
    );
    let config = std::fs::read(ws.path("us-west-2/config")).unwrap();
    let secrets = std::fs::read(ws.path("us-east-2/keys/secrets-0001.age")).unwrap();

    let msg = ws.fails(&["init"], 1);
    assert!(
        msg.contains("refusing to overwrite") && msg.contains(&id),
        "{msg}"
    );
    assert_eq!(std::fs::read(ws.path("us-west-2/config")).unwrap(), config);
    assert_eq!(
        std::fs::read(ws.path("us-east-2/keys/secrets-0001.age")).unwrap(),
        secrets
    );

    // A region that lost its repository is re-created as the same repository; the other
    // region is left alone.
    std::fs::remove_dir_all(ws.path("us-east-2")).unwrap();
    let again = ws.json(&["init"]);
    assert_eq!(again["repository"], id.as_str());
    assert_eq!(again["created_in"], serde_json::json!(["us-east-2"]));
    assert_eq!(std::fs::read(ws.path("us-west-2/config")).unwrap(), config);
    assert_eq!(std::fs::read(ws.path("us-east-2/config")).unwrap(), config);
    assert_eq!(
        std::fs::read(ws.path("us-east-2/keys/secrets-0001.age")).unwrap(),
        secrets,
        "the re-created region gets the repository's own secrets object"
    );
}

/// An impossible schedule is refused when the config loads, by every command, at its line and
/// in lifeboat's words (not only by `run-due`, in the cron crate's six-field form).
#[test]
fn invalid_schedule_is_refused_at_load_by_every_command() {
    let ws = crate::common::Workspace::new();
    ws.edit_config(|c| c.replace("schedule = \"0 3 * * *\"", "schedule = \"61 3 * * *\""));
    let text = std::fs::read_to_string(ws.config()).unwrap();
    let line = text.lines().position(|l| l.contains("61 3 * * *")).unwrap() + 1;
    for args in [
        &["status"][..],
        &["backup", "app-data"],
        &["snapshots"],
        &["run-due"],
    ] {
        let out = ws.fails(args, 2);
        assert!(
            out.contains(&format!("lifeboat.toml:{line}:12: plans[0].schedule: invalid cron schedule \"61 3 * * *\": minute 61 is out of range (0-59)")),
            "{args:?}: {out}"
        );
        assert!(!out.contains("less than"), "{out}");
    }
}
