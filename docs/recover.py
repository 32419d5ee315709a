#!/usr/bin/env python3
"""Restore a lifeboat snapshot WITHOUT lifeboat: only Python 3, Debian's `age` and `zstd`.

    python3 recover.py REPO_DIR IDENTITY_FILE TARGET_DIR [SNAPSHOT_ID_PREFIX]

REPO_DIR is one region's copy of the repository (a local region directory, or an S3
prefix downloaded with `aws s3 sync`). Without a snapshot id the newest snapshot is
restored. Packs are decrypted one at a time into a scratch directory next to TARGET_DIR.
See docs/FORMAT.md for the format this follows. Every pack is authenticated by age; file
contents are not re-hashed here (BLAKE3 is not in Python's standard library: compare with
`b3sum` if you have it).

File attributes (format v2 tree nodes) are restored as far as Python's standard library
reaches: hardlinks (os.link), sparse files (holes left by seeking, never written), extended
attributes including POSIX ACLs and file capabilities (os.setxattr; trusted.* and
security.* need root), FIFOs and device nodes (os.mkfifo, os.mknod; devices need root),
owners by id (as root), and the times of files, directories (after their contents) and
symlinks. What the running user may not set is skipped and counted.
"""
import atexit
import base64
import errno
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile

ENTRY = struct.Struct("<BB32sII")  # kind, compression, chunk id, stored length, raw length


def age_decrypt(identity, path):
    return subprocess.run(["age", "-d", "-i", identity, path], check=True, capture_output=True).stdout


def zstd_decompress(data):
    return subprocess.run(["zstd", "-d", "-q", "-c"], input=data, check=True, capture_output=True).stdout


def read_pack_table(plain):
    if plain[-8:] != b"LBPACK01":
        raise ValueError("missing pack trailer")
    (n,) = struct.unpack("<I", plain[-12:-8])
    table_start = len(plain) - 12 - n * ENTRY.size
    offset, entries = 0, []
    for i in range(n):
        kind, comp, cid, length, raw = ENTRY.unpack_from(plain, table_start + i * ENTRY.size)
        entries.append((cid.hex(), kind, comp, offset, length, raw))
        offset += length
    return entries


