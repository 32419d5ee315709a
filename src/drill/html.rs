//! The drill report as one self-contained HTML page: inline CSS, an inline SVG timeline of
//! every step (T0 and the usable moment marked), no scripts and no external assets, so it
//! can be attached to an audit ticket and opened anywhere. Every text is escaped.

use std::fmt::Write;

use super::report::{dur, iso, Report};

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

fn color(result: &str) -> &'static str {
    match result {
        "passed" => "#2e7d32",
        "failed" | "timed_out" => "#c62828",
        "cancelled" | "interrupted" => "#ef6c00",
        _ => "#9e9e9e",
    }
}

/// The SVG timeline: one bar per step that ran, on a shared time axis.
pub fn timeline(r: &Report) -> String {
    let ran: Vec<_> = r.steps.iter().filter(|s| s.started_ms.is_some()).collect();
    let (start, end) = (r.started_ms, r.ended_ms.max(r.started_ms + 1));
    let span = (end - start) as f64;
    let (left, width, row) = (180.0, 640.0, 24.0);
    let height = 40.0 + row * ran.len().max(1) as f64;
    let x = |t: i64| left + width * ((t - start) as f64 / span).clamp(0.0, 1.0);
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{w}" height="{height}" viewBox="0 0 {w} {height}" role="img" aria-label="drill timeline">"#,
        w = left + width + 20.0
    );
    let _ = write!(
        o,
        r##"<line x1="{left}" y1="20" x2="{}" y2="20" stroke="#555"/>"##,
        left + width
    );
    let _ = write!(
        o,
        r#"<text x="{left}" y="14" font-size="11">{}</text>"#,
        escape(&iso(start))
    );
    let _ = write!(
        o,
        r#"<text x="{}" y="14" font-size="11" text-anchor="end">+{}</text>"#,
        left + width,
        escape(&dur(end - start))
    );
    for (i, s) in ran.iter().enumerate() {
        let y = 30.0 + row * i as f64;
        let (a, b) = (s.started_ms.unwrap_or(start), s.ended_ms.unwrap_or(end));
        let (x1, x2) = (x(a), x(b).max(x(a) + 2.0));
        let _ = write!(
            o,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="end">{}{}</text>"#,
            left - 6.0,
            y + 13.0,
            escape(&s.id),
            if s.phase == "cleanup" {
                " (cleanup)"
            } else {
                ""
            }
        );
        let _ = write!(
            o,
            r#"<rect class="step" x="{x1:.1}" y="{y}" width="{:.1}" height="16" fill="{}"><title>{} {} {}</title></rect>"#,
            x2 - x1,
            color(&s.result),
            escape(&s.id),
            escape(&s.result),
            escape(&dur(s.duration_ms.unwrap_or(0)))
        );
    }
    for (label, t, c) in [
        ("T0", r.t0_ms, "#1565c0"),
        ("usable", r.usable_ms, "#6a1b9a"),
    ] {
        if let Some(t) = t {
            let _ = write!(
                o,
                r#"<line x1="{0:.1}" y1="20" x2="{0:.1}" y2="{1}" stroke="{c}" stroke-dasharray="4 3"/><text x="{0:.1}" y="{2}" font-size="11" fill="{c}">{label}</text>"#,
                x(t),
                height - 4.0,
                height - 6.0
            );
        }
    }
    o.push_str("</svg>");
    o
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let title = format!("DR drill {} — {}", r.id, r.result.to_uppercase());
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:sans-serif;margin:2em;max-width:1000px;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top;font-size:13px}}\
         th{{background:#f3f3f3}}.passed,.met{{color:#2e7d32;font-weight:bold}}.failed,.MISSED,.interrupted,.timed_out{{color:#c62828;font-weight:bold}}\
         code{{font-size:12px}}</style></head><body>\n",
        escape(&title)
    );
    let _ = writeln!(
        o,
        "<h1>DR drill <code>{}</code> <span class=\"{}\">{}</span></h1>",
        escape(&r.id),
        escape(&r.result),
        escape(&r.result.to_uppercase())
    );
    let rb = &r.runbook;
    o.push_str("<h2>Evidence</h2><table>");
    let git = match (&rb.git_commit, rb.git_dirty) {
        (Some(c), Some(true)) => format!("{c} (file modified since)"),
        (Some(c), _) => c.clone(),
        (None, _) => "not in a git work tree".into(),
    };
    for (k, v) in [
        (
            "Runbook",
            format!("{} v{} — {}", rb.id, rb.version, rb.path),
        ),
        ("Runbook SHA-256", rb.sha256.clone()),
        ("Git commit", git),
        ("Scenario", rb.scenario.clone()),
        ("Owner", rb.owner.clone()),
        ("Controls", rb.controls.join(", ")),
        ("Frequency", rb.frequency.clone()),
        ("lifeboat version", r.lifeboat_version.clone()),
        ("Host / operator", format!("{} / {}", r.host, r.operator)),
        (
            "Plans / regions",
            format!("{} / {}", r.plans.join(", "), r.regions.join(", ")),
        ),
        ("Simulated down", r.simulated_down.join(", ")),
        (
            "Started / ended",
            format!("{} / {}", iso(r.started_ms), iso(r.ended_ms)),
        ),
        (
            "T0 / usable",
            format!(
                "{} / {}",
                r.t0_ms.map(iso).unwrap_or_default(),
                r.usable_ms.map(iso).unwrap_or_default()
            ),
        ),
        ("Next due", r.next_due_ms.map(iso).unwrap_or_default()),
    ] {
        let _ = write!(o, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(&v));
    }
    o.push_str("</table>\n<h2>Timeline</h2>\n");
    o.push_str(&timeline(r));
    let m = |b: Option<bool>| match b {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    };
    let od = |v: Option<i64>| v.map(dur).unwrap_or_else(|| "—".into());
    o.push_str("\n<h2>Recovery time (RTO)</h2><table><tr><th>plan</th><th>achieved</th><th>target</th><th>margin</th><th></th></tr>");
    for p in &r.rto.plans {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{4}\">{4}</td></tr>",
            escape(&p.plan),
            od(p.achieved_ms),
            dur(p.target_ms),
            od(p.margin_ms),
            m(p.met)
        );
    }
    let _ = write!(
        o,
        "<tr><th>total</th><td>{}</td><td>{}</td><td>{}</td><td class=\"{3}\">{3}</td></tr></table>",
        od(r.rto.achieved_ms),
        dur(r.rto.target_ms),
        od(r.rto.margin_ms),
        m(r.rto.met)
    );
    o.push_str("\n<h2>Data loss (RPO)</h2><table><tr><th>plan</th><th>region</th><th>snapshot</th><th>achieved</th><th>target</th><th></th></tr>");
    for p in &r.rpo {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>(restored)</td><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"{4}\">{4}</td></tr>",
            escape(&p.plan),
            escape(p.restored_snapshot.as_deref().unwrap_or("—")),
            od(p.achieved_s.map(|s| s * 1000)),
            dur(p.target_s * 1000),
            m(p.met)
        );
        for g in &p.regions {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"{5}\">{5}{6}</td></tr>",
                escape(&p.plan),
                escape(&g.region),
                escape(g.snapshot.as_deref().unwrap_or("—")),
                od(g.achieved_s.map(|s| s * 1000)),
                dur(p.target_s * 1000),
                m(Some(g.met)),
                g.note.as_deref().map(|n| format!(" ({})", escape(n))).unwrap_or_default()
            );
        }
    }
    o.push_str("</table>\n");
    if !r.throughput.is_empty() {
        o.push_str("<h2>Restore throughput</h2><table><tr><th>plan</th><th>bytes</th><th>restore</th><th>MB/s</th><th>size now</th><th>projected RTO</th></tr>");
        for t in &r.throughput {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
                escape(&t.plan),
                t.bytes,
                dur(t.restore_ms),
                t.bytes_per_second / 1e6,
                t.current_bytes,
                dur(t.projected_rto_ms)
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str(
        "<h2>Approvals</h2><table><tr><th>step</th><th>approver</th><th>at</th><th>how</th></tr>",
    );
    for a in &r.approvals {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&a.step),
            escape(&a.approver),
            iso(a.at_ms),
            escape(&a.how)
        );
    }
    o.push_str("</table>\n<h2>Steps</h2><table><tr><th>step</th><th>kind</th><th>start</th><th>duration</th><th>attempts</th><th>result</th><th>outputs</th></tr>");
    for s in &r.steps {
        let outputs: Vec<String> = s
            .outputs
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .chain(s.error.iter().map(|e| format!("error: {e}")))
            .collect();
        let _ = write!(
            o,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            escape(&s.id),
            if s.phase == "cleanup" { " (cleanup)" } else { "" },
            escape(&s.kind),
            s.started_ms.map(iso).unwrap_or_default(),
            od(s.duration_ms),
            s.attempts,
            escape(&s.result),
            escape(&s.result),
            outputs.iter().map(|l| escape(l)).collect::<Vec<_>>().join("<br>")
        );
    }
    o.push_str("</table>\n<h2>Deviations</h2><ul>");
    if r.deviations.is_empty() {
        o.push_str("<li>none</li>");
    }
    for d in &r.deviations {
        let _ = write!(o, "<li>{}</li>", escape(d));
    }
    o.push_str("</ul>\n<h2>Cleanup ledger</h2><table><tr><th>created</th><th>by</th><th>at</th><th>removed</th><th>error</th></tr>");
    for c in &r.cleanup {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            escape(&c.what),
            escape(&c.created_by),
            iso(c.created_ms),
            if c.removed { "passed" } else { "failed" },
            if c.removed { "yes" } else { "NO" },
            escape(c.error.as_deref().unwrap_or(""))
        );
    }
    o.push_str("</table>\n</body></html>\n");
    o
}
