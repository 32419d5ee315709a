//! The layer rule, checked against the code: every `crate::X` path in `src/` must point at a
//! module in a lower row of ARCHITECTURE.md's "Layers" table, every top-level module must
//! have a row, and the modules of `crates/repo` must not import each other in a circle. A new
//! upward import fails here with the file and line that makes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `Layers` table of ARCHITECTURE.md: module name → layer number.
fn layer_table() -> BTreeMap<String, u32> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let start = text
        .find("\n## Layers")
        .expect("ARCHITECTURE.md has a \"## Layers\" section");
    let mut table = BTreeMap::new();
    for line in text[start + 1..].lines().skip(1) {
        if line.starts_with("## ") {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | layer | modules | ... |
        let (Some(layer), Some(modules)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Ok(layer) = layer.parse::<u32>() else {
            continue;
        };
        // The backticked names of the cell; other words are notes.
        for m in modules.split('`').skip(1).step_by(2) {
            let m = m.trim();
            if !m.is_empty() {
                assert!(
                    table.insert(m.to_string(), layer).is_none(),
                    "module `{m}` is in two rows of the Layers table"
                );
            }
        }
    }
    assert!(!table.is_empty(), "the Layers table has no rows");
    table
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src dir") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`None` for the crate root). A `foo_tests.rs`
/// beside `foo.rs` is `foo`'s test module (`#[path]`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first);
    if rel.components().count() == 1 && (name == "lib" || name == "main") {
        return None;
    }
    let name = name.strip_suffix("_tests").unwrap_or(name);
    Some(name.to_string())
}

/// Every module named by a `crate::` path in the code (comments skipped): `crate::a::b`
/// gives `a`, `crate::{a, b::c}` gives `a` and `b`.
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let preceded_ok = rest[..i]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            rest = &rest[i + "crate::".len()..];
            if !preceded_ok {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                // A grouped import; the group may span lines, so read on through the text.
                let from = text.lines().skip(n).collect::<Vec<_>>().join("\n");
                let body = &from[from.find("crate::{").map_or(0, |i| i + 8)..];
                let mut depth = 0;
                let mut item = String::new();
                for c in body.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            push_first(&item, n, &mut refs);
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                push_first(&item, n, &mut refs);
                rest = group;
            } else {
                push_first(rest, n, &mut refs);
            }
        }
    }
    refs
}

fn push_first(path: &str, line: usize, refs: &mut Vec<(usize, String)>) {
    let ident: String = path
        .trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if !ident.is_empty() && ident != "self" {
        refs.push((line + 1, ident));
    }
}

#[test]
fn imports_point_down_the_layers() {
    let table = layer_table();
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(from) = module_of(&src, file) else {
            continue;
        };
        let Some(&from_layer) = table.get(&from) else {
            problems.push(format!(
                "module `{from}` ({}) has no row in ARCHITECTURE.md's Layers table",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for (line, to) in crate_refs(&text) {
            if to == from {
                continue;
            }
            checked += 1;
            match table.get(&to) {
                // Not a module (a macro or item at the crate root): nothing to check.
                None if !src.join(format!("{to}.rs")).exists() && !src.join(&to).is_dir() => {}
                None => problems.push(format!(
                    "{}:{line}: `{to}` has no row in ARCHITECTURE.md's Layers table",
                    file.display()
                )),
                Some(&to_layer) if to_layer >= from_layer => problems.push(format!(
                    "{}:{line}: `{from}` (layer {from_layer}) imports `{to}` (layer {to_layer}); \
                     imports must point to a lower layer",
                    file.display()
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} imports found: is the scan broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn layer_scan_sees_grouped_and_inline_paths() {
    let text = "use crate::{a::X, b};\n// crate::c\nlet x = crate::d::f(); // crate::e\nnotcrate::g;\nuse crate::{\n    h::Y,\n    i::{j, k},\n};\n";
    let found: BTreeSet<String> = crate_refs(text).into_iter().map(|(_, m)| m).collect();
    let want: BTreeSet<String> = ["a", "b", "d", "h", "i"].map(String::from).into();
    assert_eq!(found, want);
}

#[test]
fn repo_crate_modules_form_no_circle() {
    let src = root().join("crates/repo/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(&src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for (_, to) in crate_refs(&text) {
            let is_module = src.join(format!("{to}.rs")).exists() || src.join(&to).is_dir();
            if to != from && is_module {
                graph.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    assert!(
        graph.len() > 5,
        "repo module graph too small: is the scan broken?"
    );
    // Depth-first search; a module met again on the current path closes a circle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut circle = path[i..].to_vec();
            circle.push(m.to_string());
            return Some(circle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(circle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!(
                "crates/repo modules import each other in a circle: {}",
                circle.join(" → ")
            );
        }
    }
}

#[test]
fn repo_crate_has_no_cloud_sql_cli_or_cron_dependency() {
    let manifest = std::fs::read_to_string(root().join("crates/repo/Cargo.toml")).expect("toml");
    let mut section = "";
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section != "[dependencies]" {
            continue;
        }
        let name = line.split(['=', ' ', '.']).next().unwrap_or_default();
        for banned in ["aws-", "sqlx", "clap", "cron", "hyper"] {
            assert!(
                !name.starts_with(banned),
                "crates/repo depends on `{name}`: the repository engine stays free of cloud SDKs, SQL, CLI and schedule crates"
            );
        }
    }
}
