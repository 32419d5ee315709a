//! Sparse files at backup: find a file's data extents with `SEEK_DATA`/`SEEK_HOLE` and read
//! only those, so a 1 GiB file with a few blocks of data is read, chunked and stored as
//! those blocks. The content hash stays the hash of the whole file (holes read as zeros),
//! which is what a restore re-reads and compares.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};

/// The data extents `(offset, length)` of `f` (size `size`), or `None` when the file has
/// no holes worth recording, or the filesystem cannot say. Only asked of files that
/// allocate fewer blocks than their size, so dense files cost no extra system calls.
pub fn data_extents(f: &File, m: &std::fs::Metadata) -> Option<Vec<(u64, u64)>> {
    let size = m.len();
    if size == 0 || m.blocks().saturating_mul(512) >= size {
        return None;
    }
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match rustix::fs::seek(f, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            // No data after `pos`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            // SEEK_DATA unsupported here: store the file densely.
            Err(_) => return None,
        };
        if data >= size {
            break;
        }
        let hole = match rustix::fs::seek(f, rustix::fs::SeekFrom::Hole(data)) {
            Ok(h) => h.min(size),
            Err(_) => return None,
        };
        if hole <= data {
            return None;
        }
        out.push((data, hole - data));
        pos = hole;
    }
    let data: u64 = out.iter().map(|e| e.1).sum();
    (data < size).then_some(out)
}

/// Reads a sparse file's data extents back to back, while hashing the whole logical
/// content (zeros for the holes). If the file shrinks while it is read, the extents are cut
/// to what was read (the rest restores as a hole, and the hash says so).
pub struct SparseReader {
    file: File,
    size: u64,
    extents: Vec<(u64, u64)>,
    /// The extent being read and how far into it.
    at: usize,
    within: u64,
    /// Logical bytes hashed so far.
    hashed: u64,
    hasher: blake3::Hasher,
}

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

impl SparseReader {
    pub fn new(file: File, size: u64, extents: Vec<(u64, u64)>) -> SparseReader {
        SparseReader {
            file,
            size,
            extents,
            at: 0,
            within: 0,
            hashed: 0,
            hasher: blake3::Hasher::new(),
        }
    }

    fn zeros_to(&mut self, to: u64) {
        while self.hashed < to {
            let n = (to - self.hashed).min(ZEROS.len() as u64) as usize;
            self.hasher.update(&ZEROS[..n]);
            self.hashed += n as u64;
        }
    }

    /// The extents actually read and the hash of the whole content.
    pub fn finish(mut self) -> (Vec<(u64, u64)>, blake3::Hash) {
        // Not read to the end (the reader stopped early): keep only what was read.
        if let Some(e) = self.extents.get_mut(self.at) {
            e.1 = e.1.min(self.within);
            let keep = self.at + usize::from(e.1 > 0);
            self.extents.truncate(keep);
        }
        let size = self.size;
        self.zeros_to(size);
        (self.extents, self.hasher.finalize())
    }
}

impl Read for SparseReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(&(off, len)) = self.extents.get(self.at) {
            if self.within >= len {
                self.at += 1;
                self.within = 0;
                continue;
            }
            self.zeros_to(off + self.within);
            let want = (len - self.within).min(buf.len() as u64) as usize;
            let n = self.file.read_at(&mut buf[..want], off + self.within)?;
            if n == 0 {
                // Shrunk: keep what was read of this extent, drop the rest.
                self.extents[self.at].1 = self.within;
                self.extents
                    .truncate(self.at + usize::from(self.within > 0));
                self.at = self.extents.len();
                return Ok(0);
            }
            self.hasher.update(&buf[..n]);
            self.hashed += n as u64;
            self.within += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_file_reads_as_its_data_and_hashes_as_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let f = File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[7u8; 4096], 1 << 20).unwrap();
        f.write_all_at(&[9u8; 4096], 40 << 20).unwrap();
        drop(f);
        let f = File::open(&p).unwrap();
        let m = f.metadata().unwrap();
        let Some(ext) = data_extents(&f, &m) else {
            panic!("no holes found in a 64 MiB file with 8 KiB of data");
        };
        let data: u64 = ext.iter().map(|e| e.1).sum();
        assert!((8192..1 << 20).contains(&data), "{ext:?}");
        let mut r = SparseReader::new(f, m.len(), ext.clone());
        let mut stream = Vec::new();
        r.read_to_end(&mut stream).unwrap();
        assert_eq!(stream.len() as u64, data);
        let (kept, hash) = r.finish();
        assert_eq!(kept, ext);
        assert_eq!(hash, blake3::hash(&std::fs::read(&p).unwrap()));
    }

    #[test]
    fn dense_files_are_not_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        std::fs::write(&p, vec![1u8; 100_000]).unwrap();
        let f = File::open(&p).unwrap();
        assert!(data_extents(&f, &f.metadata().unwrap()).is_none());
    }
}
