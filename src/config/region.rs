//! Resolving `[[regions]]`: names, kinds and their locations, the preferred region.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;

use super::error::Locator;
use super::raw::RawRegion;
use super::resolve::{Resolver, Result};
use super::{ConfigError, LockMode, ObjectLock, RegionConfig, RegionKind};

/// The forms `--region` takes, for error messages.
const REGION_ARG_FORMS: &str = "NAME=local:/PATH or NAME=s3://BUCKET[/PREFIX][?region=AWS_REGION&endpoint=URL&timeout=DURATION&allow_insecure=true]";

/// A region given on the command line (`--region NAME=URL`), checked by the same rules as a
/// `[[regions]]` table: `NAME=local:/PATH` or `NAME=s3://BUCKET/PREFIX`, with optional
/// `?region=…&endpoint=…&timeout=…` for S3 (the AWS region defaults to NAME). Relative local
/// paths are relative to the current directory. The error names the argument.
pub fn parse_region_arg(arg: &str) -> std::result::Result<RegionConfig, ConfigError> {
    let invalid = |problem: String| ConfigError::Invalid {
        file: std::path::PathBuf::from(format!("--region {arg}")),
        at: None,
        key: String::new(),
        problem,
    };
    let Some((name, url)) = arg.split_once('=') else {
        return Err(invalid(format!("expected {REGION_ARG_FORMS}")));
    };
    let text = |value: &str| Some(Spanned::new(0..0, value.to_string()));
    let mut raw = RawRegion {
        name: text(name),
        ..RawRegion::default()
    };
    if let Some(path) = url.strip_prefix("local:") {
        raw.kind = text("local");
        raw.path = text(path.strip_prefix("//").unwrap_or(path));
    } else if let Some(rest) = url.strip_prefix("s3://") {
        raw.kind = text("s3");
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        raw.bucket = text(bucket);
        if !prefix.is_empty() {
            raw.prefix = text(prefix);
        }
        raw.region = text(name);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("region", v)) => raw.region = text(v),
                Some(("endpoint", v)) => raw.endpoint = text(v),
                Some(("timeout", v)) => raw.timeout = text(v),
                Some(("allow_insecure", v)) => {
                    raw.allow_insecure = Some(Spanned::new(0..0, v == "true"))
                }
                _ => {
                    return Err(invalid(format!(
                        "unknown parameter {pair:?} (expected {REGION_ARG_FORMS})"
                    )))
                }
            }
        }
    } else {
        return Err(invalid(format!(
            "unsupported location {url:?} (expected {REGION_ARG_FORMS})"
        )));
    }
    let origin = std::path::PathBuf::from(format!("--region {arg}"));
    let resolver = Resolver {
        loc: Locator {
            text: "",
            file: &origin,
        },
        dir: std::env::current_dir().unwrap_or_default(),
    };
    let list = Spanned::new(0..0, vec![Spanned::new(0..0, raw)]);
    let mut regions = resolver.regions(Some(list)).map_err(|e| match e {
        ConfigError::Invalid { key, problem, .. } => invalid(format!(
            "{}: {problem}",
            key.trim_start_matches("regions[0].")
        )),
        other => other,
    })?;
    let mut region = regions.remove(0);
    region.preferred = false;
    Ok(region)
}

