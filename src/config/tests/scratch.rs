//! A postgres plan's scratch server: never the source's unless allowed, checked at load.

use super::{parse, with_source};

#[test]
fn postgres_scratch_url_on_the_source_server_is_refused_unless_allowed() {
    let source = r#"kind = "postgres", url = "postgres://app@127.0.0.1/app", scratch_url = "postgres://admin@localhost:5432/postgres""#;
    let message = parse(&with_source(source)).unwrap_err().to_string();
    assert!(message.contains("plans[0].source.scratch_url"), "{message}");
    assert!(message.contains("is the source's server"), "{message}");
    assert!(
        message.contains("allow_scratch_on_source = true"),
        "{message}"
    );
    let allowed = source.replace("scratch_url", "allow_scratch_on_source = true, scratch_url");
    parse(&with_source(&allowed)).unwrap();
    // Another port is another server.
    parse(&with_source(
        &source.replace("localhost:5432", "localhost:5433"),
    ))
    .unwrap();

    // No scratch server: fine until a restore test is asked for; a scheduled one is refused.
    let bare = r#"kind = "postgres", url = "postgres://app@db/app""#;
    let config = parse(&with_source(bare)).unwrap();
    let err = config
        .scratch_admin_url(&config.plans[0])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("scratch_url") && err.contains("allow_scratch_on_source"),
        "{err}"
    );
    let scheduled = with_source(bare).replace(
        "name = \"db\"\n",
        "name = \"db\"\nverify_schedule = \"0 6 * * *\"\n",
    );
    let message = parse(&scheduled).unwrap_err().to_string();
    assert!(message.contains("plans[0].source.scratch_url"), "{message}");
    assert!(message.contains("verify_schedule"), "{message}");
    let config = parse(&with_source(
        &bare.replace("app\"", "app\", allow_scratch_on_source = true"),
    ))
    .unwrap();
    assert_eq!(
        config.scratch_admin_url(&config.plans[0]).unwrap(),
        "postgres://app@db/postgres"
    );
}
