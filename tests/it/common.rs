//! Shared test fixtures: a temporary workspace with keys, a config with two local regions,
//! and a way to run the real `lifeboat` binary against it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Workspace {
    pub dir: tempfile::TempDir,
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lifeboat"))
}

impl Workspace {
    /// Keys generated, example config written (two local regions, plan `app-data` backing
    /// up `<dir>/data`), repository NOT initialised.
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = Workspace { dir };
        let out = ws.run(&[
            "keys",
            "generate",
            "--dir",
            ws.path("keys").to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "keys generate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(ws.config(), lifeboat::config::example(ws.dir.path())).unwrap();
        std::fs::create_dir_all(ws.path("data")).unwrap();
        ws
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config(&self) -> PathBuf {
        self.path("lifeboat.toml")
    }

    /// Run lifeboat with this workspace's config.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run lifeboat")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("LIFEBOAT_CONFIG");
        c
    }

    /// Run and require exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.run(args))
    }
}

/// Require that a lifeboat run with `args` exited 0 (else fail with its output); its stdout.
pub fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "lifeboat {args:?} exited {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, data).unwrap();
}

impl Workspace {
    /// `lifeboat init` in both regions.
    pub fn init(&self) {
        self.ok(&["init"]);
    }

    /// A region's directory (`us-west-2`, `us-east-2`).
    pub fn region(&self, name: &str) -> PathBuf {
        self.path(name)
    }

    /// Run, require exit code `code`; returns stdout and stderr together (for messages).
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        exited(&self.run(args), args, code)
    }

    /// Run with `--json` appended, require exit 0, parse stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("lifeboat {a:?}: not JSON ({e}): {out}"))
    }

    /// Rewrite lifeboat.toml through `f`, asserting that it changed.
    pub fn edit_config(&self, f: impl FnOnce(&str) -> String) {
        let old = std::fs::read_to_string(self.config()).unwrap();
        let new = f(&old);
        assert_ne!(old, new, "edit_config changed nothing");
        std::fs::write(self.config(), new).unwrap();
    }

    /// Stored objects of a region under `prefix` (`data/`, `index/`, `snapshots/`), sorted,
    /// without the local backend's temporary files.
    pub fn objects(&self, region: &str, prefix: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let root = self.region(region);
        let mut stack = vec![root.join(prefix)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd {
                let e = e.unwrap();
                let p = e.path();
                if e.file_type().unwrap().is_dir() {
                    stack.push(p);
                } else if !e.file_name().to_string_lossy().starts_with(".tmp-") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// The object name (`data/ab/ab…`) of a file under a region's directory.
    pub fn object_name(&self, region: &str, file: &Path) -> String {
        file.strip_prefix(self.region(region))
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }
}

/// Deterministic pseudo-random bytes (xorshift64*): reproducible test data that does not
/// compress, so stored sizes track logical sizes.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// Write `len` pseudo-random bytes to `path` in 1 MiB blocks.
pub fn write_random(path: &Path, len: u64, rng: &mut XorShift) {
    use std::io::Write;
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// What a restore must reproduce of one entry: type, content, permission bits, mtime (ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
        blake3: String,
    },
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    /// A FIFO, socket or device node: compared by type and device number, never opened
    /// (opening a FIFO would block the test).
    Special {
        file_type: u32,
        rdev: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    pub kind: EntryKind,
    pub mode: u32,
    pub mtime_ns: i64,
}

/// Every entry under `root` (not `root` itself), keyed by its relative path's bytes.
pub fn capture(root: &Path) -> std::collections::BTreeMap<Vec<u8>, EntryMeta> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let kind = if m.file_type().is_symlink() {
                EntryKind::Symlink {
                    target: std::fs::read_link(&p)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                }
            } else if m.is_dir() {
                stack.push(p.clone());
                EntryKind::Dir
            } else if !m.is_file() {
                EntryKind::Special {
                    file_type: m.mode() & libc::S_IFMT,
                    rdev: m.rdev(),
                }
            } else {
                let data = std::fs::read(&p).unwrap();
                EntryKind::File {
                    size: data.len() as u64,
                    blake3: blake3::hash(&data).to_hex().to_string(),
                }
            };
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            out.insert(
                rel,
                EntryMeta {
                    kind,
                    mode: m.mode() & 0o7777,
                    mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                },
            );
        }
    }
    out
}

/// Assert two captures are identical, listing every difference by (lossy) path.
pub fn assert_same_tree(
    expected: &std::collections::BTreeMap<Vec<u8>, EntryMeta>,
    actual: &std::collections::BTreeMap<Vec<u8>, EntryMeta>,
    what: &str,
) {
    let mut diffs = Vec::new();
    for (k, e) in expected {
        match actual.get(k) {
            None => diffs.push(format!("missing: {:?}", String::from_utf8_lossy(k))),
            Some(a) if a != e => diffs.push(format!(
                "differs: {:?}\n  expected {e:?}\n  actual   {a:?}",
                String::from_utf8_lossy(k)
            )),
            _ => {}
        }
    }
    for k in actual.keys().filter(|k| !expected.contains_key(*k)) {
        diffs.push(format!("unexpected: {:?}", String::from_utf8_lossy(k)));
    }
    assert!(
        diffs.is_empty(),
        "{what}: trees differ:\n{}",
        diffs.join("\n")
    );
}

/// Require that `out` (of `lifeboat args`) exited with `code`; returns stdout and stderr
/// together (for messages).
pub fn exited(out: &std::process::Output, args: &[&str], code: i32) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "lifeboat {args:?}: expected exit {code}\n{text}"
    );
    text
}
