//! Packs: many compressed chunks in one standard age file.
//!
//! Plaintext layout (all integers little-endian), see `docs/FORMAT.md`:
//!
//! ```text
//! blob 0 | blob 1 | … | blob n-1 | table (n × 42 bytes) | n: u32 | "LBPACK01"
//! table entry: kind u8 | compression u8 | chunk id [32] | stored length u32 | raw length u32
//! ```
//!
//! Blob offsets are implicit (the sum of the previous stored lengths), so a pack decrypted
//! with `age -d` is self-describing.
//!
//! A pack's id follows the repository's [`IdRule`] (v1: BLAKE3 of the whole object; v2: of
//! the age payload, so re-wrapping the header keeps it). A v2 writer never mixes blob kinds
//! in one pack: a pack holds trees only or data only (its type, see [`pack_type`]).

use std::io::Write;

use bytes::Bytes;

use crate::error::{RepoError, Result};
use crate::id::{check_stored_id, IdRule};
use crate::keys::{age_decrypt, age_writer, chunk_id};
use crate::Id;

pub const PACK_MAGIC: &[u8; 8] = b"LBPACK01";
pub const ENTRY_LEN: usize = 42;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobKind {
    Data = 0,
    Tree = 1,
}

/// How a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

impl BlobKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

impl Compression {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// One blob's place in a pack's plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: Id,
    pub kind: BlobKind,
    pub compression: Compression,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

/// A chunk ready to be packed: id computed, payload compressed (or not).
#[derive(Debug)]
pub struct SealedBlob {
    pub id: Id,
    pub kind: BlobKind,
    pub compression: Compression,
    pub raw_length: u32,
    pub payload: Vec<u8>,
}

/// How a writer stores chunks: a zstd level, or no compression at all. Chosen per plan
/// (`compression = "zstd:3"` in lifeboat.toml); every reader reads every choice, since each
/// blob's table entry says how it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    /// zstd at this level, [`Codec::ZSTD_LEVELS`].
    Zstd(i32),
}

impl Codec {
    /// The zstd levels a plan may choose (the range the repository `config` accepts).
    pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=19;

    /// Parse a plan's `compression` value: `"zstd:N"` (N in 1..=19), `"zstd"` (level 3) or
    /// `"none"`. The error says what is accepted.
    pub fn parse(s: &str) -> std::result::Result<Codec, String> {
        let bad = || {
            format!(
                "compression {s:?} is not understood: use \"zstd:N\" with N from {} to {} (e.g. \"zstd:1\", fastest; \"zstd:3\", smaller), or \"none\"",
                Self::ZSTD_LEVELS.start(),
                Self::ZSTD_LEVELS.end()
            )
        };
        match s.trim() {
            "none" => Ok(Codec::None),
            "zstd" => Ok(Codec::Zstd(3)),
            t => {
                let level: i32 = t
                    .strip_prefix("zstd:")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(bad)?;
                if Self::ZSTD_LEVELS.contains(&level) {
                    Ok(Codec::Zstd(level))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Codec::None => f.write_str("none"),
            Codec::Zstd(l) => write!(f, "zstd:{l}"),
        }
    }
}

/// Chunks at least this long are first tested on samples (see [`compress`]).
const SAMPLE_FROM: usize = 128 * 1024;
/// Bytes per sample and number of samples, spread evenly over the chunk.
const SAMPLE_LEN: usize = 8 * 1024;
const SAMPLES: usize = 4;

/// The compression contexts of one worker thread, reused across chunks: creating a zstd
/// context per chunk costs more than compressing a small file.
pub struct Compressors {
    main: zstd::bulk::Compressor<'static>,
    level: i32,
    probe: zstd::bulk::Compressor<'static>,
    sample: Vec<u8>,
}

impl Compressors {
    pub fn new() -> Result<Compressors> {
        Ok(Compressors {
            main: zstd::bulk::Compressor::new(3)?,
            level: 3,
            probe: zstd::bulk::Compressor::new(1)?,
            sample: Vec::with_capacity(SAMPLE_LEN * SAMPLES),
        })
    }

    /// Would zstd save anything on `data`? Four 8 KiB samples compressed at level 1 answer
    /// for a large chunk in a few microseconds: already-compressed or random data (photos,
    /// archives, encrypted files) then skips the full pass, which would be thrown away.
    fn looks_compressible(&mut self, data: &[u8]) -> Result<bool> {
        if data.len() < SAMPLE_FROM {
            return Ok(true);
        }
        self.sample.clear();
        let step = (data.len() - SAMPLE_LEN) / (SAMPLES - 1);
        for i in 0..SAMPLES {
            self.sample
                .extend_from_slice(&data[i * step..i * step + SAMPLE_LEN]);
        }
        let out = self.probe.compress(&self.sample)?;
        // Stricter than the keep-raw rule below, so that a chunk the full pass would have
        // compressed by a little is still tried.
        Ok(out.len() + self.sample.len() / 64 < self.sample.len())
    }
}

/// Compress a chunk with `codec`; keep it raw when that does not save ≥ 1/32, or when
/// samples of a large chunk show it will not compress.
pub fn compress(
    z: &mut Compressors,
    codec: Codec,
    data: Vec<u8>,
) -> Result<(Compression, Vec<u8>)> {
    let Codec::Zstd(level) = codec else {
        return Ok((Compression::None, data));
    };
    if !z.looks_compressible(&data)? {
        return Ok((Compression::None, data));
    }
    if z.level != level {
        z.main.set_compression_level(level)?;
        z.level = level;
    }
    // Into a buffer the pipeline gave back, when there is one (see `crate::buffers`); the
    // one not kept goes back.
    let mut out = crate::buffers::take(zstd::zstd_safe::compress_bound(data.len()));
    z.main.compress_to_buffer(&data, &mut out)?;
    if out.len() + data.len() / 32 < data.len() {
        crate::buffers::give(data);
        Ok((Compression::Zstd, out))
    } else {
        crate::buffers::give(out);
        Ok((Compression::None, data))
    }
}

thread_local! {
    /// One decompression context per thread, reused across chunks.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Undo [`compress`], checking the raw length.
pub fn decompress(entry: &PackEntry, stored: &[u8]) -> Result<Vec<u8>> {
    let raw = match entry.compression {
        Compression::None => stored.to_vec(),
        Compression::Zstd => DECOMPRESSOR
            .with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new()?);
                }
                d.as_mut()
                    .expect("just set")
                    .decompress(stored, entry.raw_length as usize)
            })
            .map_err(|e| RepoError::Corrupt(format!("chunk {}: zstd: {e}", entry.id.short())))?,
    };
    if raw.len() != entry.raw_length as usize {
        return Err(RepoError::Corrupt(format!(
            "chunk {}: length {} instead of {}",
            entry.id.short(),
            raw.len(),
            entry.raw_length
        )));
    }
    Ok(raw)
}

