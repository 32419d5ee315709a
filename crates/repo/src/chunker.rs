//! Content-defined chunking (FastCDC 2020) of a byte stream, with the whole stream's BLAKE3
//! hash computed on the way. Parameters come from the repository `config`; the gear table
//! is seeded from the repository secrets ([`crate::secrets::RepoSecrets::chunker_seed`]) so
//! chunk boundaries do not reveal known content.

use std::io::Read;

use fastcdc::v2020::{FastCDC, Normalization, StreamCDC};

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
    let mut buf = Vec::with_capacity(size_hint as usize + 1);
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
            f(buf[off..off + len].to_vec())?;
        }
    }
    Ok((total, hash))
}

/// Chunk `reader`, calling `f` with each chunk in order. Returns total length and BLAKE3.
pub fn chunk_stream<R: Read>(
    reader: R,
    params: &ChunkerParams,
    seed: u64,
    mut f: impl FnMut(Vec<u8>) -> Result<()>,
) -> Result<(u64, blake3::Hash)> {
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    let cdc = StreamCDC::with_level_and_seed(
        reader,
        params.min,
        params.avg,
        params.max,
        Normalization::Level1,
        seed,
    );
    for chunk in cdc {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => RepoError::Io(io),
            other => RepoError::Invalid(format!("chunker: {other}")),
        })?;
        hasher.update(&chunk.data);
        total += chunk.data.len() as u64;
        f(chunk.data)?;
    }
    Ok((total, hasher.finalize()))
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
