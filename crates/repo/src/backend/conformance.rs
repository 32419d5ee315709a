//! The backend conformance suite: one executable statement of the [`Backend`] contract.
//!
//! Every backend (memory, local, S3, and every wrapper around them) must pass [`run`]. Each
//! check names the contract clause it exercises, so a failure reads like
//! `range get: get(name, 990..2000) must clamp to the object's end: got 0 bytes, want 10`.
//!
//! The suite is safe to point at a real, shared bucket: it only touches names under a fresh
//! prefix `conformance-<random>/` and deletes what it wrote, even when a check fails. It never
//! assumes the backend is otherwise empty. One check lists the empty prefix (`list("")` must
//! return everything), which on a large shared bucket means one full listing.

use std::collections::BTreeMap;
use std::ops::Range;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng};

use super::{BackendError, DynBackend};

/// Run every check against `backend`, then remove the objects the suite created.
pub async fn run(backend: DynBackend) -> Result<()> {
    let prefix = format!("conformance-{:016x}/", rand::thread_rng().gen::<u64>());
    let suite = Suite {
        backend: backend.clone(),
        prefix: prefix.clone(),
    };
    let result = suite.all().await;
    let cleanup = suite.cleanup().await;
    let describe = backend.describe();
    result.with_context(|| {
        format!("backend {describe} broke the contract (objects under {prefix})")
    })?;
    cleanup.with_context(|| format!("backend {describe}: cleanup of {prefix}"))
}

struct Suite {
    backend: DynBackend,
    prefix: String,
}

/// Deterministic, incompressible test content of `len` bytes.
fn content(seed: u64, len: usize) -> Bytes {
    let mut bytes = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    Bytes::from(bytes)
}

impl Suite {
    fn name(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    async fn all(&self) -> Result<()> {
        self.roundtrip().await.context("put/get roundtrip")?;
        self.ranges().await.context("range get")?;
        self.empty_object().await.context("empty object")?;
        self.idempotent_put().await.context("idempotent put")?;
        self.overwrite().await.context("overwrite")?;
        self.listing().await.context("list by prefix")?;
        self.modification_time()
            .await
            .context("modification time")?;
        self.missing().await.context("missing objects")?;
        self.delete().await.context("delete")?;
        self.large_object().await.context("5 MiB object")?;
        self.nested_names().await.context("nested names")?;
        self.concurrent_puts().await.context("concurrent puts")?;
        Ok(())
    }

    async fn put(&self, name: &str, data: &Bytes) -> Result<()> {
        self.backend
            .put(name, data.clone())
            .await
            .with_context(|| format!("put({name}) failed"))
    }

    async fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        self.backend
            .get(name, range.clone())
            .await
            .with_context(|| format!("get({name}, {range:?}) failed"))
    }

    /// `list(prefix)` as a name → size map, checking the clause that every name matches.
    async fn list(&self, prefix: &str) -> Result<BTreeMap<String, u64>> {
        let listed = self
            .backend
            .list(prefix)
            .await
            .with_context(|| format!("list({prefix:?}) failed"))?;
        let mut map = BTreeMap::new();
        for info in listed {
            ensure!(
                info.name.starts_with(prefix),
                "list({prefix:?}) must return only names starting with the prefix, got {:?}",
                info.name
            );
            ensure!(
                map.insert(info.name.clone(), info.size).is_none(),
                "list({prefix:?}) returned {:?} twice",
                info.name
            );
        }
        Ok(map)
    }

    /// `list` reports when each object was written, close to this host's clock: prune's grace
    /// period and temporary-file cleanup depend on it.
    async fn modification_time(&self) -> Result<()> {
        let now = crate::clock::now_secs;
        let before = now();
        let name = self.name("mtime/object");
        self.put(&name, &content(7, 10)).await?;
        let after = now();
        let listed = self
            .backend
            .list(&self.name("mtime/"))
            .await
            .context("list failed")?;
        let info = listed
            .iter()
            .find(|o| o.name == name)
            .context("list after put must show the object")?;
        let modified = info
            .modified
            .context("list must report each object's modification time")?;
        // Generous slack: a server's clock may differ a little from ours.
        ensure!(
            modified >= before - 300 && modified <= after + 300,
            "modification time {modified} is far from the time of the put ({before}..{after})"
        );
        Ok(())
    }

