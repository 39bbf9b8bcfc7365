//! A small, bounded element tree over quick-xml's namespace-aware reader.
//!
//! Libvirt's domain XML is a document of a few kilobytes, but it reaches us from whoever may
//! define a domain, so the reader refuses what a domain never needs: a DOCTYPE (and with it any
//! entity definition), references to unknown entities, deep nesting and huge documents.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// Largest XML accepted. Real domain XML is 2-100 KiB; libvirt itself caps documents at 10 MiB.
pub const MAX_XML_BYTES: usize = 4 << 20;
const MAX_DEPTH: usize = 64;
const MAX_ELEMENTS: usize = 200_000;

#[derive(Debug, Clone, Default)]
pub struct Element {
    /// Namespace URI, `None` for libvirt's own (un-namespaced) elements.
    pub ns: Option<String>,
    /// Local name, without prefix.
    pub name: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<Element>,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct Attr {
    pub ns: Option<String>,
    pub name: String,
    pub value: String,
}

impl Element {
    /// The first un-namespaced child called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.ns.is_none() && c.name == name)
    }

    /// Every un-namespaced child called `name`, in document order.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children
            .iter()
            .filter(move |c| c.ns.is_none() && c.name == name)
    }

    /// The value of the un-namespaced attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_none() && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// Follow a path of un-namespaced child names, e.g. `["cpu", "numa"]`.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |el, n| el.child(n))
    }

    pub fn text(&self) -> &str {
        self.text.trim()
    }
}

/// Parse a whole document into its root element.
pub fn parse(text: &str) -> Result<Element, String> {
    if text.len() > MAX_XML_BYTES {
        return Err(format!(
            "domain XML is {} bytes, more than the {} accepted",
            text.len(),
            MAX_XML_BYTES
        ));
    }
    let mut reader = NsReader::from_str(text);
    reader.config_mut().trim_text(false);
    reader.config_mut().expand_empty_elements = false;

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let position = reader.buffer_position();
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|e| format!("XML error at byte {position}: {e}"))?;
        // Own the element's namespace now: the resolver borrows the reader.
        let ns = match &event {
            Event::Start(_) | Event::Empty(_) => namespace(resolved)?,
            _ => None,
        };
        match event {
            Event::DocType(_) => {
                return Err("XML with a DOCTYPE is refused (domain XML never has one)".into())
            }
            Event::Start(start) => {
                check_growth(&mut count, stack.len(), root.is_some())?;
                stack.push(element_from(&reader, ns, &start)?);
            }
            Event::Empty(start) => {
                check_growth(&mut count, stack.len(), root.is_some())?;
                let element = element_from(&reader, ns, &start)?;
                attach(&mut stack, &mut root, element);
            }
            Event::End(_) => {
                let element = stack.pop().ok_or("XML has an unmatched end tag")?;
                attach(&mut stack, &mut root, element);
            }
            Event::Text(t) => {
                let s = t
                    .unescape()
                    .map_err(|e| format!("XML text at byte {position}: {e}"))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                } else if !s.trim().is_empty() {
                    return Err("XML has text outside its root element".into());
                }
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&c));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("XML ends before its root element is closed (truncated?)".into());
    }
    root.ok_or_else(|| "XML has no root element".into())
}

fn check_growth(count: &mut usize, depth: usize, root_done: bool) -> Result<(), String> {
    *count += 1;
    if *count > MAX_ELEMENTS || depth >= MAX_DEPTH {
        return Err("XML is nested too deeply or has too many elements".into());
    }
    if root_done {
        return Err("XML has content after its root element".into());
    }
    Ok(())
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

fn element_from(
    reader: &NsReader<&[u8]>,
    ns: Option<String>,
    start: &BytesStart,
) -> Result<Element, String> {
    let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
    let mut element = Element {
        ns,
        name,
        ..Element::default()
    };
    for attr in start.attributes() {
        let attr = attr.map_err(|e| format!("XML attribute in <{}>: {e}", element.name))?;
        let key = attr.key;
        if key.as_ref().starts_with(b"xmlns") {
            continue;
        }
        let (ns, local) = reader.resolve_attribute(key);
        let value = attr
            .unescape_value()
            .map_err(|e| format!("XML attribute in <{}>: {e}", element.name))?;
        element.attrs.push(Attr {
            ns: namespace(ns)?,
            name: String::from_utf8_lossy(local.as_ref()).into_owned(),
            value: value.into_owned(),
        });
    }
    Ok(element)
}

fn namespace(resolved: ResolveResult) -> Result<Option<String>, String> {
    match resolved {
        ResolveResult::Bound(ns) => Ok(Some(String::from_utf8_lossy(ns.as_ref()).into_owned())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(prefix) => Err(format!(
            "XML uses the undeclared namespace prefix '{}'",
            String::from_utf8_lossy(&prefix)
        )),
    }
}
