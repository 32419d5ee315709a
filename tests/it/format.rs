//! The on-storage format against independent tools (docs/FORMAT.md): every pack and
//! manifest is a standard age file the `age` CLI decrypts; a decrypted pack is
//! self-describing (blobs, a table of 42-byte entries, count, `LBPACK01`) and its blobs
//! come back with the `zstd` CLI; a v2 pack holds trees only or data only and is named by
//! the BLAKE3 of its age payload; a manifest and the repository secrets object open with the
//! identity and with the writer key; `config` is plaintext JSON without secrets. The v1
//! fixture (`tests/fixtures/v1`) restores identically and upgrades to v2. `age` and `zstd` come from `make deps`:
//! their absence fails these tests rather than skipping them.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{write, Workspace, XorShift};

const TRAILER: &[u8] = b"LBPACK01";
const ENTRY_LEN: usize = 42;

fn require_tool(tool: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the `{tool}` CLI is not installed: run `make deps` (installs Debian's {tool}); \
         the format tests check lifeboat's objects against it"
    );
}

/// `age -d -i identity file`: the plaintext, or the error text.
fn age_decrypt(identity: &Path, file: &Path) -> Result<Vec<u8>, String> {
    require_tool("age");
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn zstd_decompress(data: &[u8]) -> Vec<u8> {
    require_tool("zstd");
    let mut child = Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "zstd -d failed");
    out.stdout
}

struct Blob {
    kind: u8,
    compression: u8,
    raw_length: u32,
    stored: Vec<u8>,
}

/// Parse a decrypted pack as FORMAT.md describes it, checking every structural rule.
fn parse_pack(plain: &[u8], what: &str) -> Vec<Blob> {
    assert!(plain.ends_with(TRAILER), "{what}: no LBPACK01 trailer");
    let n_at = plain.len() - 12;
    let n = u32::from_le_bytes(plain[n_at..n_at + 4].try_into().unwrap()) as usize;
    assert!(n > 0, "{what}: empty table");
    let table_start = n_at
        .checked_sub(n * ENTRY_LEN)
        .unwrap_or_else(|| panic!("{what}: {n} entries × 42 bytes exceed the pack"));
    let mut offset = 0usize;
    let mut blobs = Vec::new();
    for e in plain[table_start..n_at].chunks_exact(ENTRY_LEN) {
        let (kind, compression) = (e[0], e[1]);
        assert!(kind <= 1 && compression <= 1, "{what}: entry {e:?}");
        let length = u32::from_le_bytes(e[34..38].try_into().unwrap()) as usize;
        let raw_length = u32::from_le_bytes(e[38..42].try_into().unwrap());
        blobs.push(Blob {
            kind,
            compression,
            raw_length,
            stored: plain[offset..offset + length].to_vec(),
        });
        offset += length;
    }
    assert_eq!(offset, table_start, "{what}: blob lengths end at the table");
    blobs
}

fn raw(b: &Blob) -> Vec<u8> {
    let r = match b.compression {
        0 => b.stored.clone(),
        _ => zstd_decompress(&b.stored),
    };
    assert_eq!(r.len(), b.raw_length as usize);
    r
}

/// A backed-up workspace with one compressible and one incompressible file.
fn backed_up() -> (Workspace, Vec<u8>, Vec<u8>) {
    let ws = Workspace::new();
    let text = b"lifeboat format check\n".repeat(1000);
    let random = XorShift::new(5).bytes(100_000);
    write(&ws.path("data/text.txt"), &text);
    write(&ws.path("data/random.bin"), &random);
    ws.init();
    ws.ok(&["backup", "app-data"]);
    (ws, text, random)
}

