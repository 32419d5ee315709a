//! Alerts: webhook notifications when a plan's promise is at risk — a failed run, a
//! degraded snapshot, an RPO breach, an RTO projection breach, an overdue drill, a
//! repository key due for its yearly rotation or past it — once when
//! the incident opens and once when it clears.
//!
//! Incidents are rows of the catalog's `incidents` table, claimed with an atomic insert, so
//! daemons sharing a PostgreSQL catalog notify once between them. A notification that no
//! webhook accepted un-claims its incident, so the next tick tries again.
//!
//! Webhook URLs carry tokens (Slack's do): they come from the environment or the command
//! line, never from lifeboat.toml, and are never logged (only their host is).

use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::Serialize;
use serde_json::json;

use crate::catalog::{get_str, Catalog};
use crate::objectives::{Level, PlanStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"event": "firing"|"resolved", "kind", "plan", "message", "at", "host"}`.
    Json,
    /// `{"text": "…"}`, what Slack incoming webhooks (and Mattermost, Teams connectors
    /// in Slack mode) accept.
    Slack,
}

/// A webhook target. `Debug` shows only the host: the URL may hold a token.
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    pub format: Format,
}

impl Webhook {
    /// A webhook at `url`, refused (a usage error, exit 2) unless it is `https://`, a
    /// loopback `http://` (a test receiver), or `allow_insecure` was given for it: the URL
    /// often holds the token, and alerts name plans and hosts. `origin` names where the
    /// URL came from (`--webhook`, `LIFEBOAT_WEBHOOK_URL`).
    pub fn checked(
        url: &str,
        format: Format,
        allow_insecure: bool,
        origin: &str,
    ) -> std::result::Result<Webhook, crate::config::ConfigError> {
        let invalid = |problem: String| crate::config::ConfigError::Invalid {
            file: std::path::PathBuf::from(origin),
            at: None,
            key: String::new(),
            problem,
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(format!(
                "webhook URLs start with https:// (or http:// for a loopback receiver), not {}",
                host_of(url)
            )));
        }
        if let Some(p) =
            crate::config::transport::plain_http_refusal(url, allow_insecure, "webhook")
        {
            return Err(invalid(p));
        }
        Ok(Webhook {
            url: url.to_string(),
            format,
        })
    }
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Webhook({:?}, {})", self.format, host_of(&self.url))
    }
}

/// The webhook's host (and port), never its path or credentials (a Slack webhook's path
/// is its secret).
fn host_of(url: &str) -> String {
    let Ok(url) = url::Url::parse(url) else {
        return "?".into();
    };
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => "?".into(),
    }
}

/// Something wrong now. `key` identifies the incident across ticks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    pub key: String,
    pub plan: String,
    /// `run_failed`, `degraded_snapshot`, `rpo_breach`, `rto_breach`, `drill_overdue`,
    /// `key_rotation_due`, `key_age_breach`.
    pub kind: String,
    pub message: String,
}

/// What is wrong, from the plans' status. Pure.
pub fn conditions(statuses: &[PlanStatus]) -> Vec<Condition> {
    let mut out = Vec::new();
    for st in statuses {
        let mut add = |kind: &str, message: String| {
            out.push(Condition {
                key: format!("{}/{kind}", st.plan),
                plan: st.plan.clone(),
                kind: kind.into(),
                message,
            })
        };
        if let Some(run) = &st.last_backup {
            if run.phase == "failed" {
                add(
                    "run_failed",
                    format!(
                        "last backup failed: {}",
                        run.error.as_deref().unwrap_or("unknown error")
                    ),
                );
            }
        }
        let bad: Vec<String> = st
            .regions
            .iter()
            .filter(|r| r.health != "ok")
            .map(|r| {
                format!(
                    "{} ({})",
                    r.region,
                    r.detail.as_deref().unwrap_or(&r.health)
                )
            })
            .collect();
        if !bad.is_empty() {
            add(
                "degraded_snapshot",
                format!("newest snapshot not in every region: {}", bad.join(", ")),
            );
        }
        if st.rpo.level == Level::Breach {
            add("rpo_breach", st.rpo.note.clone().unwrap_or_default());
        }
        if st.rto.level == Level::Breach {
            add("rto_breach", st.rto.note.clone().unwrap_or_default());
        }
        if st.drill.level == Level::Breach {
            add("drill_overdue", st.drill.note.clone().unwrap_or_default());
        }
    }
    out
}

