//! Drill reports in the repository (`drills/<id>`): written to every available region and
//! sealed (no plaintext stored); listed and read back from any region that has a good copy,
//! so a region that went down during the write, or holds a damaged copy, loses nothing;
//! ids that are not object-name components are refused.

use bytes::Bytes;
use lifeboat_repo::backend::{Backend, Fault};
use lifeboat_repo::drills::PREFIX;

use crate::fixture::TestRepo;

const REPORT: &[u8] = br#"{"schema":1,"id":"region-outage-1","result":"passed"}"#;

#[tokio::test]
async fn drill_reports_survive_a_region_missing_or_damaging_its_copy() {
    let t = TestRepo::new(2).await;
    // r1 is down while the report is written: only r0 gets it.
    t.faults[1].inject(Fault::Down);
    let repo = t.open().await;
    let w = repo
        .put_drill_report("region-outage-1", REPORT)
        .await
        .unwrap();
    assert_eq!(w.written, vec!["r0".to_string()]);
    assert_eq!(w.failed.len(), 1);
    assert_eq!(t.names(1, PREFIX), Vec::<String>::new());
    let stored = t.stores[0]
        .get("drills/region-outage-1", None)
        .await
        .unwrap();
    assert!(
        !stored.windows(6).any(|w| w == b"passed"),
        "stored in plaintext"
    );
    t.clear_faults();

    // Back up, r1 gets the next report; listing shows which region holds which.
    let repo = t.open().await;
    repo.put_drill_report("bare-host-2", b"{}").await.unwrap();
    let (listed, failed) = repo.list_drill_reports().await.unwrap();
    assert!(failed.is_empty());
    let ids: Vec<(&str, Vec<String>)> = listed
        .iter()
        .map(|o| (o.id.as_str(), o.regions.clone()))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("bare-host-2", vec!["r0".to_string(), "r1".to_string()]),
            ("region-outage-1", vec!["r0".to_string()]),
        ]
    );

    // A damaged copy in the preferred region: read from the other.
    let good = t.stores[0].get("drills/bare-host-2", None).await.unwrap();
    let mut bad = good.to_vec();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    t.stores[0]
        .put("drills/bare-host-2", Bytes::from(bad))
        .await
        .unwrap();
    assert_eq!(repo.get_drill_report("bare-host-2").await.unwrap(), b"{}");
    assert_eq!(
        repo.get_drill_report("region-outage-1").await.unwrap(),
        REPORT
    );

    for bad_id in ["", "../config", "a/b", "x y"] {
        assert!(
            repo.put_drill_report(bad_id, b"{}").await.is_err(),
            "{bad_id:?} accepted"
        );
    }
}