/// The age payload: what follows the header's `--- MAC` line (FORMAT.md, pack ids).
fn age_payload(file: &[u8]) -> &[u8] {
    assert!(file.starts_with(b"age-encryption.org/v1\n"));
    let mac = file.windows(5).position(|w| w == b"\n--- ").unwrap() + 1;
    let end = mac + file[mac..].iter().position(|&b| b == b'\n').unwrap();
    &file[end + 1..]
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

#[test]
fn packs_decrypt_with_the_age_cli_and_describe_themselves() {
    let (ws, text, random) = backed_up();
    let identity = ws.path("keys/identity.txt");
    let packs = ws.objects("us-west-2", "data/");
    assert!(!packs.is_empty());
    let mut blobs = Vec::new();
    for p in &packs {
        let cipher = std::fs::read(p).unwrap();
        assert_eq!(
            blake3::hash(age_payload(&cipher)).to_hex().as_str(),
            file_name(p),
            "a v2 pack is named by the BLAKE3 of its age payload"
        );
        let plain = age_decrypt(&identity, p).unwrap_or_else(|e| panic!("age -d {p:?}: {e}"));
        let pack = parse_pack(&plain, &file_name(p));
        assert!(
            pack.iter().all(|b| b.kind == pack[0].kind),
            "{p:?}: a v2 pack holds trees only or data only"
        );
        blobs.extend(pack);
        // The writer key is an age identity too, but not a recipient of data.
        let denied = age_decrypt(&ws.path("keys/writer.key"), p);
        assert!(denied.is_err(), "the writer key must not decrypt packs");
    }
    // The compressible file is one zstd blob; the random one is stored raw.
    let t = blobs
        .iter()
        .find(|b| b.kind == 0 && b.raw_length as usize == text.len())
        .expect("the text file's chunk");
    assert_eq!(t.compression, 1, "compressible chunks are zstd");
    assert_eq!(raw(t), text);
    let r = blobs
        .iter()
        .find(|b| b.kind == 0 && b.raw_length as usize == random.len())
        .expect("the random file's chunk");
    assert_eq!(r.compression, 0, "incompressible chunks are stored raw");
    assert_eq!(r.stored, random);
    // The root tree is a JSON blob naming both files.
    let trees: Vec<serde_json::Value> = blobs
        .iter()
        .filter(|b| b.kind == 1)
        .map(|b| serde_json::from_slice(&raw(b)).expect("a tree blob is JSON"))
        .collect();
    assert!(
        trees.iter().any(|t| {
            let names: Vec<&str> = t["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|n| n["name"].as_str())
                .collect();
            names == ["random.bin", "text.txt"]
        }),
        "{trees:?}"
    );
}

#[test]
fn manifests_decrypt_with_the_identity_and_with_the_writer_key() {
    let (ws, _, _) = backed_up();
    let list = ws.json(&["snapshots"]);
    let id = list[0]["id"].as_str().unwrap();
    for region in ["us-west-2", "us-east-2"] {
        let m = ws.region(region).join("snapshots").join(id);
        let cipher = std::fs::read(&m).unwrap();
        assert_eq!(
            blake3::hash(age_payload(&cipher)).to_hex().as_str(),
            id,
            "a v2 manifest is named by the BLAKE3 of its age payload"
        );
        let by_identity = age_decrypt(&ws.path("keys/identity.txt"), &m).unwrap();
        let by_writer = age_decrypt(&ws.path("keys/writer.key"), &m).unwrap();
        assert_eq!(by_identity, by_writer);
        let envelope: serde_json::Value = serde_json::from_slice(&by_identity).unwrap();
        // Signed by writer `default` (the key init ran with), over the `signed` member.
        assert_eq!(envelope["format"], "lifeboat-manifest-v2", "{envelope}");
        assert_eq!(envelope["writer"], "default", "{envelope}");
        assert_eq!(envelope["signature"].as_str().unwrap().len(), 128);
        let v = &envelope["signed"];
        assert_eq!(v["plan"], "app-data", "{v}");
        // Root, location, probes and unreadable paths are sealed to the details key.
        assert!(v.get("root").is_none(), "{v}");
        assert!(v["source"].get("location").is_none(), "{v}");
        assert!(!v["details"].as_str().unwrap().is_empty(), "{v}");
        assert_eq!(v["stats"]["files"], 2, "{v}");
    }
    // keys/secrets-0001.age holds the repository secrets, for the identity and the writer.
    let k = ws.region("us-west-2").join("keys/secrets-0001.age");
    let by_identity = age_decrypt(&ws.path("keys/identity.txt"), &k).unwrap();
    let by_writer = age_decrypt(&ws.path("keys/writer.key"), &k).unwrap();
    assert_eq!(by_identity, by_writer);
    let v: serde_json::Value = serde_json::from_slice(&by_identity).unwrap();
    assert_eq!(v["format"], "lifeboat-secrets", "{v}");
    assert_eq!(v["epoch"], 1);
    for key in ["chunk_id_key", "index_key"] {
        assert_eq!(v[key].as_str().unwrap().len(), 64, "{key}");
    }
    assert_eq!(v["chunker_seed"].as_str().unwrap().len(), 16);
    assert!(
        !ws.region("us-west-2").join("keys/writer.age").exists(),
        "v2 does not store the writer key"
    );
}

#[test]
fn config_is_plaintext_json_without_secrets() {
    let (ws, _, _) = backed_up();
    let bytes = std::fs::read(ws.region("us-west-2").join("config")).unwrap();
    assert_eq!(
        bytes,
        std::fs::read(ws.region("us-east-2").join("config")).unwrap(),
        "both regions hold the same repository"
    );
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("config is JSON");
    assert_eq!(v["format"], "lifeboat-repository");
    assert_eq!(v["version"], 2);
    let recipients = std::fs::read_to_string(ws.path("keys/recipients.txt")).unwrap();
    let recipient = recipients.lines().find(|l| l.starts_with("age1")).unwrap();
    assert_eq!(v["recipients"], serde_json::json!([recipient]));
    assert_eq!(v["epochs"][0]["epoch"], 1);
    assert_eq!(v["epochs"][0]["recipients"], serde_json::json!([recipient]));
    assert!(v["writer_recipient"].as_str().unwrap().starts_with("age1"));
    // No object in either region carries a secret key in the clear.
    for region in ["us-west-2", "us-east-2"] {
        for p in ws.objects(region, "") {
            let b = std::fs::read(&p).unwrap();
            assert!(
                !b.windows(14).any(|w| w == b"AGE-SECRET-KEY"),
                "{p:?} holds a secret key in the clear"
            );
        }
    }
}

/// The v1 fixture copied to a temporary directory (never used in place).
fn v1_fixture() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("cp")
        .arg("-r")
        .arg(src.join("repo"))
        .arg(dir.path().join("repo"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let identity = dir.path().join("identity.txt");
    std::fs::copy(src.join("identity.txt"), &identity).unwrap();
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
    let repo = dir.path().join("repo");
    (dir, repo, identity)
}

/// `dir MODE PATH`, `file MODE SHA256 PATH`, `link TARGET PATH`, sorted (expected.txt).
fn listing(root: &Path) -> String {
    let script = r#"
import os, sys, hashlib, stat
root = sys.argv[1]; out = []
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        p = os.path.join(d, n); st = os.lstat(p); rel = os.path.relpath(p, root)
        if stat.S_ISLNK(st.st_mode): out.append(f"link {os.readlink(p)} {rel}")
        elif stat.S_ISDIR(st.st_mode): out.append(f"dir {st.st_mode & 0o7777:o} {rel}")
        else: out.append(f"file {st.st_mode & 0o7777:o} {hashlib.sha256(open(p, 'rb').read()).hexdigest()} {rel}")
print("\n".join(sorted(out)))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(root)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn bare(args: &[&str], repo: &Path, identity: &Path) -> std::process::Output {
    Command::new(crate::common::bin())
        .args(args)
        .arg("--region")
        .arg(format!("fixture=local:{}", repo.display()))
        .arg("--identity")
        .arg(identity)
        .env_remove("LIFEBOAT_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn the_v1_fixture_restores_identically_and_upgrades_in_place() {
    let (dir, repo, identity) = v1_fixture();
    let expected = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/expected.txt"),
    )
    .unwrap();
    let restore = |to: &str| {
        let target = dir.path().join(to);
        let out = bare(
            &["restore", "fx", "--to", target.to_str().unwrap()],
            &repo,
            &identity,
        );
        assert!(
            out.status.success(),
            "restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            listing(&target),
            expected,
            "restore of the v1 fixture into {to}"
        );
    };
    restore("before");
    let out = bare(&["upgrade", "--json"], &repo, &identity);
    assert!(
        out.status.success(),
        "upgrade: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["flipped"], serde_json::json!(["fixture"]));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("config")).unwrap()).unwrap();
    assert_eq!(config["version"], 2);
    assert!(repo.join("keys/secrets-0001.age").exists());
    // Nothing re-uploaded: the pack, index file and snapshot are the fixture's.
    for sub in ["data", "index", "snapshots"] {
        let listing = |p: &Path| {
            let mut v: Vec<String> = walk(&p.join(sub));
            v.sort();
            v
        };
        assert_eq!(
            listing(&repo),
            listing(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/repo")),
            "{sub}/ unchanged by the upgrade"
        );
    }
    restore("after");
}

fn walk(d: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}
