//! Content-defined chunking (FastCDC 2020) of a byte stream, with the whole stream's BLAKE3
//! hash computed on the way. Parameters come from the repository `config`; the gear table
//! is seeded from the repository secrets ([`crate::secrets::RepoSecrets::chunker_seed`]) so
//! chunk boundaries do not reveal known content.

use std::io::Read;

use fastcdc::v2020::{FastCDC, Normalization};

use crate::error::{RepoError, Result};
use serde::{Deserialize, Serialize};

/// Chunk size bounds, fixed at `init` and stored in the repository `config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

/// Reject parameters FastCDC cannot use (it would panic on them).
pub fn validate(p: &ChunkerParams) -> Result<()> {
    use fastcdc::v2020::{
        AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
    };
    let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&p.min)
        && (AVERAGE_MIN..=AVERAGE_MAX).contains(&p.avg)
        && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&p.max)
        && p.min <= p.avg
        && p.avg <= p.max;
    if ok {
        Ok(())
    } else {
        Err(RepoError::Invalid(format!(
            "unusable chunker parameters {p:?}"
        )))
    }
}

/// Chunk a file whose size is believed to be `size_hint`: small files are read whole and cut
/// in memory (no per-file 4 MiB stream buffer, which dominates trees of small files); others
/// stream. Both paths cut at identical boundaries.
pub fn chunk_file<R: Read>(
    mut reader: R,
    size_hint: u64,
    params: &ChunkerParams,
    seed: u64,
    mut f: impl FnMut(Vec<u8>) -> Result<()>,
) -> Result<(u64, blake3::Hash)> {
    if size_hint > params.max as u64 {
        return chunk_stream(reader, params, seed, f);
    }
    let mut buf = crate::buffers::take(size_hint as usize + 1);
    (&mut reader)
        .take(params.max as u64 + 1)
        .read_to_end(&mut buf)?;
    if buf.len() > params.max as usize {
        // The file grew past the in-memory limit while we read it: stream the rest.
        return chunk_stream(std::io::Cursor::new(buf).chain(reader), params, seed, f);
    }
    let hash = blake3::hash(&buf);
    let total = buf.len() as u64;
    if buf.len() <= params.min as usize {
        if !buf.is_empty() {
            f(buf)?;
        }
        return Ok((total, hash));
    }
    let cuts: Vec<(usize, usize)> = FastCDC::with_level_and_seed(
        &buf,
        params.min,
        params.avg,
        params.max,
        Normalization::Level1,
        seed,
    )
    .map(|c| (c.offset, c.length))
    .collect();
    if cuts.len() == 1 {
        f(buf)?;
    } else {
        for (off, len) in cuts {
            f(copy_chunk(&buf[off..off + len]))?;
        }
        crate::buffers::give(buf);
    }
    Ok((total, hash))
}

/// A chunk's own buffer, from the pipeline's kept buffers when one fits.
fn copy_chunk(data: &[u8]) -> Vec<u8> {
    let mut c = crate::buffers::take(data.len());
    c.extend_from_slice(data);
    c
}

/// Chunk `reader`, calling `f` with each chunk in order. Returns total length and BLAKE3.
///
/// Cuts exactly where FastCDC's `StreamCDC` does (each cut is searched with `max` bytes
/// ahead, or what is left at the end), without its per-chunk costs: it drains each chunk
/// out of the front of its buffer (moving the rest down) and zero-fills the buffer back
/// to size. Here a buffer of two maximal chunks is refilled only when less than one is
/// left, and each chunk is copied out once.
pub fn chunk_stream<R: Read>(
    mut reader: R,
    params: &ChunkerParams,
    seed: u64,
    mut f: impl FnMut(Vec<u8>) -> Result<()>,
) -> Result<(u64, blake3::Hash)> {
    let (min, avg, max) = (params.min, params.avg, params.max);
    let cap = 2 * max as usize;
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    let mut buf = crate::buffers::take(cap);
    buf.resize(cap, 0);
    let (mut start, mut end, mut eof) = (0usize, 0usize, false);
    let result = (|| loop {
        if end - start < max as usize && !eof {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
            while end < cap && !eof {
                match reader.read(&mut buf[end..]) {
                    Ok(0) => eof = true,
                    Ok(n) => end += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(RepoError::Io(e)),
                }
            }
        }
        if start == end {
            return Ok(());
        }
        let ahead = &buf[start..end];
        let cdc = FastCDC::with_level_and_seed(ahead, min, avg, max, Normalization::Level1, seed);
        let (_, len) = cdc.cut(0, ahead.len());
        let chunk = copy_chunk(&ahead[..len]);
        hasher.update(&chunk);
        total += len as u64;
        start += len;
        f(chunk)?;
    })();
    crate::buffers::give(buf);
    result.map(|()| (total, hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cuts_stream(data: &[u8], p: &ChunkerParams) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        chunk_stream(data, p, 7, |c| {
            out.push(c);
            Ok(())
        })
        .unwrap();
        out
    }

    /// A reader that hands out at most `step` bytes per read, like a pipe or a slow file.
    struct Dribble<'a>(&'a [u8], usize);
    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(out.len()).min(self.1);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// The cuts are FastCDC's own streaming cuts (a repository's existing chunks dedup),
    /// whatever sizes the reads come in.
    #[test]
    fn streaming_cuts_where_fastcdc_streamcdc_does() {
        let p = ChunkerParams {
            min: 1024,
            avg: 4096,
            max: 16384,
        };
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ (i % 251) as u8)
            .collect();
        for len in [0usize, 1, 1024, 16383, 16384, 16385, 32768, 32769, 300_000] {
            let d = &data[..len];
            let want: Vec<Vec<u8>> = fastcdc::v2020::StreamCDC::with_level_and_seed(
                d,
                p.min,
                p.avg,
                p.max,
                Normalization::Level1,
                7,
            )
            .map(|c| c.unwrap().data)
            .collect();
            for step in [1 << 20, 7000, 333] {
                let mut got = Vec::new();
                let (n, h) = chunk_stream(Dribble(d, step), &p, 7, |c| {
                    got.push(c);
                    Ok(())
                })
                .unwrap();
                assert_eq!((n, h), (len as u64, blake3::hash(d)));
                assert_eq!(got, want, "length {len}, reads of {step}");
            }
        }
        // A read error is the chunker's error, not a short file.
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let e = chunk_stream(Failing, &p, 7, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("disk on fire"), "{e}");
    }

    #[test]
    fn in_memory_and_streaming_cut_identically() {
        let p = ChunkerParams {
            min: 1024,
            avg: 4096,
            max: 16384,
        };
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        for len in [0usize, 10, 1024, 1025, 9000, 16384, 16385, 200_000] {
            let d = &data[..len];
            let mut mem = Vec::new();
            let (n, h) = chunk_file(d, len as u64, &p, 7, |c| {
                mem.push(c);
                Ok(())
            })
            .unwrap();
            assert_eq!(n, len as u64);
            assert_eq!(h, blake3::hash(d));
            assert_eq!(mem, cuts_stream(d, &p), "length {len}");
            assert_eq!(mem.concat(), d);
        }
        // A file that is bigger than its stat said still chunks correctly.
        let mut grown = Vec::new();
        chunk_file(&data[..], 100, &p, 7, |c| {
            grown.push(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(grown, cuts_stream(&data, &p));
    }
}
