//! A bench-only S3 server over memory, built on the `s3s` crate (the same request parsing
//! and SigV4 checks as the tests' s3s-fs servers), so that `tests/bench/s3.sh` measures
//! lifeboat's S3 path, not a server that re-reads files in 4 KiB pieces and hashes them.
//!
//! `lifeboat-bench-s3mem --access-key AK --secret-key SK --bucket NAME [--port P]` listens
//! on 127.0.0.1 (port 0 picks a free one), prints the port on stdout and serves until
//! killed. Objects live in one map per bucket; GET bodies are the stored `Bytes` (no copy),
//! ranges are slices of them. Implemented: Head/Create bucket, Put/Get (ranges, If-Match)/
//! Head/Delete object, ListObjectsV2 with prefix and continuation. Everything else answers
//! NotImplemented, which lifeboat treats like a server without versioning or Object Lock.
//!
//! `--reserve-mb N` touches N MiB of memory before it listens, in 256 MiB blocks, and PUT
//! bodies are copied into slices of those blocks. Storing objects in fresh memory costs a
//! zero-filled page fault per 4 KiB (on this VM, where freed memory goes back to the host,
//! that was a third of the server's CPU, on the same two cores lifeboat runs on); with the
//! memory touched up front, before anything is timed, a PUT costs the socket read and one
//! copy. Without it (or once it is used up) blocks are allocated as PUTs need them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

#[derive(Clone)]
struct Object {
    data: Bytes,
    etag: String,
    modified: SystemTime,
}

type Bucket = BTreeMap<String, Object>;

#[derive(Default)]
struct Memory {
    buckets: Mutex<HashMap<String, Bucket>>,
    version: AtomicU64,
    arena: Mutex<Arena>,
}

/// Objects are never split across blocks, so each block wastes less than one object at its
/// end: a 64 MiB block held three 16 MiB packs and wasted a quarter, more than the eighth
/// s3.sh adds to the corpus size for an incompressible corpus. At 256 MiB it is under 7%.
const BLOCK: usize = 256 << 20;

/// Touched memory that PUT bodies are copied into; see the module's comment.
#[derive(Default)]
struct Arena {
    current: BytesMut,
    reserved: Vec<BytesMut>,
}

impl Arena {
    fn reserve(&mut self, bytes: usize) {
        for _ in 0..bytes.div_ceil(BLOCK) {
            let mut b = BytesMut::with_capacity(BLOCK);
            b.resize(BLOCK, 0); // writes every page: resident from now on
            self.reserved.push(b);
        }
    }

    /// `len` bytes of memory to copy an object into.
    fn slot(&mut self, len: usize) -> BytesMut {
        if len > BLOCK {
            return BytesMut::zeroed(len);
        }
        if self.current.len() < len {
            self.current = self
                .reserved
                .pop()
                .unwrap_or_else(|| BytesMut::zeroed(BLOCK));
        }
        self.current.split_to(len)
    }
}

impl Memory {
    fn with_bucket<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Bucket) -> S3Result<T>,
    ) -> S3Result<T> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match buckets.get_mut(name) {
            Some(b) => f(b),
            None => Err(s3_error!(NoSuchBucket)),
        }
    }
}

fn matches(cond: &Option<ETagCondition>, etag: &str) -> bool {
    match cond {
        None | Some(ETagCondition::Any) => true,
        Some(ETagCondition::ETag(t)) => t.value() == etag,
    }
}

