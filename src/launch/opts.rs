//! The value syntaxes of QEMU's options: `key=value,key=value` (QemuOpts/keyval, with `,,` for a
//! literal comma and an implied first key, as in `-m 64`, `-numa node,…`, `-device vfio-pci,…`),
//! the JSON objects libvirt passes to `-object` and `-device`, and QEMU's sizes.

/// An option value as key/value pairs, in order; a key may repeat (`host-nodes=0,host-nodes=2`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opts {
    pairs: Vec<(String, String)>,
}

impl Opts {
    /// Parse `value`: a JSON object when it starts with `{`, else keyval. A first element
    /// without `=` is the value of `implied` (`-m 64` is `size=64`); a later one is a boolean
    /// written as its bare name (`prealloc` for `prealloc=on`).
    pub fn parse(value: &str, implied: Option<&str>) -> Result<Opts, String> {
        if value.trim_start().starts_with('{') {
            return json(value);
        }
        let mut pairs = Vec::new();
        for (index, element) in split_commas(value).into_iter().enumerate() {
            if element.is_empty() {
                continue;
            }
            match element.split_once('=') {
                Some((k, v)) => pairs.push((k.to_string(), v.to_string())),
                None => match implied {
                    Some(key) if index == 0 => pairs.push((key.to_string(), element)),
                    _ => pairs.push((element, "on".to_string())),
                },
            }
        }
        Ok(Opts { pairs })
    }

    /// The last value given for `key` (QEMU lets a later one win).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value given for `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean property: `on|yes|true|y` (QEMU's spellings) are true.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("on" | "yes" | "true" | "y"))
    }
}

/// Split on single commas; `,,` stands for one literal comma.
fn split_commas(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                out.last_mut().expect("never empty").push(',');
            } else {
                out.push(String::new());
            }
        } else {
            out.last_mut().expect("never empty").push(c);
        }
    }
    out
}

/// A JSON object's members as pairs: numbers and strings as written, booleans as on/off, arrays
/// of numbers (`"host-nodes":[0,1]`) as a comma-separated list.
fn json(value: &str) -> Result<Opts, String> {
    let parsed: serde_json::Value =
        serde_json::from_str(value).map_err(|e| format!("'{value}' is not valid JSON: {e}"))?;
    let serde_json::Value::Object(map) = parsed else {
        return Err(format!("'{value}' is not a JSON object"));
    };
    let scalar = |v: &serde_json::Value| -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(if *b { "on" } else { "off" }.to_string()),
            _ => None,
        }
    };
    let pairs = map
        .iter()
        .filter_map(|(k, v)| {
            let text = match v {
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(scalar)
                    .collect::<Vec<_>>()
                    .join(","),
                other => scalar(other)?,
            };
            Some((k.clone(), text))
        })
        .collect();
    Ok(Opts { pairs })
}

/// A QEMU size (`qemu_strtosz`): a number, possibly with a fraction (`1.5G`), and an optional
/// suffix `B K M G T P E` (either case, powers of 1024); without one, `default_unit` bytes.
pub fn size(text: &str, default_unit: u64) -> Result<u64, String> {
    let t = text.trim();
    let end = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(end);
    let unit: u64 = match suffix {
        "" => default_unit,
        "B" | "b" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        "T" | "t" => 1 << 40,
        "P" | "p" => 1 << 50,
        "E" | "e" => 1 << 60,
        _ => return Err(format!("'{t}' is not a size (unknown suffix '{suffix}')")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{t}' is not a size"));
    }
    let whole: u128 = whole.parse().map_err(|_| format!("'{t}' is not a size"))?;
    let mut bytes = whole * u128::from(unit);
    if !fraction.is_empty() {
        let digits = fraction.len().min(18) as u32;
        let frac: u128 = fraction[..digits as usize]
            .parse()
            .map_err(|_| format!("'{t}' is not a size"))?;
        bytes += frac * u128::from(unit) / 10u128.pow(digits);
    }
    u64::try_from(bytes).map_err(|_| format!("'{t}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyval_with_implied_key_bare_booleans_and_escaped_commas() {
        let o = Opts::parse(
            "memory-backend-file,id=m0,prealloc,mem-path=/a,,b",
            Some("qom-type"),
        )
        .unwrap();
        assert_eq!(o.get("qom-type"), Some("memory-backend-file"));
        assert_eq!(o.get("id"), Some("m0"));
        assert!(o.flag("prealloc"));
        assert_eq!(o.get("mem-path"), Some("/a,b"));
    }

    #[test]
    fn repeated_keys_are_all_kept_and_the_last_wins() {
        let o = Opts::parse(
            "host-nodes=0,host-nodes=2,policy=bind,policy=preferred",
            None,
        )
        .unwrap();
        assert_eq!(o.all("host-nodes").collect::<Vec<_>>(), ["0", "2"]);
        assert_eq!(o.get("policy"), Some("preferred"));
    }

    #[test]
    fn json_objects_as_libvirt_writes_them() {
        let o = Opts::parse(
            r#"{"qom-type":"memory-backend-file","id":"pc.ram","size":134217728,"host-nodes":[0,1],"prealloc":true}"#,
            Some("qom-type"),
        )
        .unwrap();
        assert_eq!(o.get("qom-type"), Some("memory-backend-file"));
        assert_eq!(o.get("size"), Some("134217728"));
        assert_eq!(o.get("host-nodes"), Some("0,1"));
        assert!(o.flag("prealloc"));
        assert!(Opts::parse("{not json", None).is_err());
    }

    #[test]
    fn sizes_follow_qemu() {
        for (text, default, want) in [
            ("64", 1 << 20, 64 << 20),
            ("64M", 1, 64 << 20),
            ("2G", 1, 2 << 30),
            ("1.5G", 1, 3 << 29),
            ("134217728", 1, 134217728),
            ("4k", 1, 4096),
        ] {
            assert_eq!(size(text, default).unwrap(), want, "{text}");
        }
        for bad in ["", "G", "12X", "1.2.3", "-1"] {
            assert!(size(bad, 1).is_err(), "{bad}");
        }
    }
}
