//! Real S3-compatible servers on 127.0.0.1 for the s3 region tests, started by the tests
//! themselves on free ports: `s3s-fs` in-process (checks SigV4 signatures), `moto_server`
//! out of process (versioning and Object Lock), and a TCP proxy that can cut or freeze a
//! region. A workspace whose two regions are such servers runs the real binary against them.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat::storage::{S3Backend, S3Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{bin, Workspace};

pub const ACCESS_KEY: &str = "lifeboat-test";
pub const SECRET_KEY: &str = "lifeboat-test-secret-key-0123456789";

/// A tokio runtime on its own threads, serving while tests (and child processes) call in.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime")
}

/// A listening socket on a free port of 127.0.0.1, ready for `TcpListener::from_std`
/// (binding through std works inside and outside a runtime).
fn bind() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

/// An in-process S3 server (s3s-fs) over a temporary directory, with SigV4 authentication.
pub struct S3sServer {
    pub addr: SocketAddr,
    pub root: tempfile::TempDir,
    rt: Option<tokio::runtime::Runtime>,
}

impl S3sServer {
    /// Start on a free port, with `buckets` created.
    pub fn start(buckets: &[&str]) -> S3sServer {
        S3sServer::start_with(buckets, None)
    }

    /// As [`start`](Self::start), refusing every delete with AccessDenied: the rights of
    /// terraform's writer role (no `s3:DeleteObject`), as AWS enforces them.
    pub fn start_writer_only(buckets: &[&str]) -> S3sServer {
        S3sServer::start_with(buckets, Some(WriterOnly))
    }

    fn start_with(buckets: &[&str], access: Option<WriterOnly>) -> S3sServer {
        let root = tempfile::tempdir().expect("tempdir");
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).expect("bucket dir");
        }
        let rt = runtime();
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        if let Some(access) = access {
            builder.set_access(access);
        }
        let service = builder.build();
        let (std_listener, addr) = bind();
        rt.spawn(async move {
            let listener = TcpListener::from_std(std_listener).expect("listener");
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        S3sServer {
            addr,
            root,
            rt: Some(rt),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where `bucket`'s objects live on disk.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.path().join(bucket)
    }
}

impl Drop for S3sServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Signed requests may do anything but delete.
struct WriterOnly;

#[async_trait::async_trait]
impl s3s::access::S3Access for WriterOnly {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> s3s::S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3s::s3_error!(AccessDenied, "Signature is required"));
        }
        match cx.s3_op().name() {
            "DeleteObject" | "DeleteObjects" => Err(s3s::s3_error!(
                AccessDenied,
                "not authorized to perform: s3:DeleteObject"
            )),
            _ => Ok(()),
        }
    }
}

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Link {
    /// Forward both ways.
    Up = 0,
    /// Accept connections and keep them open, but forward nothing: a region that never
    /// answers.
    Frozen = 1,
    /// Close every connection, accept none: a region that is gone.
    Cut = 2,
}

/// A TCP proxy in front of a server, to freeze or cut a region in a test.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<AtomicU8>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let rt = runtime();
        let (std_listener, addr) = bind();
        let state = Arc::new(AtomicU8::new(Link::Up as u8));
        let st = state.clone();
        rt.spawn(async move {
            let listener = TcpListener::from_std(std_listener).expect("listener");
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if st.load(Ordering::SeqCst) == Link::Cut as u8 {
                    drop(client);
                    continue;
                }
                let st = st.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let a = tokio::spawn(pump(cr, sw, st.clone()));
                    let b = tokio::spawn(pump(sr, cw, st));
                    let _ = tokio::join!(a, b);
                });
            }
        });
        Proxy {
            addr,
            state,
            rt: Some(rt),
        }
    }

    pub fn set(&self, link: Link) {
        self.state.store(link as u8, Ordering::SeqCst);
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Copy one direction, holding data while frozen and dropping the connection when cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<AtomicU8>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            match state.load(Ordering::SeqCst) {
                s if s == Link::Up as u8 => break,
                s if s == Link::Cut as u8 => return,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Link::Cut);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for a child process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `moto_server` (installed by `make deps` into `.venv-moto/`), killed on drop.
pub struct Moto {
    pub addr: SocketAddr,
    child: Child,
}

impl Moto {
    pub fn binary() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-moto/bin/moto_server")
    }

    /// Start moto on a free port. Panics (the test fails, it does not skip) when moto is not
    /// installed.
    pub fn start() -> Moto {
        let exe = Moto::binary();
        assert!(
            exe.exists(),
            "{} is missing: the Object Lock tests need moto; run `make deps` (it installs moto[server]==5.2.5 into .venv-moto/)",
            exe.display()
        );
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new(&exe)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn moto_server");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut moto = Moto { addr, child };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = moto.child.try_wait() {
                    break; // lost the port race: try another
                }
                if std::net::TcpStream::connect(addr).is_ok() {
                    return moto;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = moto.child.kill();
        }
        panic!("moto_server did not start listening (tried 3 ports)");
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Settings for a test bucket at `endpoint`, with the test credentials.
pub fn settings(endpoint: &str, bucket: &str, prefix: &str, timeout: Duration) -> S3Settings {
    S3Settings {
        bucket: bucket.into(),
        region: "us-west-2".into(),
        prefix: prefix.into(),
        endpoint: Some(endpoint.into()),
        object_lock: None,
        timeout,
        credentials: Some(aws_sdk_s3::config::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "test",
        )),
    }
}

pub fn backend(settings: S3Settings) -> Arc<S3Backend> {
    Arc::new(S3Backend::new(settings))
}

/// One `[[regions]]` table of kind s3.
pub struct S3Region<'a> {
    pub name: &'a str,
    pub endpoint: String,
    pub bucket: &'a str,
    pub extra: &'a str,
}

/// A workspace (keys, plan `app-data` over `<dir>/data`) whose regions are S3 buckets.
pub fn s3_workspace(regions: &[S3Region]) -> Workspace {
    let ws = Workspace::new();
    let text = std::fs::read_to_string(ws.config()).expect("config");
    let start = text.find("[[regions]]").expect("regions in example");
    let end = text.find("[[plans]]").expect("plans in example");
    let mut tables = String::new();
    for r in regions {
        tables.push_str(&format!(
            "[[regions]]\nname = \"{}\"\nkind = \"s3\"\nbucket = \"{}\"\nregion = \"{}\"\nprefix = \"lifeboat/test\"\nendpoint = \"{}\"\n{}\n\n",
            r.name, r.bucket, r.name, r.endpoint, r.extra
        ));
    }
    let text = format!("{}{tables}{}", &text[..start], &text[end..]);
    std::fs::write(ws.config(), text).expect("write config");
    ws
}

/// The environment a child `lifeboat` gets: test credentials, and never the instance
/// metadata service (these tests touch nothing but 127.0.0.1).
pub fn aws_env(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-west-2")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_CONFIG_FILE", "/nonexistent/lifeboat-test")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/lifeboat-test")
}

/// Run lifeboat in `ws` with the test credentials.
pub fn run(ws: &Workspace, args: &[&str]) -> Output {
    let mut cmd = ws.cmd(args);
    aws_env(&mut cmd).output().expect("run lifeboat")
}

/// Run and require exit 0; returns stdout.
pub fn ok(ws: &Workspace, args: &[&str]) -> String {
    crate::common::succeeded(args, run(ws, args))
}

pub fn lifeboat_bin() -> PathBuf {
    bin()
}

/// Incompressible bytes, so packs are full size.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Files under `dir`, recursively (what an s3s-fs bucket holds).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
