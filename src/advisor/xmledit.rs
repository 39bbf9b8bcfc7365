//! Rewrite attribute values in an XML document in place: every other byte stays as it was
//! (quoting, whitespace, comments, attribute order, namespaces). The migration remap needs
//! exactly this — libvirt compares the rewritten domain with the original for ABI stability,
//! and an operator diffing the two should see only the pins that moved.

use std::borrow::Cow;

use quick_xml::events::Event;
use quick_xml::Reader;

/// An element's attributes: (name, unescaped value), in document order.
pub type Attrs = [(String, String)];

/// Set `attr` of every element at `path` (element names from the root, e.g.
/// `["domain", "cputune", "vcpupin"]`) for which `select` returns a new value.
pub struct Edit<'a> {
    pub path: &'a [&'a str],
    pub attr: &'a str,
    /// Given the element's attributes (name, unescaped value), the new value, or `None` to
    /// leave this element alone.
    pub select: &'a dyn Fn(&Attrs) -> Option<String>,
}

/// Apply `edits`; an element without the attribute is left alone (nothing is added).
pub fn apply(text: &str, edits: &[Edit]) -> Result<String, String> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    let base = text.as_ptr() as usize;
    let mut stack: Vec<String> = Vec::new();
    // (start, end, new value) of attribute values to replace.
    let mut splices: Vec<(usize, usize, String)> = Vec::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("XML error at byte {}: {e}", reader.buffer_position()))?;
        let (start, empty) = match event {
            Event::Start(s) => (s, false),
            Event::Empty(s) => (s, true),
            Event::End(_) => {
                stack.pop();
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
        stack.push(name);
        let here: Vec<&str> = stack.iter().map(String::as_str).collect();
        let matching: Vec<&Edit> = edits.iter().filter(|e| e.path == here.as_slice()).collect();
        if !matching.is_empty() {
            let mut attrs = Vec::new();
            let mut spans = Vec::new();
            for a in start.attributes() {
                let a = a.map_err(|e| format!("XML attribute in <{}>: {e}", here.join("/")))?;
                let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
                let raw = match &a.value {
                    Cow::Borrowed(v) => *v,
                    Cow::Owned(_) => return Err("XML attribute value not in the document".into()),
                };
                let at = raw.as_ptr() as usize - base;
                let value = a
                    .unescape_value()
                    .map_err(|e| format!("XML attribute {key}: {e}"))?
                    .into_owned();
                spans.push((key.clone(), at, at + raw.len()));
                attrs.push((key, value));
            }
            for edit in matching {
                let Some((_, from, to)) = spans.iter().find(|(k, _, _)| k == edit.attr) else {
                    continue;
                };
                if let Some(new) = (edit.select)(&attrs) {
                    splices.push((*from, *to, escape(&new)));
                }
            }
        }
        if empty {
            stack.pop();
        }
    }
    splices.sort_by_key(|s| s.0);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (from, to, value) in splices {
        out.push_str(&text[at..from]);
        out.push_str(&value);
        at = to;
    }
    out.push_str(&text[at..]);
    Ok(out)
}

fn escape(value: &str) -> String {
    quick_xml::escape::escape(value).into_owned()
}

/// The value of attribute `name` among `attrs`.
pub fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_selected_values_change_byte_for_byte() {
        let text = "<?xml version='1.0'?>\n<!-- c -->\n<domain  type='kvm'>\n  <cputune>\n    <vcpupin vcpu='0'   cpuset=\"1\"/>\n    <vcpupin cpuset='2' vcpu='1'/>\n    <emulatorpin cpuset='0'></emulatorpin>\n  </cputune>\n  <metadata><x:vcpupin xmlns:x='u' vcpu='0' cpuset='9'/></metadata>\n</domain>\n";
        let pin = |attrs: &[(String, String)]| match attr(attrs, "vcpu") {
            Some("0") => Some("5".to_string()),
            Some("1") => Some("6,7".to_string()),
            _ => None,
        };
        let emu = |_: &[(String, String)]| Some("0-1".to_string());
        let out = apply(
            text,
            &[
                Edit {
                    path: &["domain", "cputune", "vcpupin"],
                    attr: "cpuset",
                    select: &pin,
                },
                Edit {
                    path: &["domain", "cputune", "emulatorpin"],
                    attr: "cpuset",
                    select: &emu,
                },
                Edit {
                    path: &["domain", "vcpu"],
                    attr: "cpuset",
                    select: &emu,
                },
            ],
        )
        .unwrap();
        let expected = text
            .replace("cpuset=\"1\"", "cpuset=\"5\"")
            .replace("<vcpupin cpuset='2'", "<vcpupin cpuset='6,7'")
            .replace("<emulatorpin cpuset='0'>", "<emulatorpin cpuset='0-1'>");
        assert_eq!(out, expected);
    }

    #[test]
    fn broken_xml_is_an_error() {
        let keep = |_: &[(String, String)]| None;
        let e = [Edit {
            path: &["a"],
            attr: "b",
            select: &keep,
        }];
        assert!(apply("<a b='1'><c></a>", &e).is_err());
    }
}
