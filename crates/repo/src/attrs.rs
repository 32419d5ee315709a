//! File attributes beyond content: reading extended attributes at backup, and applying
//! owner, extended attributes (ACLs and capabilities included), mode and times at restore.
//!
//! Restores apply them in the one order that keeps each: owner first (a `chown` clears
//! setuid/setgid and `security.capability`), then extended attributes, then the mode (the
//! ACL mask and the mode's group bits agree), then times. Files and directories are reached
//! through an open descriptor; FIFOs and device nodes (which must not be opened) through an
//! `O_PATH` descriptor via `/proc/self/fd`; symlinks with the `l*` calls that never follow
//! them. So nothing swapped in during a restore redirects an attribute elsewhere.
//!
//! What the restoring user may not set (as non-root: `trusted.*`, `security.*`, owners,
//! device nodes) or the target filesystem cannot hold is skipped and counted in
//! [`Skipped`], which the restore reports once, never per file.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::XattrFlags;

use crate::tree::{Node, Xattrs};

/// The extended attributes of `path` (not following a symlink), with their values in hex.
/// A filesystem without xattr support has none. Names that are not UTF-8 are left out and
/// returned in the second list.
pub fn read_xattrs(path: &Path) -> io::Result<(Xattrs, Vec<String>)> {
    let mut out = Xattrs::new();
    let mut odd = Vec::new();
    let names = match list(path) {
        Ok(n) => n,
        Err(e) if unsupported(&e) => return Ok((out, odd)),
        Err(e) => return Err(e),
    };
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(text) = std::str::from_utf8(name) else {
            odd.push(String::from_utf8_lossy(name).into_owned());
            continue;
        };
        match get(path, text) {
            Ok(v) => {
                out.insert(text.to_string(), hex::encode(v));
            }
            // Removed since the listing: it is simply not there.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((out, odd))
}

/// Call a size query then the read, growing the buffer if the value grew in between.
fn sized(
    query: impl Fn() -> rustix::io::Result<usize>,
    read: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Vec<u8>> {
    for _ in 0..4 {
        let n = query()?;
        let mut buf = vec![0u8; n];
        match read(&mut buf) {
            Ok(got) => {
                buf.truncate(got);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("extended attributes keep changing size"))
}

fn list(path: &Path) -> io::Result<Vec<u8>> {
    // Most files have no extended attributes, or a short list: one call into a small
    // buffer answers for them (the size query is a second syscall per entry, and a tree of
    // small files pays every syscall per file). A longer list takes the sized path.
    let mut small = [0u8; 256];
    match rustix::fs::llistxattr(path, &mut small[..]) {
        Ok(n) => return Ok(small[..n].to_vec()),
        Err(rustix::io::Errno::RANGE) => {}
        Err(e) => return Err(e.into()),
    }
    sized(
        || rustix::fs::llistxattr_query(path),
        |b| rustix::fs::llistxattr(path, b),
    )
}

fn get(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    sized(
        || rustix::fs::lgetxattr_query(path, name),
        |b| rustix::fs::lgetxattr(path, name, b),
    )
}

/// The filesystem holds no extended attributes (of this kind).
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS))
}

/// Not allowed for the restoring user.
fn not_permitted(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

/// What a restore could not set, counted so the restore says it once.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Skipped {
    /// Extended attributes the restoring user may not set (`trusted.*`, `security.*` as
    /// non-root) or the target filesystem does not support.
    pub xattrs: u64,
    /// Device nodes not created: making them needs root (`CAP_MKNOD`).
    pub devices: u64,
    /// Owners not set: only root can give files away.
    pub owners: u64,
}

impl Skipped {
    /// One line per kind of thing skipped, for the restore's warnings.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.xattrs > 0 {
            w.push(format!(
                "{} extended attributes not restored: not permitted for this user (trusted.* and security.* need root) or not supported by the target filesystem",
                self.xattrs
            ));
        }
        if self.devices > 0 {
            w.push(format!(
                "{} device nodes not restored: creating them needs root",
                self.devices
            ));
        }
        if self.owners > 0 {
            w.push(format!(
                "{} entries keep the restoring user as owner: only root restores owners (pass --no-owner to silence this)",
                self.owners
            ));
        }
        w
    }
}

