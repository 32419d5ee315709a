//! A plan's `compression` choice (`"zstd:N"` or `"none"`) is what its backups store, the
//! data restores the same whatever the choice, and a bad value is refused at config load
//! (exit 2) naming the key and what is accepted.

use crate::common::{assert_same_tree, capture, write, write_random, Workspace, XorShift};

/// Log-like text (compresses well) plus one random file (does not compress at all).
fn corpus(ws: &Workspace) -> u64 {
    let mut total = 0;
    for i in 0..4 {
        let text: String = (0..20_000)
            .map(|n| {
                format!(
                    "2026-12-02T05:{:02}:{:02}Z INFO request {n} served in {} ms\n",
                    n % 60,
                    i,
                    n % 97
                )
            })
            .collect();
        write(&ws.path(&format!("data/logs/app-{i}.log")), text.as_bytes());
        total += text.len() as u64;
    }
    let mut rng = XorShift::new(7);
    write_random(&ws.path("data/photo.jpg"), 600_000, &mut rng);
    total + 600_000
}

fn with_compression(value: &str) -> (Workspace, u64) {
    let ws = Workspace::new();
    let total = corpus(&ws);
    ws.edit_config(|c| {
        c.replacen(
            "\nsource = ",
            &format!("\ncompression = \"{value}\"\nsource = "),
            1,
        )
    });
    (ws, total)
}

fn stored_bytes(ws: &Workspace) -> u64 {
    let b = ws.json(&["backup", "app-data"]);
    assert_eq!(b["degraded"], false, "{b}");
    b["stats"]["stored_bytes"].as_u64().expect("stored_bytes")
}

fn restores_the_same(ws: &Workspace) {
    let to = ws.path("restored");
    ws.ok(&["restore", "app-data", "--to", to.to_str().unwrap()]);
    assert_same_tree(&capture(&ws.path("data")), &capture(&to), "restore");
}

#[test]
fn each_plan_stores_with_its_compression_and_restores_the_same() {
    let (none, total) = with_compression("none");
    none.init();
    let raw = stored_bytes(&none);
    assert!(raw >= total, "none stores everything raw: {raw} < {total}");
    restores_the_same(&none);

    let (fast, _) = with_compression("zstd:1");
    fast.init();
    let small = stored_bytes(&fast);
    // The text shrinks many times; the random 600 kB stays as it is.
    assert!(
        small < 600_000 + (total - 600_000) / 4,
        "zstd:1 stored {small} of {total}"
    );
    restores_the_same(&fast);
}

#[test]
fn a_bad_compression_value_is_a_config_error() {
    let (ws, _) = with_compression("lz4");
    let out = ws.fails(&["backup", "app-data"], 2);
    assert!(out.contains("plans[0].compression"), "{out}");
    assert!(out.contains("\"zstd:N\" with N from 1 to 19"), "{out}");
}
