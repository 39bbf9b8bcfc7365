//! What `kvmtune check` reports: findings with a severity, a rule id, one line of why, and the
//! XML (or, for host settings, the commands) that fixes them.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The VM will not start, or will not get what it asks (exit 1 from `check`).
    Error,
    /// A design that costs performance or isolation.
    Warning,
    /// Advice; a choice some make on purpose.
    Info,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// A stable id (`pins-shared`), listed in kvmtune(8).
    pub rule: &'static str,
    /// One line.
    pub why: String,
    /// The XML that fixes it (possibly several lines), or the host commands for host settings.
    pub fix: String,
}

impl Finding {
    pub fn new(severity: Severity, rule: &'static str, why: String, fix: String) -> Finding {
        Finding {
            severity,
            rule,
            why,
            fix,
        }
    }
}

/// A VM's findings, most severe first (rule order within a severity).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub vm: String,
    /// One line about the host the VM was judged against.
    pub host: String,
    pub findings: Vec<Finding>,
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    /// What could not be looked at (e.g. other VMs, when virsh failed).
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(vm: &str, host: String, mut findings: Vec<Finding>, notes: Vec<String>) -> Report {
        findings.sort_by_key(|f| f.severity);
        let count = |s| findings.iter().filter(|f| f.severity == s).count();
        Report {
            vm: vm.to_string(),
            host,
            errors: count(Severity::Error),
            warnings: count(Severity::Warning),
            infos: count(Severity::Info),
            findings,
            notes,
        }
    }

    pub fn has_errors(&self) -> bool {
        self.errors > 0
    }

    /// The text form: one block per finding, the fix indented under it (a fix already shown
    /// for an earlier finding is named, not repeated: placement fixes are often the same).
    pub fn render(&self) -> String {
        let mut out = format!("VM '{}' on {}\n", self.vm, self.host);
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        let mut shown: Vec<(&str, &str)> = Vec::new();
        for f in &self.findings {
            out.push_str(&format!(
                "{:<8} {:<24} {}\n",
                f.severity.name(),
                f.rule,
                f.why
            ));
            if let Some((_, rule)) = shown.iter().find(|(fix, _)| *fix == f.fix) {
                out.push_str(&format!("{:9}fix: as for {rule} above\n", ""));
                continue;
            }
            shown.push((&f.fix, f.rule));
            for (i, line) in f.fix.lines().enumerate() {
                let lead = if i == 0 { "fix: " } else { "     " };
                out.push_str(&format!("{:9}{lead}{line}\n", ""));
            }
        }
        if self.findings.is_empty() {
            out.push_str("no findings\n");
        }
        out.push_str(&format!(
            "{} error(s), {} warning(s), {} info\n",
            self.errors, self.warnings, self.infos
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_orders_by_severity_and_counts() {
        let r = Report::new(
            "vm",
            "host".into(),
            vec![
                Finding::new(Severity::Info, "b", "i".into(), "<x/>\n<y/>".into()),
                Finding::new(Severity::Error, "a", "e".into(), "<x/>\n<y/>".into()),
            ],
            vec![],
        );
        assert_eq!(r.findings[0].rule, "a");
        assert_eq!((r.errors, r.warnings, r.infos), (1, 0, 1));
        assert!(r.has_errors());
        let text = r.render();
        assert!(text.contains("error    a"), "{text}");
        assert!(text.contains("fix: <x/>\n              <y/>"), "{text}");
        assert!(text.contains("info     b"), "{text}");
        assert!(text.contains("fix: as for a above\n"), "{text}");
        assert!(
            text.ends_with("1 error(s), 0 warning(s), 1 info\n"),
            "{text}"
        );
    }
}
