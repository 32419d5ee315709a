//! Trees: one JSON blob per directory, stored like data chunks so unchanged directories
//! deduplicate across snapshots. Nodes are sorted by name bytes; serialization is
//! deterministic so identical directories produce identical blobs.
//!
//! Names and symlink targets are bytes on Unix. Valid UTF-8 is stored in `name`/`target`;
//! anything else in `name_hex`/`target_hex`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_hex: Option<String>,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    pub mode: u32,
    pub mtime_ns: i64,
    pub uid: u32,
    pub gid: u32,
    /// Files: content length.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Files: BLAKE3 of the whole content (plain, not keyed: the tree is encrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Files: chunk ids in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Id>,
    /// Directories: the tree blob of the directory's contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_hex: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn split_bytes(b: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(b) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (None, Some(hex::encode(b))),
    }
}

fn join_bytes(s: &Option<String>, h: &Option<String>, what: &str) -> Result<Vec<u8>> {
    match (s, h) {
        (Some(s), None) => Ok(s.as_bytes().to_vec()),
        (None, Some(h)) => {
            hex::decode(h).map_err(|_| RepoError::Corrupt(format!("tree: bad {what}_hex")))
        }
        _ => Err(RepoError::Corrupt(format!(
            "tree: node needs exactly one of {what}, {what}_hex"
        ))),
    }
}

impl Node {
    pub fn new(name: &OsStr, kind: NodeKind) -> Node {
        let (name, name_hex) = split_bytes(name.as_bytes());
        Node {
            name,
            name_hex,
            kind,
            mode: 0,
            mtime_ns: 0,
            uid: 0,
            gid: 0,
            size: 0,
            hash: None,
            chunks: Vec::new(),
            subtree: None,
            target: None,
            target_hex: None,
        }
    }

    pub fn name_bytes(&self) -> Result<Vec<u8>> {
        join_bytes(&self.name, &self.name_hex, "name")
    }

    /// The name, checked to be one safe path component: never empty, `.`, `..`, and never
    /// containing `/` or NUL. A malicious repository must not steer a restore outside its
    /// target, so every consumer of tree names goes through this.
    pub fn safe_name(&self) -> Result<std::ffi::OsString> {
        let b = self.name_bytes()?;
        if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
            return Err(RepoError::Corrupt(format!(
                "tree entry {:?} would escape the restore target; refusing it",
                String::from_utf8_lossy(&b)
            )));
        }
        Ok(std::ffi::OsStr::from_bytes(&b).to_os_string())
    }

    pub fn set_target(&mut self, target: &OsStr) {
        let (t, th) = split_bytes(target.as_bytes());
        self.target = t;
        self.target_hex = th;
    }

    pub fn target_bytes(&self) -> Result<Vec<u8>> {
        join_bytes(&self.target, &self.target_hex, "target")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Deterministic bytes: nodes sorted by name.
    pub fn to_bytes(&mut self) -> Result<Vec<u8>> {
        self.nodes.sort_by(|a, b| {
            let ka = a.name_bytes().unwrap_or_default();
            let kb = b.name_bytes().unwrap_or_default();
            ka.cmp(&kb)
        });
        serde_json::to_vec(self).map_err(|e| RepoError::Invalid(format!("tree: {e}")))
    }

    /// Parse a tree blob and check every name is a safe, unique path component.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Tree> {
        let tree: Tree = serde_json::from_slice(bytes)
            .map_err(|e| RepoError::Corrupt(format!("{what}: not a valid tree: {e}")))?;
        let mut seen = std::collections::HashSet::new();
        for n in &tree.nodes {
            let name = n.safe_name()?;
            if !seen.insert(name.clone()) {
                return Err(RepoError::Corrupt(format!(
                    "{what}: entry {:?} appears twice; refusing the tree",
                    name
                )));
            }
            match n.kind {
                NodeKind::Dir if n.subtree.is_none() => {
                    return Err(RepoError::Corrupt(format!(
                        "{what}: directory {name:?} has no subtree"
                    )))
                }
                NodeKind::Symlink => {
                    n.target_bytes()?;
                }
                _ => {}
            }
        }
        Ok(tree)
    }
}
