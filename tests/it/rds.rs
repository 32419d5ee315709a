//! rds plans against moto (one process serves us-west-2 and us-east-2, RDS and KMS): backup
//! in us-west-2 with the copy in us-east-2 under a destination KMS key, retention that
//! deletes only lifeboat's tagged snapshots, a restore test that leaves no instance behind
//! (and removes a killed run's leftover), a restore into a named instance, and `catalog
//! sync` reading the rows back from DescribeDBSnapshots. moto makes everything `available`
//! at once; the transitions are unit tests over the scripted fake (src/rds/tests.rs).

use std::process::Command;

use serde_json::Value;

use crate::common::Workspace;
use crate::servers::{aws_env, run, Moto, ACCESS_KEY, SECRET_KEY};

/// Run a boto3 snippet against moto (test setup only: lifeboat never calls these).
/// `rds(region)` and `kms(region)` are clients; the snippet prints its answer.
fn py(moto: &Moto, code: &str) -> String {
    let python = Moto::binary().with_file_name("python");
    let prelude = format!(
        "import boto3, json\n\
         def rds(r): return boto3.client('rds', region_name=r, endpoint_url='{e}', aws_access_key_id='{a}', aws_secret_access_key='{s}')\n\
         def kms(r): return boto3.client('kms', region_name=r, endpoint_url='{e}', aws_access_key_id='{a}', aws_secret_access_key='{s}')\n",
        e = moto.endpoint(),
        a = ACCESS_KEY,
        s = SECRET_KEY
    );
    let out = Command::new(python)
        .arg("-c")
        .arg(format!("{prelude}{code}"))
        .output()
        .expect("run moto's python");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn snapshot_ids(moto: &Moto, region: &str) -> Vec<String> {
    let out = py(moto, &format!("print(json.dumps(sorted(s['DBSnapshotIdentifier'] for s in rds('{region}').describe_db_snapshots(SnapshotType='manual')['DBSnapshots'])))"));
    serde_json::from_str(&out).unwrap()
}

fn instance_ids(moto: &Moto, region: &str) -> Vec<String> {
    let out = py(moto, &format!("print(json.dumps(sorted(i['DBInstanceIdentifier'] for i in rds('{region}').describe_db_instances()['DBInstances'])))"));
    serde_json::from_str(&out).unwrap()
}

/// `status --json`'s entry for `plan`.
fn plan_status(ws: &Workspace, plan: &str) -> Value {
    let out = run(ws, &["status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    status["plans"]
        .as_array()
        .and_then(|plans| plans.iter().find(|p| p["plan"] == plan).cloned())
        .unwrap_or_else(|| panic!("no plan {plan} in {status}"))
}

fn json(ws: &Workspace, args: &[&str], code: i32) -> Value {
    let out = run(ws, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "lifeboat {args:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// moto with a source instance in us-west-2 and a KMS key in us-east-2; a workspace whose
/// config has plan `db` over it.
fn setup(keep_last: u32) -> (Moto, Workspace, String) {
    let moto = Moto::start();
    py(&moto, "rds('us-west-2').create_db_instance(DBInstanceIdentifier='app-db', Engine='postgres', DBInstanceClass='db.t4g.micro', AllocatedStorage=20, MasterUsername='app', MasterUserPassword='secret-password', Tags=[{'Key': 'lifeboat:source', 'Value': 'true'}])");
    let key = py(
        &moto,
        "print(kms('us-east-2').create_key(Description='lifeboat-rds')['KeyMetadata']['Arn'])",
    );
    assert!(key.starts_with("arn:aws:kms:us-east-2:"), "{key}");
    let ws = Workspace::new();
    ws.edit_config(|text| {
        format!(
            "{text}\n[[plans]]\nname = \"db\"\nretention = {{ keep_last = {keep_last} }}\n\
             source = {{ kind = \"rds\", instance = \"app-db\", region = \"us-west-2\", \
             copy_to = [{{ region = \"us-east-2\", kms_key_id = \"{key}\" }}], instance_class = \"db.t4g.micro\", \
             endpoint = \"{}\", poll_interval = \"100ms\", timeout = \"60s\", tags = {{ team = \"data\" }} }}\n",
            moto.endpoint()
        )
    });
    (moto, ws, key)
}

#[test]
fn backup_copies_across_regions_and_retention_keeps_only_what_it_should() {
    let (moto, ws, _) = setup(2);
    // A snapshot somebody else made, named like lifeboat's but untagged: never deleted.
    py(&moto, "rds('us-west-2').create_db_snapshot(DBInstanceIdentifier='app-db', DBSnapshotIdentifier='lifeboat-db-20200101-000000')");

    let mut taken = Vec::new();
    for _ in 0..3 {
        let r = json(&ws, &["backup", "db", "--json"], 0);
        assert_eq!(r["degraded"], false, "{r}");
        assert_eq!(r["regions"]["us-west-2"]["state"], "available", "{r}");
        assert_eq!(r["regions"]["us-east-2"]["state"], "available", "{r}");
        taken.push(r["snapshot"].as_str().unwrap().to_string());
        std::thread::sleep(std::time::Duration::from_millis(1100)); // names carry the second
    }
    // The copy exists in us-east-2, under the destination key, with lifeboat's tags.
    let copy = py(&moto, &format!("s = rds('us-east-2').describe_db_snapshots(DBSnapshotIdentifier='{}')['DBSnapshots'][0]; print(json.dumps({{'kms': s.get('KmsKeyId'), 'tags': {{t['Key']: t['Value'] for t in rds('us-east-2').list_tags_for_resource(ResourceName=s['DBSnapshotArn'])['TagList']}}}}))", taken[2]));
    let copy: Value = serde_json::from_str(&copy).unwrap();
    assert_eq!(copy["tags"]["lifeboat:managed"], "true", "{copy}");
    assert_eq!(copy["tags"]["lifeboat:plan"], "db", "{copy}");
    assert_eq!(copy["tags"]["team"], "data", "{copy}");
    assert!(
        copy["tags"]["lifeboat:run"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{copy}"
    );

    // keep_last = 2: the oldest of lifeboat's went in both regions; the foreign one stayed.
    let mut west_expected = vec![
        "lifeboat-db-20200101-000000".to_string(),
        taken[1].clone(),
        taken[2].clone(),
    ];
    west_expected.sort();
    assert_eq!(snapshot_ids(&moto, "us-west-2"), west_expected);
    assert_eq!(
        snapshot_ids(&moto, "us-east-2"),
        vec![taken[1].clone(), taken[2].clone()]
    );

    // The catalog shows the plan complete in both regions, and status counts it.
    let list = json(&ws, &["snapshots", "--plan", "db", "--json"], 0);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![taken[1].as_str(), taken[2].as_str()], "{list}");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|s| s["complete"] == true),
        "{list}"
    );
    let db = plan_status(&ws, "db");
    assert_eq!(db["rpo"]["snapshot"], taken[2].as_str(), "{db}");

    // catalog sync rebuilds the rows from DescribeDBSnapshots (tags), from scratch.
    let db_path = ws.path("lifeboat.db"); // the example config's catalog
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
    }
    ws.ok(&["init"]); // catalog sync also lists the (empty) repository of the example regions
    let synced = json(&ws, &["catalog", "sync", "--json"], 0);
    assert_eq!(synced["rds"]["snapshots"], 2, "{synced}");
    let list = json(&ws, &["snapshots", "--plan", "db", "--json"], 0);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|s| s["complete"] == true),
        "{list}"
    );
}

