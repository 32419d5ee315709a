//! A scripted [`Rds`] for unit tests: the state transitions moto cannot show (it makes
//! everything `available` at once). Each snapshot or instance created gets the next status
//! script for its kind; every describe moves one step along it (the last step repeats).
//! Every call is logged so tests can assert what was (and was not) done.

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::Result;
use async_trait::async_trait;

use super::{Instance, Rds, RestoreSpec, Snapshot};

#[derive(Default)]
pub struct Fake {
    pub state: Mutex<State>,
}

#[derive(Default)]
pub struct State {
    /// (region, id) → snapshot and its remaining status script.
    pub snapshots: BTreeMap<(String, String), (Snapshot, Vec<String>)>,
    pub instances: BTreeMap<(String, String), (Instance, Vec<String>)>,
    /// Status scripts for the next snapshot created / copied into a region.
    pub snapshot_scripts: BTreeMap<String, Vec<String>>,
    pub instance_script: Vec<String>,
    /// Regions where CopyDBSnapshot is refused, with the error.
    pub copy_errors: BTreeMap<String, String>,
    pub calls: Vec<String>,
}

fn script(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl Fake {
    pub fn new() -> Fake {
        Fake::default()
    }

    pub fn snapshots_go(&self, region: &str, statuses: &[&str]) {
        self.state
            .lock()
            .unwrap()
            .snapshot_scripts
            .insert(region.into(), script(statuses));
    }

    pub fn instances_go(&self, statuses: &[&str]) {
        self.state.lock().unwrap().instance_script = script(statuses);
    }

    pub fn refuse_copies_into(&self, region: &str, error: &str) {
        self.state
            .lock()
            .unwrap()
            .copy_errors
            .insert(region.into(), error.into());
    }

    /// Add an existing snapshot (e.g. one lifeboat did not make).
    pub fn add_snapshot(&self, s: Snapshot) {
        let key = (s.region.clone(), s.id.clone());
        self.state
            .lock()
            .unwrap()
            .snapshots
            .insert(key, (s, Vec::new()));
    }

    pub fn add_instance(&self, region: &str, i: Instance) {
        self.state
            .lock()
            .unwrap()
            .instances
            .insert((region.into(), i.id.clone()), (i, Vec::new()));
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn snapshot_ids(&self, region: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.snapshots
            .keys()
            .filter(|(r, _)| r == region)
            .map(|(_, id)| id.clone())
            .collect()
    }

    pub fn instance_ids(&self, region: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.instances
            .keys()
            .filter(|(r, _)| r == region)
            .map(|(_, id)| id.clone())
            .collect()
    }

    fn new_snapshot(
        &self,
        region: &str,
        instance: &str,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Snapshot {
        let mut st = self.state.lock().unwrap();
        let script = st
            .snapshot_scripts
            .get(region)
            .cloned()
            .unwrap_or_else(|| script(&["available"]));
        let s = Snapshot {
            id: id.into(),
            arn: format!("arn:aws:rds:{region}:123456789012:snapshot:{id}"),
            region: region.into(),
            instance: instance.into(),
            status: script[0].clone(),
            percent: Some(0),
            created: Some(crate::host::now_secs()),
            kind: "manual".into(),
            tags: tags.clone(),
        };
        st.snapshots
            .insert((region.into(), id.into()), (s.clone(), script));
        s
    }
}

fn step<T: Clone>(entry: &mut (T, Vec<String>), set: impl Fn(&mut T, &str)) -> T {
    if entry.1.len() > 1 {
        entry.1.remove(0);
    }
    if let Some(status) = entry.1.first() {
        set(&mut entry.0, status);
    }
    entry.0.clone()
}

#[async_trait]
impl Rds for Fake {
    async fn create_snapshot(
        &self,
        region: &str,
        instance: &str,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Snapshot> {
        self.state
            .lock()
            .unwrap()
            .calls
            .push(format!("create_snapshot {region} {id}"));
        Ok(self.new_snapshot(region, instance, id, tags))
    }

    async fn describe_snapshot(&self, region: &str, id: &str) -> Result<Option<Snapshot>> {
        let mut st = self.state.lock().unwrap();
        Ok(st.snapshots.get_mut(&(region.into(), id.into())).map(|e| {
            step(e, |s, status| {
                s.status = status.into();
                s.percent = Some(s.percent.unwrap_or(0).saturating_add(25).min(100));
            })
        }))
    }

    async fn list_snapshots(&self, region: &str) -> Result<Vec<Snapshot>> {
        let st = self.state.lock().unwrap();
        Ok(st
            .snapshots
            .iter()
            .filter(|((r, _), _)| r == region)
            .map(|(_, (s, _))| s.clone())
            .collect())
    }

    async fn copy_snapshot(
        &self,
        region: &str,
        source_arn: &str,
        id: &str,
        _kms: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Snapshot> {
        let refused = {
            let mut st = self.state.lock().unwrap();
            st.calls
                .push(format!("copy_snapshot {region} {id} from {source_arn}"));
            st.copy_errors.get(region).cloned()
        };
        if let Some(e) = refused {
            anyhow::bail!("RDS CopyDBSnapshot in {region}: {e}");
        }
        Ok(self.new_snapshot(region, "", id, tags))
    }

    async fn delete_snapshot(&self, region: &str, id: &str) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        st.calls.push(format!("delete_snapshot {region} {id}"));
        st.snapshots.remove(&(region.into(), id.into()));
        Ok(())
    }

    async fn restore_instance(&self, region: &str, spec: &RestoreSpec) -> Result<Instance> {
        let mut st = self.state.lock().unwrap();
        st.calls.push(format!(
            "restore_instance {region} {} from {}",
            spec.instance, spec.snapshot
        ));
        let script = if st.instance_script.is_empty() {
            script(&["available"])
        } else {
            st.instance_script.clone()
        };
        let i = Instance {
            id: spec.instance.clone(),
            status: script[0].clone(),
            address: Some(format!("{}.fake.{region}.rds.amazonaws.com", spec.instance)),
            port: Some(5432),
            tags: spec.tags.clone(),
        };
        st.instances
            .insert((region.into(), spec.instance.clone()), (i.clone(), script));
        Ok(i)
    }

    async fn describe_instance(&self, region: &str, id: &str) -> Result<Option<Instance>> {
        let mut st = self.state.lock().unwrap();
        Ok(st
            .instances
            .get_mut(&(region.into(), id.into()))
            .map(|e| step(e, |i, status| i.status = status.into())))
    }

    async fn list_instances(&self, region: &str) -> Result<Vec<Instance>> {
        let st = self.state.lock().unwrap();
        Ok(st
            .instances
            .iter()
            .filter(|((r, _), _)| r == region)
            .map(|(_, (i, _))| i.clone())
            .collect())
    }

    async fn delete_instance(&self, region: &str, id: &str) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        st.calls.push(format!("delete_instance {region} {id}"));
        st.instances.remove(&(region.into(), id.into()));
        Ok(())
    }
}