/// Check that `raw` is the plaintext whose keyed hash is `entry.id`.
pub fn check_chunk(chunk_key: &[u8; 32], entry: &PackEntry, raw: &[u8]) -> Result<()> {
    if chunk_id(chunk_key, raw) != entry.id {
        return Err(RepoError::Corrupt(format!(
            "chunk {}: content hash mismatch",
            entry.id.short()
        )));
    }
    Ok(())
}

/// What a pack holds, from its entries: trees only, data only, or (format v1) both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PackType {
    Tree,
    Data,
    Mixed,
}

pub fn pack_type(entries: &[PackEntry]) -> PackType {
    let trees = entries.iter().filter(|e| e.kind == BlobKind::Tree).count();
    match trees {
        0 => PackType::Data,
        n if n == entries.len() => PackType::Tree,
        _ => PackType::Mixed,
    }
}

/// Builds one pack, encrypting as blobs arrive so plaintext never accumulates.
pub struct PackWriter {
    stream: age::stream::StreamWriter<Vec<u8>>,
    entries: Vec<PackEntry>,
    len: u64,
    rule: IdRule,
}

/// A finished pack, ready to upload.
#[derive(Debug, Clone)]
pub struct FinishedPack {
    pub id: Id,
    pub bytes: Bytes,
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    pub fn new(
        recipients: &[&age::x25519::Recipient],
        capacity: usize,
        rule: IdRule,
    ) -> Result<Self> {
        Ok(PackWriter {
            stream: age_writer(recipients, crate::buffers::take(capacity))?,
            entries: Vec::new(),
            len: 0,
            rule,
        })
    }

    pub fn add(&mut self, blob: &SealedBlob) -> Result<()> {
        let length = u32::try_from(blob.payload.len())
            .map_err(|_| RepoError::Invalid("blob larger than 4 GiB".into()))?;
        let offset = u32::try_from(self.len)
            .map_err(|_| RepoError::Invalid("pack larger than 4 GiB".into()))?;
        self.stream.write_all(&blob.payload)?;
        self.entries.push(PackEntry {
            id: blob.id,
            kind: blob.kind,
            compression: blob.compression,
            offset,
            length,
            raw_length: blob.raw_length,
        });
        self.len += blob.payload.len() as u64;
        Ok(())
    }

    /// Plaintext bytes written so far (blobs only).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn finish(mut self) -> Result<FinishedPack> {
        let mut table = Vec::with_capacity(self.entries.len() * ENTRY_LEN + 12);
        for e in &self.entries {
            table.push(e.kind as u8);
            table.push(e.compression as u8);
            table.extend_from_slice(&e.id.0);
            table.extend_from_slice(&e.length.to_le_bytes());
            table.extend_from_slice(&e.raw_length.to_le_bytes());
        }
        table.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        table.extend_from_slice(PACK_MAGIC);
        self.stream.write_all(&table)?;
        let bytes = self.stream.finish()?;
        Ok(FinishedPack {
            id: self.rule.id_of(&bytes)?,
            bytes: Bytes::from(bytes),
            entries: self.entries,
        })
    }
}

