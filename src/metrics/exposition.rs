//! Prometheus' text exposition format (version 0.0.4), as node_exporter's textfile collector
//! reads it: each metric family once, its `# HELP` and `# TYPE` lines before its samples, label
//! values escaped (backslash, double quote, newline), no timestamps (node_exporter refuses them
//! in text files). A family without samples is left out.

use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Gauge,
    Counter,
}

/// One sample: label pairs and a value.
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    pub fn new(value: f64) -> Sample {
        Sample {
            labels: Vec::new(),
            value,
        }
    }

    pub fn label(mut self, name: &'static str, value: impl Into<String>) -> Sample {
        self.labels.push((name, value.into()));
        self
    }
}

/// The text being written, and the families already in it (each may appear once).
#[derive(Default)]
pub struct Exposition {
    out: String,
    families: BTreeSet<&'static str>,
}

impl Exposition {
    /// Add a family. Counters are named `…_total`; a name used twice is a bug.
    pub fn family(&mut self, name: &'static str, kind: Type, help: &str, samples: Vec<Sample>) {
        assert!(
            self.families.insert(name),
            "metric family {name} written twice"
        );
        debug_assert_eq!(kind == Type::Counter, name.ends_with("_total"), "{name}");
        if samples.is_empty() {
            return;
        }
        let kind = match kind {
            Type::Gauge => "gauge",
            Type::Counter => "counter",
        };
        self.out.push_str(&format!(
            "# HELP {name} {}\n# TYPE {name} {kind}\n",
            escape_help(help)
        ));
        for sample in samples {
            self.out.push_str(name);
            if !sample.labels.is_empty() {
                let labels: Vec<String> = sample
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                self.out.push_str(&format!("{{{}}}", labels.join(",")));
            }
            self.out.push_str(&format!(" {}\n", value(sample.value)));
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// HELP text: `\` → `\\`, newline → `\n`.
fn escape_help(text: &str) -> String {
    text.replace('\\', r"\\").replace('\n', r"\n")
}

/// A value as Go's ParseFloat reads it: integers without a fraction, `NaN`, `+Inf`, `-Inf`.
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Rust prints the shortest text that reads back as the same f64.
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_as_the_format_says() {
        assert_eq!(escape_label("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }

    #[test]
    fn values_read_back_as_the_same_number() {
        assert_eq!(value(3.0), "3");
        assert_eq!(value(0.25), "0.25");
        assert_eq!(value(1.7e9 + 0.5), "1700000000.5");
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(f64::INFINITY), "+Inf");
    }

    #[test]
    fn a_family_without_samples_is_left_out() {
        let mut e = Exposition::default();
        e.family("x_total", Type::Counter, "nothing", Vec::new());
        e.family(
            "y",
            Type::Gauge,
            "one",
            vec![Sample::new(1.0).label("a", "b")],
        );
        assert_eq!(e.finish(), "# HELP y one\n# TYPE y gauge\ny{a=\"b\"} 1\n");
    }
}
