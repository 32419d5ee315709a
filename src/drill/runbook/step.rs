//! Resolving one `[[step]]` of a runbook into its closed kind (the bulk of the
//! runbook's validation), split from `runbook` by size.

use super::*;

impl Resolver<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step(
        &self,
        s: RawStep,
        span: Range<usize>,
        key: &str,
        book: &Runbook,
        seen: &mut BTreeMap<String, Range<usize>>,
        previous: Option<&str>,
        cleanup: bool,
    ) -> Result<Step> {
        let id_v = self.required(&s.id, span.clone(), &format!("{key}.id"))?;
        let id = self.name(id_v, &format!("{key}.id"))?;
        if id == "drill" {
            return Err(self.err(
                id_v.span(),
                &format!("{key}.id"),
                "`drill` is reserved for ${drill.…} values",
            ));
        }
        if seen.insert(id.clone(), id_v.span()).is_some() {
            return Err(self.err(
                id_v.span(),
                &format!("{key}.id"),
                format!("duplicate step id {id:?}"),
            ));
        }
        let kind_v = self.required(&s.kind, span.clone(), &format!("{key}.kind"))?;
        let kind_name = kind_v.get_ref().as_str();
        let allowed_kinds: Vec<&str> = if cleanup {
            CLEANUP_KINDS.to_vec()
        } else {
            KINDS.iter().map(|(k, _)| *k).collect()
        };
        let Some((_, allowed)) = KINDS
            .iter()
            .find(|(k, _)| *k == kind_name && allowed_kinds.contains(k))
        else {
            return Err(self.err(
                kind_v.span(),
                &format!("{key}.kind"),
                format!(
                    "unknown step kind {kind_name:?} (expected one of: {})",
                    allowed_kinds.join(", ")
                ),
            ));
        };
        for (name, at) in s.present() {
            if !allowed.contains(&name) {
                return Err(self.err(
                    at,
                    &format!("{key}.{name}"),
                    format!(
                        "{}; a {kind_name} step takes: {}",
                        unknown_key_problem(name, ""),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        let k = |f: &str| format!("{key}.{f}");
        let after = match (&s.after, cleanup) {
            (Some(a), true) => {
                return Err(self.err(
                    a.span(),
                    &k("after"),
                    "cleanup steps run in file order; remove `after`",
                ))
            }
            (Some(a), false) => {
                let mut out = Vec::new();
                for name in a.get_ref() {
                    out.push(name.get_ref().clone());
                }
                out
            }
            (None, _) => previous.map(|p| vec![p.to_string()]).unwrap_or_default(),
        };
        let kind = match kind_name {
            "declare" => StepKind::Declare {
                region_down: match &s.simulate {
                    None => None,
                    Some(v) => {
                        let Some(region) = v.get_ref().strip_prefix("region_down:") else {
                            return Err(self.err(
                                v.span(),
                                &k("simulate"),
                                "expected \"region_down:REGION\"",
                            ));
                        };
                        if !book.regions.iter().any(|r| r == region) {
                            return Err(self.err(
                                v.span(),
                                &k("simulate"),
                                format!(
                                    "unknown region {region:?} (the runbook covers: {})",
                                    book.regions.join(", ")
                                ),
                            ));
                        }
                        Some(region.to_string())
                    }
                },
            },
            "restore" => self.restore(&s, book, &k)?,
            "rds_restore" => self.rds_restore(&s, book, &k)?,
            "verify" => StepKind::Verify {
                on: self
                    .required(&s.on, span.clone(), &k("on"))?
                    .get_ref()
                    .clone(),
            },
            "sql" => StepKind::Sql {
                on: self
                    .required(&s.on, span.clone(), &k("on"))?
                    .get_ref()
                    .clone(),
                plan: match &s.plan {
                    Some(p) => {
                        self.known_plan(p, &k("plan"), book)?;
                        Some(p.get_ref().clone())
                    }
                    None => None,
                },
                query: self
                    .required(&s.query, span.clone(), &k("query"))?
                    .get_ref()
                    .clone(),
                expect: {
                    let v = self.required(&s.expect, span.clone(), &k("expect"))?;
                    super::super::compare::parse_expect(v.get_ref())
                        .map_err(|e| self.err(v.span(), &k("expect"), e))?;
                    v.get_ref().clone()
                },
            },
            "command" => {
                let run = list(&s.run);
                if run.is_empty() {
                    return Err(self.err(
                        s.run.as_ref().map(|r| r.span()).unwrap_or(span.clone()),
                        &k("run"),
                        "missing: the program and its arguments, e.g. run = [\"pg_isready\", \"-h\", \"db\"]",
                    ));
                }
                StepKind::Command {
                    run: run.into_iter().map(|s| s.into_inner()).collect(),
                    expect_exit: match &s.expect_exit {
                        Some(v) => i32::try_from(*v.get_ref())
                            .ok()
                            .filter(|c| (0..=255).contains(c))
                            .ok_or_else(|| {
                                self.err(v.span(), &k("expect_exit"), "an exit code from 0 to 255")
                            })?,
                        None => 0,
                    },
                    stdout_contains: s.stdout_contains.as_ref().map(|v| v.get_ref().clone()),
                }
            }
            "approve" => StepKind::Approve {
                prompt: s
                    .prompt
                    .as_ref()
                    .map(|v| v.get_ref().clone())
                    .unwrap_or_else(|| format!("approve step {id}?")),
            },
            "assert" => {
                let rto = s.rto.as_ref().is_some_and(|v| *v.get_ref());
                let rpo = s.rpo.as_ref().is_some_and(|v| *v.get_ref());
                let that: Vec<String> = list(&s.that).into_iter().map(|v| v.into_inner()).collect();
                for (i, t) in list(&s.that).iter().enumerate() {
                    super::super::compare::parse_comparison(t.get_ref())
                        .map_err(|e| self.err(t.span(), &format!("{key}.that[{i}]"), e))?;
                }
                if !rto && !rpo && that.is_empty() {
                    return Err(self.err(
                        span.clone(),
                        key,
                        "an assert step needs rto = true, rpo = true or that = [\"…\"]",
                    ));
                }
                let rpo_regions = match &s.rpo_regions {
                    Some(_) => {
                        let names = self.regions(&s.rpo_regions, &k("rpo_regions"))?;
                        for n in &names {
                            if !book.regions.contains(n) {
                                return Err(self.err(
                                    s.rpo_regions.as_ref().map(|r| r.span()).unwrap_or_default(),
                                    &k("rpo_regions"),
                                    format!("region {n:?} is not one the runbook covers"),
                                ));
                            }
                        }
                        names
                    }
                    None => Vec::new(),
                };
                StepKind::Assert {
                    rto,
                    rpo,
                    rpo_regions,
                    that,
                }
            }
            "wait" => StepKind::Wait {
                duration: self.duration(
                    self.required(&s.duration, span.clone(), &k("duration"))?,
                    &k("duration"),
                )?,
            },
            "notify" => StepKind::Notify {
                message: self
                    .required(&s.message, span.clone(), &k("message"))?
                    .get_ref()
                    .clone(),
            },
            _ => unreachable!("kind checked above"),
        };
        let default_timeout = match &kind {
            StepKind::Wait { duration } => *duration + Duration::from_secs(60),
            _ => Duration::from_secs(3600),
        };
        let timeout = match &s.timeout {
            Some(v) => self.duration(v, &k("timeout"))?,
            None => default_timeout.min(book.max_duration),
        };
        let on_failure = match s
            .on_failure
            .as_ref()
            .map(|v| (v.get_ref().as_str(), v.span()))
        {
            None | Some(("abort", _)) => OnFailure::Abort,
            Some(("continue", _)) => OnFailure::Continue,
            Some((other, at)) => {
                return Err(self.err(
                    at,
                    &k("on_failure"),
                    format!("{other:?}: expected \"abort\" or \"continue\""),
                ))
            }
        };
        Ok(Step {
            id,
            kind,
            after,
            timeout,
            retries: s.retries.map(|r| *r.get_ref()).unwrap_or(0),
            on_failure,
        })
    }

    /// `rds_restore`: rds plans of the runbook (all by default), a snapshot identifier or
    /// `latest`, and an AWS region each plan copies its snapshots to.
    fn rds_restore(
        &self,
        s: &RawStep,
        book: &Runbook,
        k: &dyn Fn(&str) -> String,
    ) -> Result<StepKind> {
        let is_rds = |n: &String| {
            self.config
                .plan(n)
                .is_ok_and(|p| p.source.as_rds().is_some())
        };
        let at = |v: &TextList| v.as_ref().map(|p| p.span()).unwrap_or_default();
        let plans: Vec<String> = match &s.plans {
            None => book.plans.iter().filter(|n| is_rds(n)).cloned().collect(),
            Some(_) => {
                let (names, _) = self.plans(&s.plans)?;
                if let Some(n) = names.iter().find(|n| !book.plans.contains(n) || !is_rds(n)) {
                    return Err(self.err(
                        at(&s.plans),
                        &k("plans"),
                        format!("plan {n:?} is not an rds plan the runbook covers"),
                    ));
                }
                names
            }
        };
        let snapshot = match &s.snapshot {
            None => "latest".to_string(),
            Some(v)
                if v.get_ref() == "latest"
                    || crate::config::valid_identifier(v.get_ref())
                    || v.get_ref().len() > 63 =>
            {
                v.get_ref().clone()
            }
            Some(v) => {
                return Err(self.err(
                    v.span(),
                    &k("snapshot"),
                    format!(
                        "{:?}: expected \"latest\" or an RDS snapshot identifier",
                        v.get_ref()
                    ),
                ))
            }
        };
        if let Some(v) = &s.region {
            for n in &plans {
                let plan = self
                    .config
                    .plan(n)
                    .map_err(|e| self.err(v.span(), &k("region"), e.to_string()))?;
                if !plan.regions.contains(v.get_ref()) {
                    return Err(self.err(
                        v.span(),
                        &k("region"),
                        format!(
                            "plan {n}'s snapshots are in {}, not {:?}",
                            plan.regions.join(", "),
                            v.get_ref()
                        ),
                    ));
                }
            }
        }
        Ok(StepKind::RdsRestore {
            plans,
            snapshot,
            region: s.region.as_ref().map(|v| v.get_ref().clone()),
        })
    }

    fn restore(&self, s: &RawStep, book: &Runbook, k: &dyn Fn(&str) -> String) -> Result<StepKind> {
        let plans = match &s.plans {
            // rds plans have no repository snapshot: an rds_restore step restores them.
            None => book
                .plans
                .iter()
                .filter(|n| {
                    self.config
                        .plan(n)
                        .is_ok_and(|p| p.source.as_rds().is_none())
                })
                .cloned()
                .collect(),
            Some(_) => {
                let (names, _) = self.plans(&s.plans)?;
                for n in &names {
                    if !book.plans.contains(n) {
                        return Err(self.err(
                            s.plans.as_ref().map(|p| p.span()).unwrap_or_default(),
                            &k("plans"),
                            format!(
                                "plan {n:?} is not one the runbook covers ({})",
                                book.plans.join(", ")
                            ),
                        ));
                    }
                }
                names
            }
        };
        let snapshot = match s.snapshot.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
            None | Some(("latest", _)) => Selector::Latest,
            Some(("latest_verified", _)) => Selector::LatestVerified,
            Some((id, _)) if id.len() >= 4 && id.bytes().all(|b| b.is_ascii_hexdigit()) => Selector::Id(id.to_ascii_lowercase()),
            Some((other, at)) => {
                return Err(self.err(at, &k("snapshot"), format!("{other:?}: expected \"latest\", \"latest_verified\" or a snapshot id (4+ hex digits)")))
            }
        };
        let region = match &s.region {
            Some(v) => {
                if !book.regions.contains(v.get_ref()) {
                    return Err(self.err(
                        v.span(),
                        &k("region"),
                        format!(
                            "unknown region {:?} (the runbook covers: {})",
                            v.get_ref(),
                            book.regions.join(", ")
                        ),
                    ));
                }
                Some(v.get_ref().clone())
            }
            None => None,
        };
        let bare_host = match s.process.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
            None | Some(("in_process", _)) => false,
            Some(("bare_host", _)) => true,
            Some((other, at)) => {
                return Err(self.err(
                    at,
                    &k("process"),
                    format!("{other:?}: expected \"in_process\" or \"bare_host\""),
                ))
            }
        };
        let into = match &s.into {
            None => Target::Scratch,
            Some(v) if v.get_ref() == "scratch" => Target::Scratch,
            Some(v) => {
                let target = v.get_ref().clone();
                for name in &plans {
                    let plan = self
                        .config
                        .plan(name)
                        .map_err(|e| self.err(v.span(), &k("into"), e.to_string()))?;
                    if let Err(problem) =
                        named_target_fits(&target, &plan.source, book.deny_production_writes)
                    {
                        return Err(self.err(
                            v.span(),
                            &k("into"),
                            format!("plan {name}: {problem}"),
                        ));
                    }
                }
                Target::Named(target)
            }
        };
        Ok(StepKind::Restore {
            plans,
            snapshot,
            region,
            into,
            bare_host,
        })
    }
}