/// The key-rotation conditions: `key_rotation_due` from the warning (335 days), and also
/// `key_age_breach` past 365 days. Repository-wide: the plan field is empty. Pure.
pub fn key_conditions(key_age: Option<&crate::objectives::key_age::KeyAge>) -> Vec<Condition> {
    let Some(k) = key_age.filter(|k| k.age_seconds.is_some()) else {
        return Vec::new();
    };
    let repo = k.repository.clone().unwrap_or_default();
    let mut out = Vec::new();
    let mut add = |kind: &str| {
        out.push(Condition {
            key: format!("repository {repo}/{kind}"),
            plan: String::new(),
            kind: kind.into(),
            message: format!("repository {repo}: {}", k.note.clone().unwrap_or_default()),
        })
    };
    if k.level >= Level::Warning {
        add("key_rotation_due");
    }
    if k.level == Level::Breach {
        add("key_age_breach");
    }
    out
}

/// One notification sent (or that would have been, without webhooks).
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// `firing` or `resolved`.
    pub event: String,
    #[serde(flatten)]
    pub condition: Condition,
}

pub struct Alerter {
    pub catalog: Catalog,
    pub webhooks: Vec<Webhook>,
}

impl Alerter {
    /// Open incidents for new conditions and clear the ones gone, notifying each change.
    pub async fn reconcile(&self, current: &[Condition], now: i64) -> Result<Vec<Notification>> {
        let open = self.open_incidents().await?;
        let mut sent = Vec::new();
        for c in current
            .iter()
            .filter(|c| !open.iter().any(|o| o.key == c.key))
        {
            if !self.claim(c, now).await? {
                continue; // another daemon opened it
            }
            let n = Notification {
                event: "firing".into(),
                condition: c.clone(),
            };
            tracing::warn!(plan = %c.plan, kind = %c.kind, message = %c.message, "alert: incident opened");
            if self.notify(&n).await {
                sent.push(n);
            } else {
                self.unclaim(&c.key).await?;
            }
        }
        for o in open
            .iter()
            .filter(|o| !current.iter().any(|c| c.key == o.key))
        {
            if !self.unclaim(&o.key).await? {
                continue;
            }
            let n = Notification {
                event: "resolved".into(),
                condition: o.clone(),
            };
            tracing::info!(plan = %o.plan, kind = %o.kind, "alert: incident cleared");
            // A lost "resolved" is not retried: the incident is gone either way.
            self.notify(&n).await;
            sent.push(n);
        }
        Ok(sent)
    }

    async fn open_incidents(&self) -> Result<Vec<Condition>> {
        let rows = sqlx::query("SELECT key, plan, kind, message FROM incidents ORDER BY key")
            .fetch_all(self.catalog.pool())
            .await
            .context("catalog: incidents")?;
        rows.iter()
            .map(|r| {
                Ok(Condition {
                    key: get_str(r, "key")?,
                    plan: crate::catalog::get_opt_str(r, "plan")?.unwrap_or_default(),
                    kind: get_str(r, "kind")?,
                    message: get_str(r, "message")?,
                })
            })
            .collect()
    }

    async fn claim(&self, c: &Condition, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO incidents (key, plan, kind, opened_at, message) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(c.key.clone())
        .bind(c.plan.clone())
        .bind(c.kind.clone())
        .bind(now)
        .bind(c.message.clone())
        .execute(self.catalog.pool())
        .await
        .context("catalog: open incident")?;
        Ok(done.rows_affected() == 1)
    }

    async fn unclaim(&self, key: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM incidents WHERE key = $1")
            .bind(key.to_string())
            .execute(self.catalog.pool())
            .await
            .context("catalog: close incident")?;
        Ok(done.rows_affected() == 1)
    }

    /// Send to every webhook; true when at least one accepted it, or none is configured.
    async fn notify(&self, n: &Notification) -> bool {
        if self.webhooks.is_empty() {
            return true;
        }
        let mut any = false;
        for hook in &self.webhooks {
            match post(hook, &payload(hook.format, n)).await {
                Ok(()) => any = true,
                Err(e) => {
                    tracing::error!(webhook = ?hook, error = %format!("{e:#}"), "alert: webhook failed")
                }
            }
        }
        any
    }
}

/// The request body for `format`.
pub fn payload(format: Format, n: &Notification) -> serde_json::Value {
    let c = &n.condition;
    match format {
        Format::Json => json!({
            "event": n.event,
            "kind": c.kind,
            "plan": c.plan,
            "message": c.message,
            "at": crate::host::now_secs(),
            "host": crate::host::hostname(),
            "source": "lifeboat",
        }),
        Format::Slack => {
            let title = c.kind.replace('_', " ");
            let text = if n.event == "firing" {
                format!(
                    ":rotating_light: lifeboat: *{title}* for plan `{}`: {}",
                    c.plan, c.message
                )
            } else {
                format!(
                    ":white_check_mark: lifeboat: *{title}* for plan `{}` cleared",
                    c.plan
                )
            };
            json!({ "text": text })
        }
    }
}