    async fn roundtrip(&self) -> Result<()> {
        let name = self.name("roundtrip/object");
        let data = content(1, 4099);
        self.put(&name, &data).await?;
        let got = self.get(&name, None).await?;
        ensure!(
            got == data,
            "get after put must return the bytes put: got {} bytes that differ",
            got.len()
        );
        let size = self
            .backend
            .head(&name)
            .await
            .context("head after put must see the object")?;
        ensure!(
            size == 4099,
            "head after put must return the size put: got {size}, want 4099"
        );
        let listed = self.list(&self.name("roundtrip/")).await?;
        ensure!(
            listed.get(&name) == Some(&4099),
            "list after put must show the object with its size (read-after-write): got {listed:?}"
        );
        Ok(())
    }

    async fn ranges(&self) -> Result<()> {
        let name = self.name("ranges/object");
        let data = content(2, 1000);
        self.put(&name, &data).await?;
        let cases: [(Range<u64>, Range<usize>, &str); 7] = [
            (0..10, 0..10, "a range at the start"),
            (400..500, 400..500, "a range in the middle"),
            (990..1000, 990..1000, "a range ending exactly at the end"),
            (
                990..2000,
                990..1000,
                "a range past the end must clamp to the object's end",
            ),
            (0..1000, 0..1000, "a range covering the whole object"),
            (
                1000..1010,
                1000..1000,
                "a range starting at the end must be empty",
            ),
            (500..500, 500..500, "an empty range must be empty"),
        ];
        for (range, want, clause) in cases {
            let got = self.get(&name, Some(range.clone())).await?;
            ensure!(
                got[..] == data[want.clone()],
                "get(name, {range:?}): {clause}: got {} bytes, want {} (bytes {want:?})",
                got.len(),
                want.len()
            );
        }
        Ok(())
    }

    async fn empty_object(&self) -> Result<()> {
        let name = self.name("empty/object");
        self.put(&name, &Bytes::new()).await?;
        ensure!(
            self.get(&name, None).await?.is_empty(),
            "get of an empty object must return no bytes"
        );
        let ranged = self.get(&name, Some(0..10)).await?;
        ensure!(
            ranged.is_empty(),
            "a range get of an empty object must clamp to nothing, got {} bytes",
            ranged.len()
        );
        let size = self
            .backend
            .head(&name)
            .await
            .context("head of an empty object must succeed")?;
        ensure!(size == 0, "head of an empty object must be 0, got {size}");
        let listed = self.list(&name).await?;
        ensure!(
            listed.get(&name) == Some(&0),
            "list must show an empty object with size 0, got {listed:?}"
        );
        Ok(())
    }

    async fn idempotent_put(&self) -> Result<()> {
        let name = self.name("idempotent/object");
        let data = content(3, 777);
        self.put(&name, &data).await?;
        self.put(&name, &data)
            .await
            .context("putting identical bytes to an existing name must succeed")?;
        ensure!(
            self.get(&name, None).await? == data,
            "after a repeated put the object must hold the same bytes"
        );
        Ok(())
    }

    async fn overwrite(&self) -> Result<()> {
        let name = self.name("overwrite/object");
        self.put(&name, &content(4, 300)).await?;
        let newer = content(5, 120);
        self.put(&name, &newer)
            .await
            .context("putting different bytes to an existing name must replace it")?;
        ensure!(
            self.get(&name, None).await? == newer,
            "after an overwrite get must return the new bytes"
        );
        let size = self.backend.head(&name).await?;
        ensure!(
            size == 120,
            "after an overwrite head must return the new size: got {size}, want 120"
        );
        let listed = self.list(&name).await?;
        ensure!(
            listed.get(&name) == Some(&120),
            "after an overwrite list must show the new size, got {listed:?}"
        );
        Ok(())
    }

