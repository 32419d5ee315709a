//! What the user wrote in a runbook: the first stage of parsing `runbooks/*.toml`.
//!
//! Every field is optional and spanned so `resolve` can point at it; unknown keys are
//! rejected here (`deny_unknown_fields`). The fields of every step kind sit side by side in
//! [`RawStep`]; which ones a kind allows is checked in `resolve`, which can name the kind.

use serde::Deserialize;
use toml::Spanned;

pub(super) type Text = Option<Spanned<String>>;
pub(super) type TextList = Option<Spanned<Vec<Spanned<String>>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRunbook {
    pub runbook: Option<Spanned<RawHeader>>,
    pub objectives: Option<Spanned<RawObjectives>>,
    pub guards: Option<Spanned<RawGuards>>,
    pub step: Option<Spanned<Vec<Spanned<RawStep>>>>,
    pub cleanup: Option<Spanned<Vec<Spanned<RawStep>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeader {
    pub id: Text,
    pub version: Option<Spanned<i64>>,
    pub owner: Text,
    pub scenario: Text,
    pub frequency: Text,
    pub plans: TextList,
    pub regions: TextList,
    pub controls: TextList,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawObjectives {
    pub rto: Text,
    pub rpo: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGuards {
    pub max_duration: Text,
    pub deny_production_writes: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub id: Text,
    pub kind: Text,
    pub after: TextList,
    pub timeout: Text,
    pub retries: Option<Spanned<u32>>,
    pub on_failure: Text,
    // declare
    pub simulate: Text,
    // restore
    pub plans: TextList,
    pub snapshot: Text,
    pub region: Text,
    pub into: Text,
    pub process: Text,
    // verify, sql
    pub on: Text,
    pub plan: Text,
    pub query: Text,
    pub expect: Text,
    // command
    pub run: TextList,
    pub expect_exit: Option<Spanned<i64>>,
    pub stdout_contains: Text,
    // approve
    pub prompt: Text,
    // assert
    pub rto: Option<Spanned<bool>>,
    pub rpo: Option<Spanned<bool>>,
    pub rpo_regions: TextList,
    pub that: TextList,
    // wait
    pub duration: Text,
    // notify
    pub message: Text,
}

impl RawStep {
    /// The kind-specific keys present, with their spans (for "key not used by this kind").
    pub fn present(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let mut out = Vec::new();
        let texts = [
            ("simulate", &self.simulate),
            ("snapshot", &self.snapshot),
            ("region", &self.region),
            ("into", &self.into),
            ("process", &self.process),
            ("on", &self.on),
            ("plan", &self.plan),
            ("query", &self.query),
            ("expect", &self.expect),
            ("stdout_contains", &self.stdout_contains),
            ("prompt", &self.prompt),
            ("duration", &self.duration),
            ("message", &self.message),
        ];
        for (name, v) in texts {
            if let Some(v) = v {
                out.push((name, v.span()));
            }
        }
        let lists = [
            ("plans", &self.plans),
            ("run", &self.run),
            ("rpo_regions", &self.rpo_regions),
            ("that", &self.that),
        ];
        for (name, v) in lists {
            if let Some(v) = v {
                out.push((name, v.span()));
            }
        }
        if let Some(v) = &self.expect_exit {
            out.push(("expect_exit", v.span()));
        }
        if let Some(v) = &self.rto {
            out.push(("rto", v.span()));
        }
        if let Some(v) = &self.rpo {
            out.push(("rpo", v.span()));
        }
        out
    }
}
