#!/usr/bin/env python3
"""Restore a lifeboat snapshot WITHOUT lifeboat: only Python 3, Debian's `age` and `zstd`.

    python3 recover.py REPO_DIR IDENTITY_FILE TARGET_DIR [SNAPSHOT_ID_PREFIX]

REPO_DIR is one region's copy of the repository (a local region directory, or an S3
prefix downloaded with `aws s3 sync`). Without a snapshot id the newest snapshot is
restored. Packs are decrypted one at a time into a scratch directory next to TARGET_DIR.
See docs/FORMAT.md for the format this follows. Every pack is authenticated by age; file
contents are not re-hashed here (BLAKE3 is not in Python's standard library: compare with
`b3sum` if you have it).
"""
import json
import os
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


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    repo, identity, target = sys.argv[1], sys.argv[2], sys.argv[3]
    want = sys.argv[4] if len(sys.argv) > 4 else None
    scratch = tempfile.mkdtemp(prefix="lifeboat-recover-")

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

    # 2. Pick the snapshot: manifests are age files (JSON inside).
    manifests = []
    for name in os.listdir(os.path.join(repo, "snapshots")):
        if want and not name.startswith(want):
            continue
        m = json.loads(age_decrypt(identity, os.path.join(repo, "snapshots", name)))
        manifests.append((m["time"], name, m))
    if not manifests:
        sys.exit("no matching snapshot")
    _, snap_id, manifest = max(manifests)
    print(f"restoring snapshot {snap_id[:8]} of plan {manifest['plan']} into {target}")

    # 3. Walk the trees (one JSON blob per directory) and write files, links, dirs.
    def name_of(node, key):
        if key in node:
            return node[key].encode()
        return bytes.fromhex(node[key + "_hex"])

    def restore(tree_id, dest):
        os.makedirs(dest, exist_ok=True)
        for node in json.loads(blob(tree_id))["nodes"]:
            name = name_of(node, "name")
            if name in (b"", b".", b"..") or b"/" in name:
                raise ValueError(f"unsafe name {name!r}")
            path = os.path.join(os.fsencode(dest), name)
            if node["type"] == "dir":
                restore(node["subtree"], path)
            elif node["type"] == "file":
                with open(path, "xb") as f:
                    for cid in node.get("chunks", []):
                        f.write(blob(cid))
            elif node["type"] == "symlink":
                os.symlink(name_of(node, "target"), path)
                continue
            os.chmod(path, node["mode"])
            os.utime(path, ns=(node["mtime_ns"], node["mtime_ns"]))

    restore(manifest["root"], target)
    print("done")


if __name__ == "__main__":
    main()