    async fn listing(&self) -> Result<()> {
        let objects = [
            ("list/data/ab/1", 1usize),
            ("list/data/ab/2", 2),
            ("list/data/cd/3", 3),
            ("list/database", 4),
            ("list/snapshots/s1", 5),
            ("list/snapx", 6),
        ];
        for (i, (rest, len)) in objects.iter().enumerate() {
            self.put(&self.name(rest), &content(10 + i as u64, *len))
                .await?;
        }
        let expect = |rests: &[&str]| -> BTreeMap<String, u64> {
            objects
                .iter()
                .filter(|(rest, _)| rests.contains(rest))
                .map(|(rest, len)| (self.name(rest), *len as u64))
                .collect()
        };
        let cases: [(&str, Vec<&str>, &str); 9] = [
            (
                "list/data/",
                vec!["list/data/ab/1", "list/data/ab/2", "list/data/cd/3"],
                "a directory-like prefix lists everything below it, recursively",
            ),
            (
                "list/data/a",
                vec!["list/data/ab/1", "list/data/ab/2"],
                "a partial last segment is a plain string prefix",
            ),
            (
                "list/data",
                vec![
                    "list/data/ab/1",
                    "list/data/ab/2",
                    "list/data/cd/3",
                    "list/database",
                ],
                "prefix `data` matches `database` too (plain string prefix, no segment semantics)",
            ),
            (
                "list/snap",
                vec!["list/snapshots/s1", "list/snapx"],
                "a partial prefix matches files and directories alike",
            ),
            (
                "list/database",
                vec!["list/database"],
                "a full object name lists that object",
            ),
            (
                "list/",
                objects.iter().map(|(r, _)| *r).collect(),
                "the parent prefix lists every object",
            ),
            (
                "list/nothing",
                vec![],
                "a prefix that matches nothing yields an empty list",
            ),
            (
                "list/zz/",
                vec![],
                "a directory-like prefix that matches nothing yields an empty list",
            ),
            (
                "list/data/ab/1/",
                vec![],
                "a prefix running through an object name matches nothing",
            ),
        ];
        for (rest, want, clause) in cases {
            let prefix = self.name(rest);
            let got = self.list(&prefix).await?;
            let want = expect(&want);
            ensure!(
                got == want,
                "list({prefix:?}): {clause}:\n got  {got:?}\n want {want:?}"
            );
        }
        let everything = self.list("").await?;
        for (rest, len) in objects {
            let name = self.name(rest);
            ensure!(
                everything.get(&name) == Some(&(len as u64)),
                "list(\"\") must return every object, but {name} (size {len}) is missing or has the wrong size"
            );
        }
        Ok(())
    }

    async fn missing(&self) -> Result<()> {
        let name = self.name("missing/never-put");
        let checks: [(&str, Result<(), BackendError>); 3] = [
            ("get", self.backend.get(&name, None).await.map(drop)),
            (
                "get with a range",
                self.backend.get(&name, Some(0..10)).await.map(drop),
            ),
            ("head", self.backend.head(&name).await.map(drop)),
        ];
        for (what, result) in checks {
            match result {
                Err(e) if e.is_not_found() && e.is_permanent() => {}
                Err(e) if e.is_not_found() => {
                    bail!("{what} of a missing object: NotFound must be permanent")
                }
                Err(e) => bail!("{what} of a missing object must be NotFound, got: {e}"),
                Ok(()) => bail!("{what} of a missing object must be NotFound, but it succeeded"),
            }
        }
        self.backend
            .delete(&name)
            .await
            .context("delete of a missing object must succeed")?;
        let listed = self.list(&self.name("missing/")).await?;
        ensure!(
            listed.is_empty(),
            "nothing was put under missing/, yet list returned {listed:?}"
        );
        Ok(())
    }