/// How a restored entry is reached to set its attributes.
pub(crate) enum Handle<'a> {
    /// An open file or directory.
    Fd(&'a File),
    /// A FIFO or device node, through an `O_PATH` descriptor (kept open in the `File`).
    OPath(&'a File),
    /// A symlink, by path: the `l*` calls act on the link itself.
    Symlink(&'a Path),
}

/// What to leave out when applying attributes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Apply {
    pub no_owner: bool,
    pub no_setuid: bool,
    pub no_xattrs: bool,
}

impl Handle<'_> {
    fn proc_path(fd: &File) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }

    fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        let (u, g) = (
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        );
        match self {
            Handle::Fd(f) => rustix::fs::fchown(f.as_fd(), u, g)?,
            Handle::OPath(f) => rustix::fs::chownat(
                f.as_fd(),
                "",
                u,
                g,
                rustix::fs::AtFlags::EMPTY_PATH | rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )?,
            Handle::Symlink(p) => std::os::unix::fs::lchown(p, Some(uid), Some(gid))?,
        }
        Ok(())
    }

    fn setxattr(&self, name: &str, value: &[u8]) -> io::Result<()> {
        let flags = XattrFlags::empty();
        match self {
            Handle::Fd(f) => rustix::fs::fsetxattr(f.as_fd(), name, value, flags)?,
            Handle::OPath(f) => rustix::fs::setxattr(Self::proc_path(f), name, value, flags)?,
            Handle::Symlink(p) => rustix::fs::lsetxattr(*p, name, value, flags)?,
        }
        Ok(())
    }

    fn chmod(&self, mode: u32) -> io::Result<()> {
        let perm = std::fs::Permissions::from_mode(mode);
        match self {
            Handle::Fd(f) => f.set_permissions(perm),
            Handle::OPath(f) => std::fs::set_permissions(Self::proc_path(f), perm),
            // Linux has no symlink modes.
            Handle::Symlink(_) => Ok(()),
        }
    }

    fn set_mtime(&self, mtime_ns: i64) -> io::Result<()> {
        let t = filetime::FileTime::from_unix_time(
            mtime_ns.div_euclid(1_000_000_000),
            mtime_ns.rem_euclid(1_000_000_000) as u32,
        );
        match self {
            Handle::Fd(f) => filetime::set_file_handle_times(f, None, Some(t)),
            // Not filetime::set_file_mtime: it opens the file, which blocks on a FIFO.
            Handle::OPath(f) => {
                let times = rustix::fs::Timestamps {
                    last_access: rustix::fs::Timespec {
                        tv_sec: 0,
                        tv_nsec: rustix::fs::UTIME_OMIT,
                    },
                    last_modification: rustix::fs::Timespec {
                        tv_sec: mtime_ns.div_euclid(1_000_000_000),
                        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
                    },
                };
                rustix::fs::utimensat(
                    rustix::fs::CWD,
                    Self::proc_path(f),
                    &times,
                    rustix::fs::AtFlags::empty(),
                )?;
                Ok(())
            }
            Handle::Symlink(p) => filetime::set_symlink_file_times(p, t, t),
        }
    }
}

/// Apply `node`'s owner, extended attributes, mode and time through `h`, counting in
/// `skipped` what this user or filesystem cannot take.
pub(crate) fn apply(
    h: &Handle<'_>,
    node: &Node,
    opts: Apply,
    skipped: &mut Skipped,
) -> io::Result<()> {
    if !opts.no_owner {
        match h.chown(node.uid, node.gid) {
            Ok(()) => {}
            Err(e) if not_permitted(&e) => {
                // Giving a file to yourself is no loss; anything else is worth a count.
                if node.uid != rustix::process::geteuid().as_raw()
                    || node.gid != rustix::process::getegid().as_raw()
                {
                    skipped.owners += 1;
                }
            }
            Err(e) => return Err(e),
        }
    }
    if !opts.no_xattrs {
        for (name, value) in &node.xattrs {
            if opts.no_setuid && name == "security.capability" {
                continue;
            }
            let value = hex::decode(value).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("extended attribute {name}: the snapshot's value is not hex"),
                )
            })?;
            match h.setxattr(name, &value) {
                Ok(()) => {}
                Err(e) if not_permitted(&e) || unsupported(&e) => skipped.xattrs += 1,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("set extended attribute {name}: {e}"),
                    ))
                }
            }
        }
    }
    let mut mode = node.mode & 0o7777;
    if opts.no_setuid {
        mode &= !0o6000;
    }
    h.chmod(mode)?;
    h.set_mtime(node.mtime_ns)
}

