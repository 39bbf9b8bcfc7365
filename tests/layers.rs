//! The layering of `src/`: the top-level modules import one another without a cycle, and
//! every import points down the layers of ARCHITECTURE.md (or within one layer).
//!
//! A module's imports are the `crate::NAME` paths in any of its files, tests and comments
//! included (a doc comment that names `crate::x` says the module leans on `x`), and the names
//! of a `crate::{…}` group. A failure names the cycle, or the edge, and the files that make it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom to top. A module may import its own layer's modules and those below.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "values and parsers",
        &[
            "cpulist",
            "size",
            "error",
            "log",
            "stop",
            "privilege",
            "change",
        ],
    ),
    (
        "the XML model and the host with its ports",
        &["domain", "host"],
    ),
    ("the policy, every section", &["policy"]),
    ("the state dir, journal, ledger and its holds", &["state"]),
    ("feature planners", &["irq", "isolation", "knobs"]),
    ("the pure plan", &["plan"]),
    ("executing changes, release, recover", &["apply"]),
    (
        "assembly of roots, privilege, policy, state, ports",
        &["assemble"],
    ),
    (
        "the ways in",
        &["hook", "launch", "status", "advisor", "balance"],
    ),
    ("daemons and their output", &["watch", "metrics"]),
    ("the command line", &["cli"]),
];

/// Where an import comes from: module → imported module → the files that import it.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules: every file and directory of `src/` but `main.rs` and `lib.rs`.
fn modules() -> BTreeSet<String> {
    fs::read_dir(src())
        .expect("src/ lists")
        .map(|e| {
            e.expect("src/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n != "main.rs" && n != "lib.rs")
        .map(|n| n.strip_suffix(".rs").unwrap_or(&n).to_string())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("directory lists") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The identifier at the start of `text`, after blanks.
fn leading_ident(text: &str) -> &str {
    let text = text.trim_start();
    let end = text.find(|c: char| !is_ident(c)).unwrap_or(text.len());
    &text[..end]
}

/// The first name of each item of a `{…}` group that starts `text` (nested groups skipped).
fn group_heads(text: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = 1;
    for (i, c) in text.char_indices() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    item_start = i + 1;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    heads.push(leading_ident(&text[item_start..i]));
                    break;
                }
            }
            ',' if depth == 1 => {
                heads.push(leading_ident(&text[item_start..i]));
                item_start = i + 1;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level modules a file's text names through `crate::`.
fn imports(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if rest.starts_with('{') {
            names.extend(group_heads(rest).into_iter().map(str::to_string));
        } else {
            names.insert(leading_ident(rest).to_string());
        }
    }
    names
}

fn graph() -> Graph {
    let modules = modules();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph = Graph::new();
    for module in &modules {
        graph.entry(module.clone()).or_default();
    }
    for file in files {
        let rel = file.strip_prefix(src()).expect("under src/");
        let first = rel.components().next().expect("a path").as_os_str();
        let first = first.to_string_lossy();
        let module = first.strip_suffix(".rs").unwrap_or(&first).to_string();
        if !modules.contains(&module) {
            continue;
        }
        let text = fs::read_to_string(&file).expect("source reads");
        for name in imports(&text) {
            if name != module && modules.contains(&name) {
                graph
                    .get_mut(&module)
                    .expect("every module has a node")
                    .entry(name)
                    .or_default()
                    .insert(format!("src/{}", rel.display()));
            }
        }
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan's algorithm).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph[v].keys() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                loop {
                    let w = self.stack.pop().expect("v is on the stack");
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

/// A shortest loop from the component's first module back to it, inside the component.
fn shortest_loop(graph: &Graph, component: &[String]) -> Vec<String> {
    let start = &component[0];
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.as_str()]);
    while let Some(v) = queue.pop_front() {
        for w in graph[v].keys().filter(|w| component.contains(w)) {
            if w == start {
                let mut path = vec![start.clone(), v.to_string()];
                let mut at = v;
                while at != start {
                    at = came_from[at];
                    path.push(at.to_string());
                }
                path.reverse();
                return path;
            }
            if !came_from.contains_key(w.as_str()) {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("a strongly connected component of two or more has a loop")
}

/// One cycle's loop, and the edges inside it, each with the files that make it.
fn describe(graph: &Graph, cycle: &[String]) -> String {
    let mut out = format!(
        "cycle {} (among {}):\n",
        shortest_loop(graph, cycle).join(" -> "),
        cycle.join(", ")
    );
    for from in cycle {
        for (to, files) in &graph[from] {
            if cycle.contains(to) {
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                out += &format!("  {from} -> {to} ({})\n", files.join(", "));
            }
        }
    }
    out
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let graph = graph();
    assert!(graph.contains_key("plan"), "src/ was not read: {graph:?}");
    let found = cycles(&graph);
    let text: Vec<String> = found.iter().map(|c| describe(&graph, c)).collect();
    assert!(
        found.is_empty(),
        "import cycles in src/:\n{}",
        text.join("")
    );
}

#[test]
fn every_import_points_down_the_layers_or_within_one() {
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, modules))| modules.iter().map(move |m| (*m, i)))
        .collect();
    let graph = graph();
    let unplaced: Vec<&String> = graph
        .keys()
        .filter(|m| !layer_of.contains_key(m.as_str()))
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules without a layer (add them to LAYERS in tests/layers.rs and to ARCHITECTURE.md): {unplaced:?}"
    );
    let mut upward = Vec::new();
    for (from, edges) in &graph {
        for (to, files) in edges {
            let (a, b) = (layer_of[from.as_str()], layer_of[to.as_str()]);
            if b > a {
                upward.push(format!(
                    "  {from} ({}) -> {to} ({}): {}",
                    LAYERS[a].0,
                    LAYERS[b].0,
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_scan_reads_paths_groups_and_nested_groups() {
    let text = "use crate::host::HostFs;\nuse crate::{policy::{self, Policy}, state};\n\
                // see crate::plan\nlet x = crate::irq::all_irqs(fs);";
    let names: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(names, ["host", "irq", "plan", "policy", "state"]);
}

#[test]
fn a_cycle_is_found_and_named_with_the_files_that_make_it() {
    let mut graph = Graph::new();
    let edge = |g: &mut Graph, a: &str, b: &str| {
        g.entry(b.into()).or_default();
        g.entry(a.into())
            .or_default()
            .entry(b.into())
            .or_default()
            .insert(format!("src/{a}.rs"));
    };
    edge(&mut graph, "a", "b");
    edge(&mut graph, "b", "c");
    edge(&mut graph, "c", "a");
    edge(&mut graph, "c", "d");
    let found = cycles(&graph);
    assert_eq!(found, [["a", "b", "c"]]);
    let text = describe(&graph, &found[0]);
    assert!(text.starts_with("cycle a -> b -> c -> a "), "{text}");
    assert!(text.contains("c -> a (src/c.rs)"), "{text}");
    assert!(!text.contains("-> d"), "{text}");
}
