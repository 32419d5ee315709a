//! Trees: one JSON blob per directory, stored like data chunks so unchanged directories
//! deduplicate across snapshots. Nodes are sorted by name bytes; serialization is
//! deterministic so identical directories produce identical blobs.
//!
//! Names and symlink targets are bytes on Unix. Valid UTF-8 is stored in `name`/`target`;
//! anything else in `name_hex`/`target_hex`.
//!
//! Format v2 adds optional attribute fields (owner names, extended attributes, hardlink
//! groups, sparse extents, device numbers) and the `fifo`/`chardev`/`blockdev` kinds. Each
//! is omitted when empty, so a v1 tree (without them) parses unchanged.

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
    /// A named pipe (FIFO).
    Fifo,
    /// A character device node; `rdev` holds its device number.
    Chardev,
    /// A block device node; `rdev` holds its device number.
    Blockdev,
}

/// Extended attributes: name → value (hex), sorted by name so trees stay deterministic.
pub type Xattrs = std::collections::BTreeMap<String, String>;

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
    /// v2: the owner's user name at backup (restores use `uid`; the name is for people).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// v2: the group's name at backup (restores use `gid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// v2: extended attributes, including POSIX ACLs (`system.posix_acl_access`,
    /// `system.posix_acl_default`) and file capabilities (`security.capability`).
    #[serde(default, skip_serializing_if = "Xattrs::is_empty")]
    pub xattrs: Xattrs,
    /// v2, files: `[device, inode]` at backup, set when the file had more than one link.
    /// Files of a snapshot with the same value are one file: restore writes the first and
    /// hard-links the others to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardlink: Option<(u64, u64)>,
    /// v2, files: a sparse file's data extents `[offset, length]`, sorted and disjoint; the
    /// chunks hold only these bytes, back to back, and everything else is a hole. Absent
    /// for a file stored densely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse: Option<Vec<(u64, u64)>>,
    /// v2, device nodes: the device number (`st_rdev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
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
            user: None,
            group: None,
            xattrs: Xattrs::new(),
            hardlink: None,
            sparse: None,
            rdev: None,
        }
    }

    /// The sparse extents checked against the file size: sorted, disjoint, inside the file.
    /// Returns the number of data bytes they hold.
    pub fn check_sparse(&self) -> Result<u64> {
        let Some(ext) = &self.sparse else {
            return Ok(self.size);
        };
        let mut end = 0u64;
        let mut data = 0u64;
        for &(off, len) in ext {
            let stop = off.checked_add(len).filter(|&s| s <= self.size);
            match stop {
                Some(stop) if off >= end => {
                    end = stop;
                    data += len;
                }
                _ => {
                    return Err(RepoError::Corrupt(format!(
                        "tree: sparse extents of {:?} overlap, are unsorted or pass its size",
                        String::from_utf8_lossy(&self.name_bytes().unwrap_or_default())
                    )))
                }
            }
        }
        Ok(data)
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
                NodeKind::Chardev | NodeKind::Blockdev if n.rdev.is_none() => {
                    return Err(RepoError::Corrupt(format!(
                        "{what}: device node {name:?} has no rdev"
                    )))
                }
                _ => {}
            }
            if n.kind != NodeKind::File && (n.hardlink.is_some() || n.sparse.is_some()) {
                return Err(RepoError::Corrupt(format!(
                    "{what}: {name:?} is not a file but has file-only fields (hardlink, sparse)"
                )));
            }
            n.check_sparse()
                .map_err(|e| RepoError::Corrupt(format!("{what}: {e}")))?;
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory as format v1 wrote it: no attribute fields, the three v1 kinds.
    const V1_TREE: &str = r#"{"nodes":[
        {"name":"a.txt","type":"file","mode":420,"mtime_ns":1700000000123456789,"uid":1000,"gid":1000,"size":6,"hash":"aa","chunks":["0000000000000000000000000000000000000000000000000000000000000001"]},
        {"name":"empty","type":"file","mode":384,"mtime_ns":0,"uid":0,"gid":0},
        {"name":"link","type":"symlink","mode":511,"mtime_ns":5,"uid":0,"gid":0,"target":"a.txt"},
        {"name_hex":"ff01","type":"dir","mode":493,"mtime_ns":7,"uid":0,"gid":0,"subtree":"0000000000000000000000000000000000000000000000000000000000000002"}
    ]}"#;

    #[test]
    fn a_v1_tree_parses_without_the_v2_fields() {
        let t = Tree::parse(V1_TREE.as_bytes(), "v1 tree").expect("v1 tree parses");
        assert_eq!(t.nodes.len(), 4);
        let f = &t.nodes[0];
        assert_eq!((f.kind, f.size, f.chunks.len()), (NodeKind::File, 6, 1));
        assert!(f.xattrs.is_empty() && f.hardlink.is_none() && f.sparse.is_none());
        assert!(f.user.is_none() && f.group.is_none() && f.rdev.is_none());
        assert_eq!(t.nodes[2].target_bytes().unwrap(), b"a.txt");
        assert_eq!(t.nodes[3].name_bytes().unwrap(), b"\xff\x01");
        // Unknown fields are still refused: a typo is not silently a v1 tree.
        let typo = V1_TREE.replace("\"uid\":1000,", "\"uid\":1000,\"xatrs\":{},");
        assert!(Tree::parse(typo.as_bytes(), "typo").is_err());
    }

    #[test]
    fn v2_fields_round_trip_and_are_checked() {
        let mut n = Node::new(OsStr::new("f"), NodeKind::File);
        n.size = 1 << 30;
        n.user = Some("root".into());
        n.xattrs.insert("user.k".into(), hex::encode(b"v"));
        n.hardlink = Some((2049, 77));
        n.sparse = Some(vec![(0, 4096), (1 << 20, 4096)]);
        let mut d = Node::new(OsStr::new("tty"), NodeKind::Chardev);
        d.rdev = Some(0x0501);
        let mut t = Tree {
            nodes: vec![n.clone(), d],
        };
        let bytes = t.to_bytes().unwrap();
        let back = Tree::parse(&bytes, "v2").unwrap();
        assert_eq!(back, t);
        assert_eq!(back.nodes[0].check_sparse().unwrap(), 8192);
        // Extents past the end, or overlapping, are corrupt.
        for bad in [vec![(0, 4096), (100, 10)], vec![((1 << 30) - 1, 2)]] {
            n.sparse = Some(bad);
            let bytes = serde_json::to_vec(&Tree {
                nodes: vec![n.clone()],
            })
            .unwrap();
            assert!(Tree::parse(&bytes, "bad").is_err());
        }
        // A device without its number, or a hardlink on a directory, is corrupt.
        let dev = Node::new(OsStr::new("d"), NodeKind::Blockdev);
        let bytes = serde_json::to_vec(&Tree { nodes: vec![dev] }).unwrap();
        assert!(Tree::parse(&bytes, "dev").is_err());
        let mut dir = Node::new(OsStr::new("d"), NodeKind::Dir);
        dir.subtree = Some(Id([0; 32]));
        dir.hardlink = Some((1, 2));
        let bytes = serde_json::to_vec(&Tree { nodes: vec![dir] }).unwrap();
        assert!(Tree::parse(&bytes, "dir").is_err());
    }
}