#[async_trait::async_trait]
impl S3 for Memory {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.entry(req.input.bucket).or_default();
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.with_bucket(&req.input.bucket, |_| Ok(()))?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let Some(mut body) = input.body else {
            return Err(s3_error!(IncompleteBody));
        };
        let incomplete =
            |e: &dyn std::fmt::Display| s3_error!(IncompleteBody, "reading the body: {e}");
        // With the length known, each frame is copied into the slot as it arrives and then
        // dropped, so hyper reuses its read buffer for the next one; collecting the frames
        // first kept a whole body of them alive and made hyper allocate fresh memory for
        // every PUT (page faults on the cores lifeboat runs on). Without a length the
        // frames are gathered first to learn it.
        let known = input.content_length.and_then(|n| usize::try_from(n).ok());
        let mut early = Vec::new();
        if known.is_none() {
            while let Some(part) = body.try_next().await.map_err(|e| incomplete(&e))? {
                early.push(part);
            }
        }
        let len = known.unwrap_or_else(|| early.iter().map(Bytes::len).sum());
        let mut data = self
            .arena
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .slot(len);
        let mut at = 0;
        let mut copy = |part: &[u8]| {
            let end = at + part.len();
            if end > len {
                return Err(incomplete(&"longer than its Content-Length"));
            }
            data[at..end].copy_from_slice(part);
            at = end;
            Ok(())
        };
        for part in &early {
            copy(part)?;
        }
        while let Some(part) = body.try_next().await.map_err(|e| incomplete(&e))? {
            copy(&part)?;
        }
        if at != len {
            return Err(incomplete(&"shorter than its Content-Length"));
        }
        let data = data.freeze();
        let etag = format!("v{}", self.version.fetch_add(1, Ordering::Relaxed));
        let object = Object {
            data,
            etag: etag.clone(),
            modified: SystemTime::now(),
        };
        self.with_bucket(&input.bucket, |b| {
            b.insert(input.key, object);
            Ok(())
        })?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let o = self.with_bucket(&input.bucket, |b| {
            b.get(&input.key)
                .cloned()
                .ok_or_else(|| s3_error!(NoSuchKey))
        })?;
        if !matches(&input.if_match, &o.etag) {
            return Err(s3_error!(PreconditionFailed));
        }
        let len = o.data.len() as u64;
        let (body, content_range) = match input.range {
            None => (o.data.clone(), None),
            Some(r) => {
                let r = r.check(len)?;
                (
                    o.data.slice(r.start as usize..r.end as usize),
                    Some(format!("bytes {}-{}/{len}", r.start, r.end - 1)),
                )
            }
        };
        Ok(S3Response::new(GetObjectOutput {
            content_length: Some(body.len() as i64),
            body: Some(StreamingBlob::from(s3s::Body::from(body))),
            content_range,
            e_tag: Some(ETag::Strong(o.etag)),
            last_modified: Some(Timestamp::from(o.modified)),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let o = self.with_bucket(&input.bucket, |b| {
            b.get(&input.key)
                .cloned()
                .ok_or_else(|| s3_error!(NoSuchKey))
        })?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(o.data.len() as i64),
            e_tag: Some(ETag::Strong(o.etag)),
            last_modified: Some(Timestamp::from(o.modified)),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.with_bucket(&input.bucket, |b| {
            b.remove(&input.key);
            Ok(())
        })?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_keys.unwrap_or(1000).clamp(1, 1000) as usize;
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(s)) => Some(s.clone()),
            (None, None) => None,
        };
        let (contents, truncated) = self.with_bucket(&input.bucket, |b| {
            let start = match &after {
                Some(a) => std::ops::Bound::Excluded(a.clone()),
                None => std::ops::Bound::Included(prefix.clone()),
            };
            let mut out = Vec::new();
            let mut truncated = false;
            for (k, o) in b.range((start, std::ops::Bound::Unbounded)) {
                if !k.starts_with(&prefix) {
                    if k.as_str() > prefix.as_str() {
                        break;
                    }
                    continue;
                }
                if out.len() == max {
                    truncated = true;
                    break;
                }
                out.push(s3s::dto::Object {
                    key: Some(k.clone()),
                    size: Some(o.data.len() as i64),
                    e_tag: Some(ETag::Strong(o.etag.clone())),
                    last_modified: Some(Timestamp::from(o.modified)),
                    ..Default::default()
                });
            }
            Ok((out, truncated))
        })?;
        let next = truncated
            .then(|| contents.last().and_then(|o| o.key.clone()))
            .flatten();
        Ok(S3Response::new(ListObjectsV2Output {
            key_count: Some(contents.len() as i32),
            max_keys: Some(max as i32),
            is_truncated: Some(truncated),
            contents: (!contents.is_empty()).then_some(contents),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            name: Some(input.bucket),
            prefix: input.prefix,
            start_after: input.start_after,
            ..Default::default()
        }))
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

// glibc's mallopt (parameters from malloc.h).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    fn mallopt(param: i32, value: i32) -> i32;
}

/// Keep freed memory in the heap: hyper reads each request into buffers of a few hundred
/// KiB, which glibc would otherwise map and unmap (or trim) one by one. Measured beside a
/// 512 MiB backup: ~0.65-0.75 -> ~0.5-0.6 core-seconds for both servers; socket reads
/// still fault in some fresh pages (perf: `clear_page` under `recv`), not explained yet.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum on 64-bit
        mallopt(M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    keep_freed_memory();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(ak), Some(sk), Some(bucket)) = (
        arg(&args, "--access-key"),
        arg(&args, "--secret-key"),
        arg(&args, "--bucket"),
    ) else {
        eprintln!("usage: lifeboat-bench-s3mem --access-key AK --secret-key SK --bucket NAME [--port P] [--reserve-mb N]");
        std::process::exit(2);
    };
    let port: u16 = arg(&args, "--port").map_or(Ok(0), |p| p.parse())?;
    let memory = Memory::default();
    if let Some(mb) = arg(&args, "--reserve-mb") {
        let mb: usize = mb.parse()?;
        memory
            .arena
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(mb << 20);
    }
    memory
        .buckets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(bucket, Bucket::new());
    let mut builder = s3s::service::S3ServiceBuilder::new(memory);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ak, sk));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                .await;
        });
    }
}
