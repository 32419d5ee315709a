#!/usr/bin/env python3
"""Deterministic benchmark corpora for `make bench` (Python 3 stdlib only).

  corpus.py tree DIR --size-mb N [--seed S]   a directory tree shaped like application data
  corpus.py dump FILE --size-mb N [--seed S]  one large CSV file, like a database dump
  corpus.py small DIR --files N [--seed S]    N small files (100-3000 B, one chunk each),
                                              1000 per directory: the metadata scale case
  corpus.py mutate DIR --stash STASH          change every 100th file (day 2); saves originals
  corpus.py unmutate DIR --stash STASH        put the originals back

The tree's byte budget is split ~15% small files (0.1-64 KiB, text-like: source, config,
JSON, logs), ~35% medium files (64 KiB-8 MiB: text, semi-compressible binary, already
compressed media) and ~50% a few large files (a log, a compressed archive, a disk-image-like
mix of zeros, text and random blocks). Text is drawn as short slices of a large pool of
pseudo-words, so it compresses like text (3-4x with zstd) but 1 MiB chunks do not
deduplicate by accident. Everything derives from the seed: the same arguments produce the
same bytes on every machine and Python 3 version with random.Random (Mersenne Twister).
"""

import argparse
import os
import random
import shutil
import sys

KIB = 1024
MIB = 1024 * KIB


class TextPool:
    """A pool of pseudo-English text; `take(n)` concatenates random short slices of it."""

    def __init__(self, rng, size=24 * MIB):
        letters = "etaoinshrdlucmfwypvbgkjqxz"
        weights = [12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1]
        words = []
        for _ in range(4000):
            n = rng.choice([1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 11])
            words.append("".join(rng.choices(letters, weights, k=n)))
        punct = [" "] * 14 + [", ", ". ", "\n", " = ", "(", ") ", ": ", "_", "{", "}\n"]
        parts = []
        total = 0
        while total < size:
            ws = rng.choices(words, k=512)
            ps = rng.choices(punct, k=512)
            s = "".join(w + p for w, p in zip(ws, ps))
            parts.append(s)
            total += len(s)
        self.pool = "".join(parts).encode()[:size]
        self.rng = rng

    def take(self, n):
        out = []
        got = 0
        pool, rng, plen = self.pool, self.rng, len(self.pool)
        while got < n:
            k = min(n - got, rng.randint(512, 8 * KIB))
            at = rng.randrange(0, plen - k)
            out.append(pool[at:at + k])
            got += k
        return b"".join(out)


def semi_binary(rng, text, n):
    """Structured binary: records of small integers, ids and some text (compresses ~2x)."""
    out = []
    got = 0
    while got < n:
        rec = (rng.randbytes(8) + bytes(8) + rng.getrandbits(16).to_bytes(4, "little")
               + text.take(44))
        out.append(rec * rng.randint(1, 4))
        got += len(out[-1])
    return b"".join(out)[:n]


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_stream(path, n, block_fn, block=4 * MIB):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = n
        while left > 0:
            k = min(block, left)
            f.write(block_fn(k))
            left -= k


def small_size(rng):
    # Log-normal around ~4 KiB, clipped to 100 B..64 KiB: the shape of source/config trees.
    return int(min(64 * KIB, max(100, rng.lognormvariate(8.3, 1.2))))