    async fn delete(&self) -> Result<()> {
        let keep = self.name("delete/keep");
        let gone = self.name("delete/gone");
        self.put(&keep, &content(20, 10)).await?;
        self.put(&gone, &content(21, 10)).await?;
        self.backend
            .delete(&gone)
            .await
            .context("delete of an existing object must succeed")?;
        match self.backend.get(&gone, None).await {
            Err(e) if e.is_not_found() => {}
            other => bail!(
                "get after delete must be NotFound, got {:?}",
                other.map(|b| b.len())
            ),
        }
        match self.backend.head(&gone).await {
            Err(e) if e.is_not_found() => {}
            other => bail!("head after delete must be NotFound, got {other:?}"),
        }
        let listed = self.list(&self.name("delete/")).await?;
        let want = BTreeMap::from([(keep.clone(), 10)]);
        ensure!(
            listed == want,
            "list after delete must drop exactly the deleted object: got {listed:?}"
        );
        self.backend
            .delete(&gone)
            .await
            .context("deleting an already deleted object must succeed")?;
        Ok(())
    }

    async fn large_object(&self) -> Result<()> {
        let name = self.name("large/object");
        let len = 5 * 1024 * 1024;
        let data = content(30, len);
        self.put(&name, &data).await?;
        ensure!(
            self.get(&name, None).await? == data,
            "a 5 MiB object must round-trip intact"
        );
        let size = self.backend.head(&name).await?;
        ensure!(
            size == len as u64,
            "head of a 5 MiB object: got {size}, want {len}"
        );
        let middle = 2_500_000u64..2_600_000u64;
        let got = self.get(&name, Some(middle.clone())).await?;
        ensure!(
            got[..] == data[2_500_000..2_600_000],
            "a range in the middle of a 5 MiB object must match"
        );
        Ok(())
    }

    async fn nested_names(&self) -> Result<()> {
        let deep = self.name("nested/a/b/c/d/e/object");
        let shallow = self.name("nested/a/object");
        let middle = self.name("nested/a/b/object");
        for (i, name) in [&deep, &shallow, &middle].into_iter().enumerate() {
            self.put(name, &content(40 + i as u64, 50 + i)).await?;
        }
        for (i, name) in [&deep, &shallow, &middle].into_iter().enumerate() {
            let got = self.get(name, None).await?;
            ensure!(
                got == content(40 + i as u64, 50 + i),
                "nested name {name} must round-trip"
            );
        }
        let listed = self.list(&self.name("nested/")).await?;
        let want = BTreeMap::from([(deep, 50), (shallow, 51), (middle, 52)]);
        ensure!(
            listed == want,
            "list must find objects at every depth: got {listed:?}"
        );
        Ok(())
    }

    async fn concurrent_puts(&self) -> Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..32u64 {
            let backend = self.backend.clone();
            let name = self.name(&format!("concurrent/{i:02}"));
            tasks.spawn(async move {
                backend
                    .put(&name, content(100 + i, 1000 + i as usize))
                    .await
                    .map(|()| name)
            });
        }
        // Identical concurrent puts to one name must all succeed (idempotence under races).
        let same = self.name("concurrent-same/object");
        for _ in 0..8 {
            let backend = self.backend.clone();
            let name = same.clone();
            tasks.spawn(async move { backend.put(&name, content(200, 4096)).await.map(|()| name) });
        }
        while let Some(joined) = tasks.join_next().await {
            let name = joined.context("a put task panicked")?;
            name.context("concurrent put failed")?;
        }
        let listed = self.list(&self.name("concurrent/")).await?;
        ensure!(
            listed.len() == 32,
            "all 32 concurrent puts must be visible in list, got {}",
            listed.len()
        );
        for i in 0..32u64 {
            let name = self.name(&format!("concurrent/{i:02}"));
            ensure!(
                self.get(&name, None).await? == content(100 + i, 1000 + i as usize),
                "concurrent put {name} must hold exactly its own bytes"
            );
        }
        ensure!(
            self.get(&same, None).await? == content(200, 4096),
            "identical concurrent puts must leave that content"
        );
        Ok(())
    }

    /// Delete everything under the suite's prefix and check that it is gone.
    async fn cleanup(&self) -> Result<()> {
        for info in self
            .backend
            .list(&self.prefix)
            .await
            .context("list for cleanup")?
        {
            self.backend
                .delete(&info.name)
                .await
                .with_context(|| format!("delete {} during cleanup", info.name))?;
        }
        let left = self.list(&self.prefix).await?;
        ensure!(
            left.is_empty(),
            "after deleting every listed object, list must be empty, got {left:?}"
        );
        Ok(())
    }
}