def open_details(repo, identity, scratch, details):
    """A sealed manifest's details (root, location, probes, unreadable): base64 of an age
    file to the details key, whose secret is in keys/details-NNNN.age (one per recipient
    epoch, encrypted to that epoch's recipients). The key is written to the scratch
    directory (mode 0700, removed on exit) only for `age -i` to read."""
    keys = sorted(n for n in os.listdir(os.path.join(repo, "keys")) if n.startswith("details-"))
    for name in reversed(keys):
        try:
            key = json.loads(age_decrypt(identity, os.path.join(repo, "keys", name)))
        except subprocess.CalledProcessError:
            continue  # another epoch's copy: this identity is no recipient of it
        key_file = os.path.join(scratch, "details-key.txt")
        blob_file = os.path.join(scratch, "details.age")
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key["identity"] + "\n")
        with open(blob_file, "wb") as f:
            f.write(base64.b64decode(details))
        try:
            return json.loads(age_decrypt(key_file, blob_file))
        finally:
            os.remove(key_file)
            os.remove(blob_file)
    sys.exit("the manifest's details are sealed and no keys/details-*.age opens with this identity")


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    repo, identity, target = sys.argv[1], sys.argv[2], sys.argv[3]
    want = sys.argv[4] if len(sys.argv) > 4 else None
    # Decrypted packs are plaintext backup data: keep them next to TARGET_DIR (same
    # filesystem and owner as the restored files, mode 0700) and remove them on every exit.
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".lifeboat-recover-", dir=parent)
    atexit.register(shutil.rmtree, scratch, True)

    # 1. Decrypt every pack once; remember where each chunk lives.
    chunks = {}
    for dirpath, _, files in os.walk(os.path.join(repo, "data")):
        for name in files:
            if name.startswith("."):
                continue
            plain = age_decrypt(identity, os.path.join(dirpath, name))
            out = os.path.join(scratch, name)
            with open(out, "wb") as f:
                f.write(plain)
            for cid, kind, comp, off, length, raw in read_pack_table(plain):
                chunks[cid] = (out, comp, off, length, raw)

    def blob(cid):
        path, comp, off, length, raw = chunks[cid]
        with open(path, "rb") as f:
            f.seek(off)
            data = f.read(length)
        data = zstd_decompress(data) if comp == 1 else data
        if len(data) != raw:
            raise ValueError(f"chunk {cid}: wrong length")
        return data

    # 2. Pick the snapshot: manifests are age files (JSON inside; a signed one wraps the
    #    manifest in {"format": "lifeboat-manifest-v2", "writer", "signature", "signed"}).
    #    This script does not check signatures: run it on copies you trust.
    manifests = []
    for name in os.listdir(os.path.join(repo, "snapshots")):
        if want and not name.startswith(want):
            continue
        m = json.loads(age_decrypt(identity, os.path.join(repo, "snapshots", name)))
        m = m.get("signed", m)
        manifests.append((m["time"], name, m))
    if not manifests:
        sys.exit("no matching snapshot")
    _, snap_id, manifest = max(manifests)
    if "details" in manifest:
        manifest.update(open_details(repo, identity, scratch, manifest["details"]))
    print(f"restoring snapshot {snap_id[:8]} of plan {manifest['plan']} into {target}")

    # 3. Walk the trees (one JSON blob per directory) and write files, links, dirs.
    def name_of(node, key):
        if key in node:
            return node[key].encode()
        return bytes.fromhex(node[key + "_hex"])

    root = os.geteuid() == 0
    skipped = {"extended attributes": 0, "device nodes": 0}
    links = {}  # hardlink key -> the path restored first

    def write_file(path, node):
        # A sparse file: the chunks hold its data extents back to back; seek over holes.
        extents = node.get("sparse")
        places = iter(extents or [])
        off, room = (0, float("inf")) if extents is None else (0, 0)
        with open(path, "xb") as f:
            for cid in node.get("chunks", []):
                data = blob(cid)
                while data:
                    if room == 0:
                        off, room = next(places)
                    f.seek(off)
                    n = min(room, len(data))
                    f.write(data[:n])
                    data, off, room = data[n:], off + n, room - n
            f.truncate(node.get("size", 0))

    def attributes(path, node, link=False):
        follow = not link
        if root:
            os.chown(path, node["uid"], node["gid"], follow_symlinks=follow)
        for name, value in sorted(node.get("xattrs", {}).items()):
            try:
                os.setxattr(path, name, bytes.fromhex(value), follow_symlinks=follow)
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EACCES, errno.ENOTSUP):
                    raise
                skipped["extended attributes"] += 1
        if not link:
            os.chmod(path, node["mode"])
        os.utime(path, ns=(node["mtime_ns"], node["mtime_ns"]), follow_symlinks=follow)

    def restore(tree_id, dest):
        os.makedirs(dest, exist_ok=True)
        for node in json.loads(blob(tree_id))["nodes"]:
            name = name_of(node, "name")
            if name in (b"", b".", b"..") or b"/" in name:
                raise ValueError(f"unsafe name {name!r}")
            path = os.path.join(os.fsencode(dest), name)
            kind = node["type"]
            if kind == "dir":
                restore(node["subtree"], path)
            elif kind == "file":
                key = tuple(node["hardlink"]) if "hardlink" in node else None
                if key in links:
                    os.link(links[key], path)  # same inode: its attributes are set
                    continue
                write_file(path, node)
                if key is not None:
                    links[key] = path
            elif kind == "symlink":
                os.symlink(name_of(node, "target"), path)
                attributes(path, node, link=True)
                continue
            elif kind == "fifo":
                os.mkfifo(path, 0o600)
            elif kind in ("chardev", "blockdev"):
                fmt = stat.S_IFCHR if kind == "chardev" else stat.S_IFBLK
                try:
                    os.mknod(path, fmt | 0o600, node["rdev"])
                except PermissionError:
                    skipped["device nodes"] += 1
                    continue
            else:
                print(f"skipping {path!r}: unknown type {kind}", file=sys.stderr)
                continue
            # Directories get theirs after their contents, so their times stay.
            attributes(path, node)

    restore(manifest["root"], target)
    for what, n in skipped.items():
        if n:
            print(f"warning: {n} {what} not restored (not permitted or not supported)", file=sys.stderr)
    print("done")


if __name__ == "__main__":
    main()