/// POST `body` as JSON to the webhook, over https:// (rustls on aws-lc, TLS 1.3 or 1.2
/// only, the system's root certificates) or, where [`Webhook::checked`] allowed it, plain
/// http://. Any 2xx is success.
pub async fn post(hook: &Webhook, body: &serde_json::Value) -> Result<()> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "webhook: no system root certificates could be loaded ({} errors; install ca-certificates)",
        native.errors.len()
    );
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("webhook: TLS configuration")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = hyper::Request::post(hook.url.as_str())
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("lifeboat/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body.to_string())))
        .context("webhook request (check the URL)")?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .context("webhook: no answer within 10 s")?
        .context("webhook: send")?;
    let status = response.status();
    let _ = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect()).await;
    anyhow::ensure!(status.is_success(), "webhook answered {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objectives::{DrillStatus, LastBackup, RegionHealth, RpoStatus, RtoStatus};

    #[test]
    fn a_key_due_for_rotation_warns_and_one_past_a_year_breaches() {
        use crate::objectives::key_age::evaluate;
        let (now, day) = (2_000_000_000, 86_400);
        let kinds = |days: i64| -> Vec<String> {
            key_conditions(Some(&evaluate("r1", 3, now - days * day, now)))
                .into_iter()
                .map(|c| c.kind)
                .collect()
        };
        assert!(kinds(100).is_empty());
        assert_eq!(kinds(340), vec!["key_rotation_due"]);
        assert_eq!(kinds(370), vec!["key_rotation_due", "key_age_breach"]);
        let c = &key_conditions(Some(&evaluate("r1", 3, now - 370 * day, now)))[1];
        assert_eq!(c.key, "repository r1/key_age_breach");
        assert!(c.message.contains("epoch 3"), "{}", c.message);
        assert!(key_conditions(None).is_empty());
    }

    fn status(level: Level) -> PlanStatus {
        PlanStatus {
            plan: "app".into(),
            level,
            rpo: RpoStatus {
                level,
                target_seconds: 86_400,
                age_seconds: None,
                snapshot: None,
                snapshot_time: None,
                note: Some("no snapshot yet".into()),
            },
            rto: RtoStatus {
                level,
                target_seconds: 7200,
                last_test_at: None,
                last_test_seconds: None,
                last_test_passed: None,
                projected_seconds: Some(9000.0),
                current_bytes: None,
                note: Some("projected restore 2h 30m exceeds RTO 2h 0m".into()),
            },
            drill: DrillStatus {
                level,
                every_seconds: 1,
                last_at: None,
                age_seconds: None,
                note: Some("drill overdue".into()),
                last: None,
            },
            regions: vec![
                RegionHealth {
                    region: "west".into(),
                    health: "ok".into(),
                    detail: None,
                },
                RegionHealth {
                    region: "east".into(),
                    health: "degraded".into(),
                    detail: Some("lacks the newest snapshot".into()),
                },
            ],
            last_backup: Some(LastBackup {
                phase: "failed".into(),
                started_at: 0,
                ended_at: Some(1),
                error: Some("disk full".into()),
            }),
        }
    }

    #[test]
    fn every_kind_of_incident_is_raised_with_a_stable_key() {
        let c = conditions(&[status(Level::Breach)]);
        let kinds: Vec<&str> = c.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "run_failed",
                "degraded_snapshot",
                "rpo_breach",
                "rto_breach",
                "drill_overdue"
            ]
        );
        assert_eq!(c[0].key, "app/run_failed");
        assert!(c[0].message.contains("disk full"));
        assert!(c[1].message.contains("east (lacks the newest snapshot)"));
        // Warnings are not incidents; a healthy plan raises nothing.
        let mut ok = status(Level::Warning);
        ok.last_backup = None;
        ok.regions.truncate(1);
        assert!(conditions(&[ok]).is_empty());
    }

    #[test]
    fn payloads() {
        let n = Notification {
            event: "firing".into(),
            condition: Condition {
                key: "app/rpo_breach".into(),
                plan: "app".into(),
                kind: "rpo_breach".into(),
                message: "old".into(),
            },
        };
        let j = payload(Format::Json, &n);
        assert_eq!(j["event"], "firing");
        assert_eq!(j["kind"], "rpo_breach");
        let s = payload(Format::Slack, &n);
        assert!(s["text"].as_str().unwrap().contains("rpo breach"));
        let hook = Webhook {
            url: "https://user:pw@hooks.example.com/services/T0/SECRET".into(),
            format: Format::Slack,
        };
        let shown = format!("{hook:?}");
        assert!(
            !shown.contains("SECRET") && !shown.contains("pw"),
            "{shown}"
        );
        assert!(shown.contains("hooks.example.com"));
    }
}