def gen_tree(root, size_mb, seed):
    rng = random.Random(seed)
    text = TextPool(random.Random(seed + 1))
    budget = size_mb * MIB
    small_budget = budget * 15 // 100
    medium_budget = budget * 35 // 100
    large_budget = budget - small_budget - medium_budget
    tmp = root + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    files = 0

    exts = [".txt", ".py", ".rs", ".json", ".md", ".log", ".html", ".toml", ".c", ".h"]
    n = 0
    used = 0
    while used < small_budget:
        size = min(small_size(rng), small_budget - used)
        d = "src/mod%02d/pkg%02d" % (n % 47, (n // 47) % 23)
        write(os.path.join(tmp, d, "file%06d%s" % (n, exts[n % len(exts)])), text.take(size))
        used += size
        n += 1
        files += 1

    n = 0
    used = 0
    while used < medium_budget:
        size = min(int(rng.uniform(64 * KIB, 8 * MIB)), medium_budget - used)
        kind = rng.choices(["text", "semi", "random"], [5, 3, 2])[0]
        d = "data/set%02d" % (n % 17)
        if kind == "text":
            write_stream(os.path.join(tmp, d, "report%05d.csv" % n), size, text.take)
        elif kind == "semi":
            write_stream(os.path.join(tmp, d, "table%05d.db" % n), size,
                         lambda k: semi_binary(rng, text, k))
        else:
            write_stream(os.path.join(tmp, d, "photo%05d.jpg" % n), size, rng.randbytes)
        used += size
        n += 1
        files += 1

    # Large: a log (text), a compressed archive (random), a disk image (zeros/text/random).
    log_n = large_budget * 45 // 100
    arc_n = large_budget * 25 // 100
    img_n = large_budget - log_n - arc_n
    write_stream(os.path.join(tmp, "large/app.log"), log_n, text.take)
    write_stream(os.path.join(tmp, "large/archive.tar.zst"), arc_n, rng.randbytes)

    def image_block(k):
        kind = rng.choices(["zero", "text", "random"], [3, 4, 3])[0]
        if kind == "zero":
            return bytes(k)
        if kind == "text":
            return text.take(k)
        return rng.randbytes(k)

    write_stream(os.path.join(tmp, "large/vm-disk.img"), img_n, image_block, block=1 * MIB)
    files += 3
    shutil.rmtree(root, ignore_errors=True)
    os.rename(tmp, root)
    print("generated %s: %d files, %d MiB" % (root, files, size_mb), file=sys.stderr)


def gen_dump(path, size_mb, seed):
    """A CSV dump of an orders table: highly compressible, like `pg_dump` plain output."""
    rng = random.Random(seed)
    statuses = ["paid", "pending", "shipped", "refunded", "cancelled"]
    cities = ["Lisbon", "Oslo", "Austin", "Osaka", "Lyon", "Pune", "Quito", "Perth", "Cork"]
    names = ["%s%s" % (a, b) for a in ["an", "be", "ca", "do", "el", "fi", "go", "ha", "io", "ju"]
             for b in ["ma", "ne", "ri", "so", "ta", "vo", "xe", "yu", "zo", "la"]]
    target = size_mb * MIB
    tmp = path + ".partial"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(tmp, "w", newline="\n") as f:
        f.write("COPY public.orders (id, created_at, customer, email, city, amount_cents, status, note) FROM stdin;\n")
        written = 0
        row = 0
        ts = 1_700_000_000
        while written < target:
            lines = []
            for _ in range(2000):
                row += 1
                ts += rng.randint(0, 40)
                name = rng.choice(names)
                lines.append("%d\t%d\t%s %s\t%s.%d@example.com\t%s\t%d\t%s\t%s\n" % (
                    row, ts, name, rng.choice(names), name, rng.randint(1, 99999),
                    rng.choice(cities), rng.randint(100, 500000), rng.choice(statuses),
                    "\\N" if rng.random() < 0.7 else "gift wrap %d" % rng.randint(1, 9)))
            s = "".join(lines)
            f.write(s)
            written += len(s)
        f.write("\\.\n")
    os.rename(tmp, path)
    print("generated %s: %d MiB, %d rows" % (path, size_mb, row), file=sys.stderr)


def gen_small(root, files, seed):
    """`files` files of 100-3000 bytes of text (distinct, so each is its own chunk), 1000 per
    directory, in directories of 100 (`d000/d000/f000000`)."""
    rng = random.Random(seed)
    pool = TextPool(rng, size=4 * MIB)
    tmp = root + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for i in range(files):
        d = os.path.join(tmp, "d%03d" % (i // 100000), "d%03d" % (i // 1000 % 100))
        if i % 1000 == 0:
            os.makedirs(d, exist_ok=True)
        body = ("%d\n" % i).encode() + pool.take(rng.randint(100, 3000))
        with open(os.path.join(d, "f%06d" % i), "wb") as f:
            f.write(body)
    os.rename(tmp, root)
    print("generated %s: %d files" % (root, files), file=sys.stderr)


def every_100th(root):
    """Every 100th regular file in sorted walk order (symlinks are not followed or counted)."""
    files = []
    for d, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(d, name)
            if not os.path.islink(path):
                files.append(path)
    return files[::100]


def mutate(root, stash):
    """Day 2: every 100th file (walk order): even ones get 1 KiB appended, odd ones get 4 KiB
    overwritten in the middle. Originals are copied into `stash` first."""
    rng = random.Random(4242)
    shutil.rmtree(stash, ignore_errors=True)
    os.makedirs(stash)
    changed = 0
    for i, path in enumerate(every_100th(root)):
        rel = os.path.relpath(path, root)
        dst = os.path.join(stash, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(path, dst)
        size = os.path.getsize(path)
        if i % 2 == 0 or size < 8 * KIB:
            with open(path, "ab") as f:
                f.write(("day 2 change %d\n" % i).encode() * 64)
        else:
            with open(path, "r+b") as f:
                f.seek(size // 2)
                f.write(rng.randbytes(4 * KIB))
        changed += 1
    print("mutated %d files" % changed, file=sys.stderr)


def unmutate(root, stash):
    for d, _, names in os.walk(stash):
        for name in names:
            src = os.path.join(d, name)
            shutil.copy2(src, os.path.join(root, os.path.relpath(src, stash)))
    shutil.rmtree(stash)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["tree", "dump", "small", "mutate", "unmutate"])
    ap.add_argument("path")
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20261)
    ap.add_argument("--files", type=int, default=300000)
    ap.add_argument("--stash")
    a = ap.parse_args()
    if a.what == "tree":
        gen_tree(a.path, a.size_mb, a.seed)
    elif a.what == "dump":
        gen_dump(a.path, a.size_mb, a.seed)
    elif a.what == "small":
        gen_small(a.path, a.files, a.seed)
    elif a.what == "mutate":
        mutate(a.path, a.stash)
    else:
        unmutate(a.path, a.stash)


if __name__ == "__main__":
    main()