#[test]
fn restore_test_leaves_no_instance_and_restore_creates_one() {
    let (moto, ws, _) = setup(5);
    json(&ws, &["backup", "db", "--json"], 0);
    // A scratch instance a killed run left behind, tagged as lifeboat's.
    py(&moto, "rds('us-east-2').create_db_instance(DBInstanceIdentifier='lifeboat-drill-db-20200101-000000', Engine='postgres', DBInstanceClass='db.t4g.micro', AllocatedStorage=20, MasterUsername='app', MasterUserPassword='secret-password', Tags=[{'Key': 'lifeboat:drill', 'Value': 'true'}, {'Key': 'lifeboat:plan', 'Value': 'db'}])");

    let v = json(
        &ws,
        &[
            "verify",
            "--restore",
            "--plan",
            "db",
            "--from",
            "us-east-2",
            "--json",
        ],
        0,
    );
    let t = &v["restore_tests"][0];
    assert_eq!(t["passed"], true, "{v}");
    assert_eq!(t["region"], "us-east-2", "{v}");
    assert!(
        t["checked"]
            .as_str()
            .unwrap()
            .contains("removed leftovers: us-east-2/lifeboat-drill-db-20200101-000000"),
        "{v}"
    );
    assert_eq!(v["recorded"], true, "{v}");
    assert!(
        instance_ids(&moto, "us-east-2").is_empty(),
        "no scratch instance left"
    );
    assert_eq!(instance_ids(&moto, "us-west-2"), vec!["app-db".to_string()]);

    // status now has RTO evidence for the plan.
    let db = plan_status(&ws, "db");
    assert_eq!(db["rto"]["last_test_passed"], true, "{db}");

    // The shipped runbook: the rds_restore step restores from us-east-2 and deletes again.
    ws.ok(&["init"]); // the drill also reads the (empty) repository of the example regions
    let book =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/rds-region-outage.toml");
    let d = json(
        &ws,
        &[
            "drill",
            "run",
            book.to_str().unwrap(),
            "--approve-all",
            "--approver",
            "tester",
            "--json",
        ],
        0,
    );
    let report = &d["report"];
    assert_eq!(report["result"], "passed", "{report:#}");
    let steps = report["steps"].as_array().unwrap();
    let rds_step = steps.iter().find(|s| s["id"] == "rds").unwrap();
    assert_eq!(
        rds_step["outputs"]["db.region"], "us-east-2",
        "{rds_step:#}"
    );
    let rpo = report["rpo"].as_array().unwrap();
    assert!(
        rpo[0]["regions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["met"] == true),
        "{:#}",
        report["rpo"]
    );
    assert!(
        instance_ids(&moto, "us-east-2").is_empty(),
        "the drill's scratch instance is gone"
    );

    // A restore into a named instance; it exists afterwards, and a second one is refused.
    let r = json(
        &ws,
        &[
            "restore",
            "db",
            "--to-instance",
            "app-db-restored",
            "--from",
            "us-east-2",
            "--json",
        ],
        0,
    );
    assert_eq!(r["instance"], "app-db-restored", "{r}");
    assert!(r["address"].as_str().is_some(), "{r}");
    assert_eq!(
        instance_ids(&moto, "us-east-2"),
        vec!["app-db-restored".to_string()]
    );
    let out = run(
        &ws,
        &[
            "restore",
            "db",
            "--to-instance",
            "app-db-restored",
            "--from",
            "us-east-2",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --from must be one of the plan's regions.
    let out = run(
        &ws,
        &[
            "restore",
            "db",
            "--to-instance",
            "x-db",
            "--from",
            "eu-west-1",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not \"eu-west-1\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_destination_key_degrades_the_backup_with_exit_3() {
    let (moto, ws, key) = setup(5);
    let bad = key.replace(
        key.rsplit('/').next().unwrap(),
        "00000000-0000-0000-0000-000000000000",
    );
    ws.edit_config(|text| text.replace(&key, &bad));
    let mut cmd = ws.cmd(&["backup", "db", "--json"]);
    let out = aws_env(&mut cmd).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["regions"]["us-west-2"]["state"], "available", "{r}");
    assert_eq!(r["regions"]["us-east-2"]["state"], "failed", "{r}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEGRADED: us-east-2"));
    // Not complete: the catalog shows it failed in us-east-2, and it is not the RPO's.
    let list = json(&ws, &["snapshots", "--plan", "db", "--json"], 0);
    assert_eq!(list[0]["complete"], false, "{list}");
    assert_eq!(list[0]["regions"]["us-east-2"]["state"], "failed", "{list}");
    assert!(snapshot_ids(&moto, "us-east-2").is_empty());
}
