//! Reading objects from S3: one ranged GET, or a whole object in parallel ranges copied once.
//!
//! A whole object is read as its first [`GET_PART`] bytes, whose `Content-Range` gives the
//! total size; a larger object's other parts follow, [`PARTS_IN_FLIGHT`] at a time, pinned to
//! the first part's ETag (`If-Match`) so every part comes from the same version. Each part's
//! body is streamed straight into its place in one buffer of the object's size: every byte is
//! copied once from the HTTP frames (collecting each part and then assembling them copied
//! every byte twice, a measurable share of a restore through a fast server).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use lifeboat_repo::backend::{Backend, BackendError, BackendResult};

use super::s3::{classify, S3Backend};

/// Whole-object reads are split into ranges of this size, fetched [`PARTS_IN_FLIGHT`] at a
/// time: one HTTP stream rarely fills the link (restores read ~16 MiB packs, a few at once).
pub const GET_PART: u64 = 8 << 20;
const PARTS_IN_FLIGHT: usize = 4;

/// What one GET found.
enum Sent {
    /// No bytes (an empty range, or one past the end).
    Empty,
    Body(Box<GetObjectOutput>),
}

/// The total size in a `Content-Range` header (`bytes a-b/total`).
fn total_of(out: &GetObjectOutput) -> Option<u64> {
    out.content_range()
        .and_then(|r| r.rsplit('/').next())
        .and_then(|t| t.parse::<u64>().ok())
}

/// Stream `body` into `buf[at..at + len]`, requiring exactly `len` bytes.
async fn read_into(
    mut body: ByteStream,
    buf: &Mutex<Vec<u8>>,
    at: usize,
    len: usize,
    name: &str,
) -> BackendResult<()> {
    let mut got = 0usize;
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| BackendError::transient("get", name, DisplayErrorContext(&e)))?
    {
        if got + chunk.len() > len {
            return Err(BackendError::transient(
                "get",
                name,
                format!("range at {at}: more than the {len} bytes asked for"),
            ));
        }
        let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
        b[at + got..at + got + chunk.len()].copy_from_slice(&chunk);
        got += chunk.len();
    }
    if got != len {
        return Err(BackendError::transient(
            "get",
            name,
            format!("range at {at}: got {got} bytes of {len}"),
        ));
    }
    Ok(())
}

impl S3Backend {
    async fn send_get(&self, name: &str, range: Option<&Range<u64>>) -> BackendResult<Sent> {
        let mut req = self
            .client()
            .await
            .get_object()
            .bucket(&self.settings().bucket)
            .key(self.key(name));
        if let Some(r) = range {
            if r.start >= r.end {
                // HTTP cannot ask for zero bytes; the object must still exist.
                Backend::head(self, name).await?;
                return Ok(Sent::Empty);
            }
            req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        match req.send().await {
            Ok(out) => Ok(Sent::Body(Box::new(out))),
            Err(e) => {
                let unsatisfiable = range.is_some()
                    && matches!(&e, SdkError::ServiceError(s) if s.raw().status().as_u16() == 416);
                if unsatisfiable {
                    // The range starts at or past the end: clamped, that is no bytes.
                    Backend::head(self, name).await?;
                    return Ok(Sent::Empty);
                }
                Err(classify("get", name, e))
            }
        }
    }

    /// One GET, of a range or of the whole object, collected.
    pub(super) async fn get_one(
        &self,
        name: &str,
        range: Option<Range<u64>>,
    ) -> BackendResult<Bytes> {
        match self.send_get(name, range.as_ref()).await? {
            Sent::Empty => Ok(Bytes::new()),
            Sent::Body(out) => collect(out.body, name).await,
        }
    }

    /// The whole object (see the module documentation).
    pub(super) async fn get_whole(&self, name: &str) -> BackendResult<Bytes> {
        let out = match self.send_get(name, Some(&(0..GET_PART))).await? {
            Sent::Empty => return Ok(Bytes::new()),
            Sent::Body(out) => out,
        };
        let total = match total_of(&out) {
            Some(t) if t > GET_PART => t,
            // Smaller than one part (or a server that ignores ranges): that is all of it.
            _ => return collect(out.body, name).await,
        };
        let total = usize::try_from(total)
            .map_err(|_| BackendError::permanent("get", name, "object too large"))?;
        let etag = out.e_tag().map(str::to_string);
        let whole = Arc::new(Mutex::new(vec![0u8; total]));
        let part = GET_PART as usize;
        let mut parts = tokio::task::JoinSet::new();
        {
            let (whole, name) = (whole.clone(), name.to_string());
            parts.spawn(async move { read_into(out.body, &whole, 0, part, &name).await });
        }
        let mut ranges = (1..total.div_ceil(part)).map(|i| i * part..((i + 1) * part).min(total));
        loop {
            while parts.len() < PARTS_IN_FLIGHT {
                let Some(r) = ranges.next() else { break };
                let (client, key, bucket, etag) = (
                    self.client().await.clone(),
                    self.key(name),
                    self.settings().bucket.clone(),
                    etag.clone(),
                );
                let (whole, name) = (whole.clone(), name.to_string());
                parts.spawn(async move {
                    let mut req = client.get_object().bucket(bucket).key(key).range(format!(
                        "bytes={}-{}",
                        r.start,
                        r.end - 1
                    ));
                    if let Some(etag) = etag {
                        // Every part from the same version of the object as the first.
                        req = req.if_match(etag);
                    }
                    let out = req.send().await.map_err(|e| classify("get", &name, e))?;
                    read_into(out.body, &whole, r.start, r.end - r.start, &name).await
                });
            }
            match parts.join_next().await {
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(BackendError::transient("get", name, e)),
                None => break,
            }
        }
        let whole = Arc::try_unwrap(whole)
            .map_err(|_| BackendError::transient("get", name, "a part is still being read"))?
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        Ok(Bytes::from(whole))
    }
}

async fn collect(body: ByteStream, name: &str) -> BackendResult<Bytes> {
    let body = body
        .collect()
        .await
        .map_err(|e| BackendError::transient("get", name, DisplayErrorContext(&e)))?;
    Ok(body.into_bytes())
}
