//! Content-defined chunking (FastCDC 2020) of a byte stream, with the whole stream's BLAKE3
//! hash computed on the way. Parameters come from the repository `config`; the gear table
//! is seeded from the writer key so chunk boundaries do not reveal known content.

use std::io::Read;

use fastcdc::v2020::{Normalization, StreamCDC};

use crate::error::{RepoError, Result};
use crate::repo::ChunkerParams;

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

/// Seed for the gear table, derived from the chunk-id key.
pub fn seed(chunk_key: &[u8; 32]) -> u64 {
    let k = blake3::derive_key("lifeboat v1 chunker seed", chunk_key);
    u64::from_le_bytes(k[..8].try_into().expect("8 bytes"))
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