impl Resolver<'_> {
    pub(super) fn regions(
        &self,
        raw: Option<Spanned<Vec<Spanned<RawRegion>>>>,
    ) -> Result<Vec<RegionConfig>> {
        const NONE: &str = "no regions: add at least one [[regions]] table with `name`, `kind` and its location (see docs/config.md)";
        let raw = match raw {
            None => return Err(self.err(0..0, "regions", NONE)),
            Some(list) if list.get_ref().is_empty() => {
                return Err(self.err(list.span(), "regions", NONE))
            }
            Some(list) => list,
        };
        let mut regions: Vec<RegionConfig> = Vec::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let mut preferred: Option<usize> = None;
        for (i, raw) in raw.into_inner().into_iter().enumerate() {
            let key = format!("regions[{i}]");
            let span = raw.span();
            let raw = raw.into_inner();
            let name_value = self.required(
                raw.name.as_ref(),
                span.clone(),
                &key,
                "name",
                "every region needs a name, e.g. name = \"us-west-2\"",
            )?;
            let name = self.unique_name(name_value, &key, "region", &mut first_line)?;
            let is_preferred = raw.preferred.as_ref().is_some_and(|p| *p.get_ref());
            if is_preferred {
                if let (Some(earlier), Some(flag)) = (preferred, &raw.preferred) {
                    return Err(self.err(
                        flag.span(),
                        &format!("{key}.preferred"),
                        format!("only one region can be preferred, and regions[{earlier}] ({:?}) already is", regions[earlier].name),
                    ));
                }
                preferred = Some(i);
            }
            let kind = self.region_kind(&raw, span, &key)?;
            regions.push(RegionConfig {
                name,
                kind,
                preferred: is_preferred,
            });
        }
        if preferred.is_none() {
            regions[0].preferred = true;
        }
        Ok(regions)
    }

    fn region_kind(&self, raw: &RawRegion, span: Range<usize>, key: &str) -> Result<RegionKind> {
        let kind = self.required(
            raw.kind.as_ref(),
            span.clone(),
            key,
            "kind",
            "set kind = \"local\" or kind = \"s3\"",
        )?;
        let s3_only = [
            ("bucket", raw.bucket.as_ref().map(Spanned::span)),
            ("region", raw.region.as_ref().map(Spanned::span)),
            ("prefix", raw.prefix.as_ref().map(Spanned::span)),
            ("endpoint", raw.endpoint.as_ref().map(Spanned::span)),
            (
                "allow_insecure",
                raw.allow_insecure.as_ref().map(Spanned::span),
            ),
            (
                "object_lock_days",
                raw.object_lock_days.as_ref().map(Spanned::span),
            ),
            (
                "object_lock_mode",
                raw.object_lock_mode.as_ref().map(Spanned::span),
            ),
            ("timeout", raw.timeout.as_ref().map(Spanned::span)),
        ];
        let local_only = [("path", raw.path.as_ref().map(Spanned::span))];
        let misplaced = |keys: &[(&str, Option<Range<usize>>)], this: &str, other: &str| {
            match keys.iter().find_map(|(name, span)| Some((*name, span.clone()?))) {
                Some((name, span)) => Err(self.err(
                    span,
                    &format!("{key}.{name}"),
                    format!("`{name}` is for kind = \"{other}\" regions, and this one has kind = \"{this}\""),
                )),
                None => Ok(()),
            }
        };
        match kind.get_ref().as_str() {
            "local" => {
                misplaced(&s3_only, "local", "s3")?;
                let path = self.required(
                    raw.path.as_ref(),
                    span,
                    key,
                    "path",
                    "a local region needs path = \"DIR\"",
                )?;
                Ok(RegionKind::Local {
                    path: self.path(path, &format!("{key}.path"))?,
                })
            }
            "s3" => {
                misplaced(&local_only, "s3", "local")?;
                self.s3(raw, span, key)
            }
            other => Err(self.err(
                kind.span(),
                &format!("{key}.kind"),
                format!("unknown region kind {other:?} (supported kinds: local, s3)"),
            )),
        }
    }

    fn s3(&self, raw: &RawRegion, span: Range<usize>, key: &str) -> Result<RegionKind> {
        let bucket = self.required(
            raw.bucket.as_ref(),
            span.clone(),
            key,
            "bucket",
            "an s3 region needs bucket = \"NAME\"",
        )?;
        let region = self.required(
            raw.region.as_ref(),
            span,
            key,
            "region",
            "an s3 region needs region = \"us-west-2\" (its AWS region)",
        )?;
        let name = bucket.get_ref();
        let bucket_ok = (3..=63).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !bucket_ok {
            return Err(self.err(
                bucket.span(),
                &format!("{key}.bucket"),
                format!("invalid bucket name {name:?}: S3 bucket names are 3 to 63 lowercase letters, digits, `.` and `-`, starting and ending with a letter or digit"),
            ));
        }
        let endpoint = match &raw.endpoint {
            Some(endpoint) => {
                let url = endpoint.get_ref();
                let rest = url
                    .strip_prefix("https://")
                    .or_else(|| url.strip_prefix("http://"));
                if rest.is_none_or(|rest| rest.is_empty() || rest.contains(char::is_whitespace)) {
                    return Err(self.err(
                        endpoint.span(),
                        &format!("{key}.endpoint"),
                        format!("invalid endpoint {url:?} (expected a URL such as \"http://127.0.0.1:9000\")"),
                    ));
                }
                let allow = raw.allow_insecure.as_ref().is_some_and(|a| *a.get_ref());
                if let Some(problem) = super::transport::plain_http_refusal(url, allow, "endpoint")
                {
                    return Err(self.err(endpoint.span(), &format!("{key}.endpoint"), problem));
                }
                Some(url.clone())
            }
            None => None,
        };
        let region_name = region.get_ref();
        let region_ok = if endpoint.is_some() {
            !region_name.is_empty() && !region_name.contains(char::is_whitespace)
        } else {
            is_aws_region(region_name)
        };
        if !region_ok {
            return Err(self.err(
                region.span(),
                &format!("{key}.region"),
                format!("invalid AWS region {region_name:?} (expected e.g. \"us-west-2\"; for an S3-compatible server set `endpoint` and use the region name it expects)"),
            ));
        }
        let prefix = match &raw.prefix {
            Some(prefix) => {
                let text = prefix.get_ref().trim_end_matches('/');
                if text.starts_with('/') || text.contains("//") {
                    return Err(self.err(
                        prefix.span(),
                        &format!("{key}.prefix"),
                        format!("invalid prefix {:?}: no leading `/` and no empty segments (e.g. \"lifeboat/prod\")", prefix.get_ref()),
                    ));
                }
                text.to_string()
            }
            None => String::new(),
        };
        let object_lock =
            match (&raw.object_lock_days, &raw.object_lock_mode) {
                (None, None) => None,
                (None, Some(mode)) => return Err(self.err(
                    mode.span(),
                    &format!("{key}.object_lock_mode"),
                    "object_lock_mode needs object_lock_days (how long each object stays locked)",
                )),
                (Some(days), mode) => {
                    if *days.get_ref() == 0 {
                        return Err(self.err(
                            days.span(),
                            &format!("{key}.object_lock_days"),
                            "must be at least 1 (omit it to upload without Object Lock retention)",
                        ));
                    }
                    let mode = match mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
                        None | Some(("governance", _)) => LockMode::Governance,
                        Some(("compliance", _)) => LockMode::Compliance,
                        Some((other, span)) => {
                            return Err(self.err(
                                span,
                                &format!("{key}.object_lock_mode"),
                                format!(
                            "unknown mode {other:?} (expected \"governance\" or \"compliance\")"
                        ),
                            ))
                        }
                    };
                    Some(ObjectLock {
                        days: *days.get_ref(),
                        mode,
                    })
                }
            };
        let timeout = self.duration(
            raw.timeout.as_ref(),
            &format!("{key}.timeout"),
            super::DEFAULT_S3_TIMEOUT,
        )?;
        Ok(RegionKind::S3 {
            bucket: name.clone(),
            region: region_name.clone(),
            prefix,
            endpoint,
            object_lock,
            timeout,
        })
    }
}

