//! Shared test fixtures: a temporary workspace with keys, a config with two local regions,
//! and a way to run the real `lifeboat` binary against it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Workspace {
    pub dir: tempfile::TempDir,
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lifeboat"))
}

impl Workspace {
    /// Keys generated, example config written (two local regions, plan `app-data` backing
    /// up `<dir>/data`), repository NOT initialised.
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = Workspace { dir };
        let out = ws.run(&["keys", "generate", "--dir", ws.path("keys").to_str().unwrap()]);
        assert!(out.status.success(), "keys generate: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(ws.config(), lifeboat::config::example(ws.dir.path())).unwrap();
        std::fs::create_dir_all(ws.path("data")).unwrap();
        ws
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config(&self) -> PathBuf {
        self.path("lifeboat.toml")
    }

    /// Run lifeboat with this workspace's config.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run lifeboat")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config").arg(self.config()).args(args).env_remove("LIFEBOAT_CONFIG");
        c
    }

    /// Run and require exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lifeboat {args:?} exited {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, data).unwrap();
}
