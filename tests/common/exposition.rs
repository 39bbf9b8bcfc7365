//! A small reader of Prometheus' text exposition format (0.0.4), to check kvmtune's metrics as a
//! scraper reads them, not as strings: every family has one `# HELP` and one `# TYPE` before
//! its samples, and its samples follow together; label values are unescaped (`\\`, `\"`,
//! `\n`); values read as numbers (`NaN`, `+Inf` too); no sample carries a timestamp; no series
//! appears twice. Any breach is an error naming the line.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub help: String,
    pub kind: String,
    pub samples: Vec<Series>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Metrics(pub BTreeMap<String, Family>);

impl Metrics {
    /// The value of the series of `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .get(name)?
            .samples
            .iter()
            .find(|s| s.labels == want)
            .map(|s| s.value)
    }

    pub fn family(&self, name: &str) -> Option<&Family> {
        self.0.get(name)
    }

    /// Every series of `name` whose labels include these.
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Series> {
        self.0.get(name).map_or(Vec::new(), |f| {
            f.samples
                .iter()
                .filter(|s| {
                    labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                })
                .collect()
        })
    }
}

pub fn parse(text: &str) -> Result<Metrics, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut seen_series = std::collections::BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let (keyword, rest) = rest.split_once(' ').ok_or_else(|| at("comment".into()))?;
            let (name, value) = rest.split_once(' ').ok_or_else(|| at("no text".into()))?;
            check_name(name).map_err(at)?;
            let family = families.entry(name.to_string()).or_insert_with(|| Family {
                help: String::new(),
                kind: String::new(),
                samples: Vec::new(),
            });
            if !family.samples.is_empty() {
                return Err(at(format!("{keyword} after samples of {name}")));
            }
            match keyword {
                "HELP" if family.help.is_empty() => family.help = unescape_help(value),
                "TYPE" if family.kind.is_empty() => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&value) {
                        return Err(at(format!("type {value}")));
                    }
                    family.kind = value.to_string();
                }
                _ => return Err(at(format!("{keyword} twice, or unknown"))),
            }
            current = Some(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = split_sample(line).map_err(at)?;
        if current.as_deref() != Some(name.as_str()) {
            return Err(at(format!("sample of {name} outside its family")));
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        let [value] = words.as_slice() else {
            return Err(at("a value and nothing else (no timestamp) expected".into()));
        };
        let value = parse_value(value).map_err(at)?;
        if !seen_series.insert((name.clone(), labels.clone())) {
            return Err(at("series twice".into()));
        }
        let family = families.get_mut(&name).expect("current family");
        if family.help.is_empty() || family.kind.is_empty() {
            return Err(at(format!("{name} has no HELP or TYPE before its samples")));
        }
        family.samples.push(Series { labels, value });
    }
    Ok(Metrics(families))
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = name.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if ok && !name.is_empty() {
        Ok(())
    } else {
        Err(format!("bad metric or label name {name:?}"))
    }
}

fn unescape_help(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

type Labels = BTreeMap<String, String>;

/// `name{a="x",b="y"} rest` → (name, labels, rest).
fn split_sample(line: &str) -> Result<(String, Labels, &str), String> {
    let end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..end];
    check_name(name)?;
    let mut labels = BTreeMap::new();
    let rest = &line[end..];
    let Some(body) = rest.strip_prefix('{') else {
        return Ok((name.to_string(), labels, rest));
    };
    let mut chars = body.char_indices().peekable();
    loop {
        let mut key = String::new();
        loop {
            match chars.next() {
                Some((_, '=')) => break,
                Some((i, '}')) if key.is_empty() && labels.is_empty() => {
                    return Ok((name.to_string(), labels, &body[i + 1..]));
                }
                Some((_, c)) => key.push(c),
                None => return Err("unterminated labels".into()),
            }
        }
        check_name(&key)?;
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {key}: no opening quote"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("label {key}: bad escape {other:?}")),
                },
                Some((_, '"')) => break,
                Some((_, '\n')) => return Err(format!("label {key}: raw newline")),
                Some((_, c)) => value.push(c),
                None => return Err(format!("label {key}: unterminated value")),
            }
        }
        if labels.insert(key.clone(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        match chars.next() {
            Some((_, ',')) => continue,
            Some((i, '}')) => return Ok((name.to_string(), labels, &body[i + 1..])),
            other => return Err(format!("after label {key}: {other:?}")),
        }
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => v
            .parse()
            .map_err(|_| format!("value {v:?} is not a number")),
    }
}