/// Parse the table at the end of a pack's plaintext.
pub fn parse_table(plain: &[u8], what: &str) -> Result<Vec<PackEntry>> {
    let bad = |m: &str| RepoError::Corrupt(format!("{what}: {m}"));
    if plain.len() < 12 || &plain[plain.len() - 8..] != PACK_MAGIC {
        return Err(bad("missing pack trailer"));
    }
    let n_at = plain.len() - 12;
    let n = u32::from_le_bytes(plain[n_at..n_at + 4].try_into().expect("4 bytes")) as usize;
    let table_len = n
        .checked_mul(ENTRY_LEN)
        .ok_or_else(|| bad("table size overflows"))?;
    let table_start = n_at
        .checked_sub(table_len)
        .ok_or_else(|| bad("table larger than pack"))?;
    let mut entries = Vec::with_capacity(n);
    let mut offset: u64 = 0;
    for raw in plain[table_start..n_at].chunks_exact(ENTRY_LEN) {
        let kind = BlobKind::from_u8(raw[0]).ok_or_else(|| bad("unknown blob kind"))?;
        let compression = Compression::from_u8(raw[1]).ok_or_else(|| bad("unknown compression"))?;
        let id = Id(raw[2..34].try_into().expect("32 bytes"));
        let length = u32::from_le_bytes(raw[34..38].try_into().expect("4 bytes"));
        let raw_length = u32::from_le_bytes(raw[38..42].try_into().expect("4 bytes"));
        entries.push(PackEntry {
            id,
            kind,
            compression,
            offset: offset as u32,
            length,
            raw_length,
        });
        offset += length as u64;
    }
    if offset != table_start as u64 {
        return Err(bad("blob lengths do not add up to the table position"));
    }
    Ok(entries)
}

/// A decrypted pack: its plaintext and table.
pub struct OpenPack {
    pub id: Id,
    pub plain: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

impl OpenPack {
    /// Check the ciphertext against the pack id, decrypt and parse the table.
    pub fn open(identity: &[age::x25519::Identity], id: Id, ciphertext: &[u8]) -> Result<OpenPack> {
        let what = format!("pack {}", id.short());
        check_stored_id(ciphertext, &id, &what)?;
        let plain = age_decrypt(identity, ciphertext, &what)?;
        let entries = parse_table(&plain, &what)?;
        Ok(OpenPack { id, plain, entries })
    }

    /// The stored bytes of one blob, bounds-checked.
    pub fn stored(&self, e: &PackEntry) -> Result<&[u8]> {
        let start = e.offset as usize;
        let end = start + e.length as usize;
        self.plain.get(start..end).ok_or_else(|| {
            RepoError::Corrupt(format!(
                "pack {}: blob {} out of bounds",
                self.id.short(),
                e.id.short()
            ))
        })
    }

    /// Decompress and verify one blob.
    pub fn blob(&self, chunk_key: &[u8; 32], e: &PackEntry) -> Result<Vec<u8>> {
        let raw = decompress(e, self.stored(e)?)?;
        check_chunk(chunk_key, e, &raw)?;
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn text(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| b"2026-12-02 05:00:00 INFO request served in 12 ms\n"[i % 49])
            .collect()
    }

    fn roundtrip(z: &mut Compressors, codec: Codec, data: &[u8]) -> Compression {
        let (c, stored) = compress(z, codec, data.to_vec()).unwrap();
        let entry = PackEntry {
            id: Id::of_stored(data),
            kind: BlobKind::Data,
            compression: c,
            offset: 0,
            length: stored.len() as u32,
            raw_length: data.len() as u32,
        };
        assert_eq!(decompress(&entry, &stored).unwrap(), data);
        c
    }

    #[test]
    fn codecs_and_the_incompressible_test() {
        let mut z = Compressors::new().unwrap();
        for level in [1, 3, 19] {
            let codec = Codec::Zstd(level);
            assert_eq!(roundtrip(&mut z, codec, &text(1 << 20)), Compression::Zstd);
            // Small text is compressed without sampling; small noise is tried and kept raw.
            assert_eq!(roundtrip(&mut z, codec, &text(5000)), Compression::Zstd);
            assert_eq!(roundtrip(&mut z, codec, &noise(5000)), Compression::None);
            // Large noise is kept raw on the samples' word.
            assert_eq!(roundtrip(&mut z, codec, &noise(1 << 20)), Compression::None);
        }
        // Text in the middle of noise is found by the middle samples.
        let mut mixed = noise(1 << 20);
        mixed[300_000..800_000].copy_from_slice(&text(500_000));
        assert_eq!(roundtrip(&mut z, Codec::Zstd(1), &mixed), Compression::Zstd);
        assert_eq!(
            roundtrip(&mut z, Codec::None, &text(1 << 20)),
            Compression::None
        );
        assert_eq!(Codec::parse("zstd:2"), Ok(Codec::Zstd(2)));
        assert_eq!(Codec::Zstd(2).to_string(), "zstd:2");
        assert!(Codec::parse("zstd:-1").is_err());
    }
}