/// Create the FIFO or device node `node` at `path` (which must not exist) and apply its
/// attributes. `Ok(false)`: a device node this user may not create, skipped and counted.
pub(crate) fn make_special(
    path: &Path,
    node: &Node,
    opts: Apply,
    skipped: &mut Skipped,
) -> io::Result<bool> {
    use crate::tree::NodeKind;
    use rustix::fs::{FileType, Mode};
    let (ft, rdev) = match node.kind {
        NodeKind::Fifo => (FileType::Fifo, 0),
        NodeKind::Chardev => (FileType::CharacterDevice, node.rdev.unwrap_or(0)),
        NodeKind::Blockdev => (FileType::BlockDevice, node.rdev.unwrap_or(0)),
        _ => return Err(io::Error::other("not a FIFO or device node")),
    };
    match rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        ft,
        Mode::from_raw_mode(0o600),
        rdev as rustix::fs::Dev,
    ) {
        Ok(()) => {}
        Err(rustix::io::Errno::PERM) if ft != FileType::Fifo => {
            skipped.devices += 1;
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)?;
    // What is there now must be the node just made, not something swapped in.
    let m = f.metadata()?;
    let same = match node.kind {
        NodeKind::Fifo => m.file_type().is_fifo(),
        NodeKind::Chardev => m.file_type().is_char_device() && m.rdev() == rdev,
        _ => m.file_type().is_block_device() && m.rdev() == rdev,
    };
    if !same {
        return Err(io::Error::other("replaced during the restore; not touched"));
    }
    apply(&Handle::OPath(&f), node, opts, skipped)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_xattrs_read_back_in_hex() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let f = File::open(&p).unwrap();
        match Handle::Fd(&f).setxattr("user.lifeboat", b"v\0w") {
            Ok(()) => {}
            // Some filesystems (old tmpfs) hold no user.* attributes: nothing to test there.
            Err(e) if unsupported(&e) => return,
            Err(e) => panic!("{e}"),
        }
        let (x, odd) = read_xattrs(&p).unwrap();
        assert!(odd.is_empty());
        assert_eq!(x.get("user.lifeboat").map(String::as_str), Some("760077"));
    }

    /// A name list longer than the one-call buffer takes the sized path, whole.
    #[test]
    fn a_long_list_of_names_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let f = File::open(&p).unwrap();
        let names: Vec<String> = (0..20)
            .map(|i| format!("user.lifeboat-a-rather-long-attribute-name-{i:02}"))
            .collect();
        assert!(names.iter().map(|n| n.len() + 1).sum::<usize>() > 256);
        for (i, n) in names.iter().enumerate() {
            match Handle::Fd(&f).setxattr(n, &[i as u8]) {
                Ok(()) => {}
                Err(e) if unsupported(&e) => return,
                Err(e) => panic!("{e}"),
            }
        }
        let (x, odd) = read_xattrs(&p).unwrap();
        assert!(odd.is_empty());
        for (i, n) in names.iter().enumerate() {
            assert_eq!(x.get(n.as_str()), Some(&format!("{i:02x}")), "{n}");
        }
    }

    #[test]
    fn skips_are_said_once_per_kind() {
        let s = Skipped {
            xattrs: 3,
            devices: 1,
            owners: 0,
        };
        let w = s.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("3 extended attributes"), "{w:?}");
        assert!(Skipped::default().warnings().is_empty());
    }
}