/// `us-west-2`, `us-gov-west-1`, `ap-southeast-3`: two letters, words, a number.
fn is_aws_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return false;
    };
    first.len() == 2
        && first.chars().all(|c| c.is_ascii_lowercase())
        && !middle.is_empty()
        && middle
            .iter()
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
        && !last.is_empty()
        && last.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_arguments_parse_like_region_tables() {
        let r = parse_region_arg("us-east-2=s3://acme-backups/lifeboat/prod").unwrap();
        assert_eq!(r.name, "us-east-2");
        match r.kind {
            RegionKind::S3 {
                bucket,
                region,
                prefix,
                endpoint,
                ..
            } => {
                assert_eq!(
                    (bucket.as_str(), region.as_str(), prefix.as_str()),
                    ("acme-backups", "us-east-2", "lifeboat/prod")
                );
                assert_eq!(endpoint, None);
            }
            other => panic!("{other:?}"),
        }
        let r = parse_region_arg(
            "west=s3://b-1?endpoint=http://127.0.0.1:9000&region=us-west-2&timeout=5s",
        )
        .unwrap();
        match r.kind {
            RegionKind::S3 {
                endpoint, timeout, ..
            } => {
                assert_eq!(endpoint.as_deref(), Some("http://127.0.0.1:9000"));
                assert_eq!(timeout, std::time::Duration::from_secs(5));
            }
            other => panic!("{other:?}"),
        }
        let r = parse_region_arg("dr=local:/srv/dr").unwrap();
        assert_eq!(
            r.kind,
            RegionKind::Local {
                path: "/srv/dr".into()
            }
        );
        let err = parse_region_arg("dr=s3://Bad_Bucket")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--region dr=s3://Bad_Bucket: bucket: invalid bucket name"),
            "{err}"
        );
        let err = parse_region_arg("s3://b").unwrap_err().to_string();
        assert!(err.contains("NAME=local:/PATH"), "{err}");
        let err = parse_region_arg("dr=s3://bucket?colour=red")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown parameter \"colour=red\""), "{err}");
        let err = parse_region_arg("backup=s3://bucket")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid AWS region \"backup\""), "{err}");
    }

    #[test]
    fn aws_region_shapes() {
        for ok in [
            "us-west-2",
            "us-east-2",
            "us-gov-west-1",
            "ap-southeast-3",
            "eu-central-1",
        ] {
            assert!(is_aws_region(ok), "{ok}");
        }
        for bad in [
            "",
            "us-west",
            "US-WEST-2",
            "uswest2",
            "us--2",
            "west-2",
            "us-west-2a",
        ] {
            assert!(!is_aws_region(bad), "{bad}");
        }
    }
}
