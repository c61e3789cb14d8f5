//! The crate's top-level modules (`src/<name>.rs`, `src/<name>/`) form layers: no import
//! circle between them, however long. This reads every `src/**/*.rs`, collects each
//! `crate::NAME` path in code (comments and string literals do not count; `use crate::{a,
//! b::c}` groups count each name, across line breaks), and fails with the circle's path,
//! e.g. `cli -> generate -> cli`, if the graph between top-level modules has one.
//!
//! `lib.rs` and `main.rs` are the root, which may use everything, and are skipped, as are
//! names that are not top-level modules (the root's own constants, say); but a name the
//! root's `use` items bring in from a module (`pub use daemon::x as y`, globs too) counts as
//! a use of that module wherever `crate::y` appears. A `super::` path
//! out of a top-level module into the root would escape this check; the crate has none (its
//! `super::` paths stay inside their top-level module), so only `crate::` is read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Module name → the other top-level modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level module a file under `src/` belongs to (`daemon/x.rs` → `daemon`,
/// `event.rs` → `event`); `None` for the root (`lib.rs`, `main.rs`).
fn top_module(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// `source` with comments and the contents of string and character literals blanked out
/// (line breaks kept), so that only code is searched. Lifetimes (`'a`) are left alone.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if let Some(hashes) = (c == 'r' && starts_token(&chars, i))
            .then(|| raw_string_hashes(&chars[i + 1..]))
            .flatten()
        {
            // r"..." or r#"..."# (or br"..."): no escapes, ends at a quote followed by as
            // many hashes.
            let end: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            out.push(' ');
            i += 2 + hashes;
            let rest: String = chars[i..].iter().collect();
            let len = rest.find(&end).map_or(rest.len(), |at| at + end.len());
            for ch in rest[..len].chars() {
                blank(&mut out, ch);
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{1F600}'.
            out.push(' ');
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                blank(&mut out, chars[i]);
                i += 1;
            }
            out.push_str("  ");
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push_str("   ");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// For text right after an `r`: the number of `#` of a raw string opening there.
fn raw_string_hashes(after_r: &[char]) -> Option<usize> {
    let hashes = after_r.iter().take_while(|&&c| c == '#').count();
    (after_r.get(hashes) == Some(&'"')).then_some(hashes)
}

/// Whether the `r` at `chars[i]` starts a token (or follows the `b` of a byte string), not
/// the end of an identifier such as `for` or `bar`.
fn starts_token(chars: &[char], i: usize) -> bool {
    let before = |n: usize| i.checked_sub(n).map(|at| chars[at]);
    !is_ident(before(1)) || (before(1) == Some('b') && !is_ident(before(2)))
}

fn is_ident(c: Option<char>) -> bool {
    c.is_some_and(|c| c == '_' || c.is_alphanumeric())
}

/// The first path segment after each `crate::` in `code` (already without comments and
/// literals): `crate::a::b` gives `a`, `use crate::{a, b::c, d::{e, f}}` gives `a`, `b` and
/// `d`. Whitespace and line breaks may stand anywhere between the tokens.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate") {
        let start = from + at;
        from = start + "crate".len();
        if is_ident(code[..start].chars().next_back()) {
            continue; // e.g. `my_crate::`
        }
        let rest = code[from..].trim_start();
        let Some(rest) = rest.strip_prefix("::") else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        items.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                item.push(c);
            }
            items.push(item);
            names.extend(items.iter().filter_map(|item| first_segment(item)));
        } else if let Some(name) = first_segment(rest) {
            names.insert(name);
        }
    }
    names
}

/// The leading identifier of a path (`b::c` → `b`); `None` for `self`, `*` or nothing.
fn first_segment(path: &str) -> Option<String> {
    let name: String = path
        .trim_start()
        .chars()
        .take_while(|&c| c == '_' || c.is_alphanumeric())
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// What the root's `use` items make reachable as `crate::NAME`: each imported name (or its
/// `as` alias) → the top-level module it comes from, so that `crate::NAME` counts as a use
/// of that module. A glob (`use a::*`) is kept under `*`: any `crate::NAME` that is neither
/// a module nor a known alias then counts as a use of every globbed module.
fn root_aliases(root_code: &str, modules: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut aliases: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for item in root_code.split(';') {
        let item = item.trim();
        // `use`, `pub use`, `pub(crate) use`, after any attributes or other items.
        let Some(at) = item
            .rfind("use ")
            .filter(|&at| !is_ident(item[..at].chars().next_back()))
        else {
            continue;
        };
        let path: String = item[at + 4..]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let path = path
            .trim_start_matches("crate::")
            .trim_start_matches("self::")
            .trim_start_matches("::");
        let Some(module) = first_segment(path).filter(|m| modules.contains(m)) else {
            continue;
        };
        for leaf in leaves(path) {
            aliases.entry(leaf).or_default().insert(module.clone());
        }
    }
    aliases
}

/// The names a `use` path brings into scope: `a::b::c` → `c`, `a::b as d` → `d`,
/// `a::{b, c as d, e::f}` → `b`, `d`, `f`, `a::*` → `*`.
fn leaves(path: &str) -> Vec<String> {
    let path = path.trim();
    if let Some(open) = path.find('{') {
        let inner = &path[open + 1..path.rfind('}').unwrap_or(path.len())];
        let mut items = Vec::new();
        let (mut depth, mut item) = (0, String::new());
        for c in inner.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut item));
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        items.push(item);
        // `self` in a group names the group's parent: `a::b::{self}` brings `b`.
        let parent = path[..open]
            .trim_end_matches(':')
            .rsplit("::")
            .next()
            .unwrap_or("");
        return items
            .iter()
            .map(|i| match i.trim() {
                "self" => parent.trim().to_owned(),
                other => other.to_owned(),
            })
            .flat_map(|i| leaves(&i))
            .collect();
    }
    if let Some((_, alias)) = path.split_once(" as ") {
        return vec![alias.trim().to_owned()];
    }
    match path.rsplit("::").next().map(str::trim) {
        Some(last) if !last.is_empty() => vec![last.to_owned()],
        _ => Vec::new(),
    }
}

/// The graph between top-level modules from `(path under src/, source)` pairs: an edge for
/// every `crate::NAME` in one module's code where NAME is another top-level module, or a
/// name the root re-exports from one.
fn module_graph(files: &[(PathBuf, String)]) -> Graph {
    let modules: BTreeSet<String> = files.iter().filter_map(|(p, _)| top_module(p)).collect();
    let root: String = files
        .iter()
        .filter(|(p, _)| top_module(p).is_none())
        .map(|(_, s)| code_only(s))
        .collect::<Vec<_>>()
        .join(";\n");
    let aliases = root_aliases(&root, &modules);
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for (path, source) in files {
        let Some(from) = top_module(path) else {
            continue;
        };
        let uses: Vec<String> = crate_references(&code_only(source))
            .into_iter()
            .flat_map(|name| {
                if modules.contains(&name) {
                    BTreeSet::from([name])
                } else if let Some(targets) = aliases.get(&name) {
                    targets.clone()
                } else {
                    aliases.get("*").cloned().unwrap_or_default()
                }
            })
            .filter(|to| *to != from)
            .collect();
        graph.entry(from).or_default().extend(uses);
    }
    graph
}

/// A circle in `graph` as its path, first node repeated at the end (`[a, b, a]`), or `None`.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    fn visit<'g>(
        node: &'g str,
        graph: &'g Graph,
        marks: &mut BTreeMap<&'g str, Mark>,
        path: &mut Vec<&'g str>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::OnPath) => {
                let start = path.iter().position(|&n| n == node).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|&n| n.to_owned()).collect();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node, Mark::OnPath);
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

/// Every `.rs` file under `dir`, as (path relative to `root`, contents).
fn read_sources(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            read_sources(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text =
                fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.strip_prefix(root).unwrap().to_path_buf(), text));
        }
    }
}

#[test]
fn top_level_modules_import_each_other_in_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_sources(&src, &src, &mut files);
    let graph = module_graph(&files);
    // Not vacuous: the crate's modules are found, and some use others.
    assert!(
        graph.contains_key("daemon") && graph.contains_key("config"),
        "{graph:?}"
    );
    assert!(
        graph["daemon"].contains("config"),
        "daemon should use config: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = graph
            .iter()
            .filter(|(_, to)| !to.is_empty())
            .map(|(from, to)| {
                let to: Vec<&str> = to.iter().map(String::as_str).collect();
                format!("  {from} -> {}", to.join(", "))
            })
            .collect();
        panic!(
            "import circle between top-level modules: {}\nall edges:\n{}",
            cycle.join(" -> "),
            edges.join("\n")
        );
    }
}

fn graph_of(edges: &[(&str, &str)]) -> Graph {
    let mut graph = Graph::new();
    for &(from, to) in edges {
        graph
            .entry(from.to_owned())
            .or_default()
            .insert(to.to_owned());
        graph.entry(to.to_owned()).or_default();
    }
    graph
}

#[test]
fn a_circle_in_a_hand_made_graph_is_found_with_its_path() {
    let graph = graph_of(&[
        ("cli", "config"),
        ("config", "decode"),
        ("generate", "cli"),
        ("cli", "generate"),
    ]);
    assert_eq!(
        find_cycle(&graph).map(|c| c.join(" -> ")).as_deref(),
        Some("cli -> generate -> cli")
    );
    let long = graph_of(&[("a", "b"), ("b", "c"), ("c", "d"), ("d", "b")]);
    assert_eq!(
        find_cycle(&long).map(|c| c.join(" -> ")).as_deref(),
        Some("b -> c -> d -> b")
    );
}

#[test]
fn a_layered_graph_passes() {
    // A diamond and a shared leaf: many paths, no circle.
    let graph = graph_of(&[
        ("daemon", "mailbox"),
        ("daemon", "announce"),
        ("mailbox", "imap"),
        ("announce", "imap"),
        ("imap", "config"),
        ("daemon", "config"),
    ]);
    assert_eq!(find_cycle(&graph), None);
    assert_eq!(find_cycle(&Graph::new()), None);
}

#[test]
fn references_are_read_from_code_in_groups_and_across_lines() {
    let source = r##"
//! See [`crate::ignored_doc`] and crate::ignored_comment.
use crate::{
    alpha,
    beta::{Gamma, delta::Epsilon},
    self,
};
use crate
    ::zeta::Eta;
/* crate::ignored_block /* nested crate::ignored_nested */ crate::ignored_after */
fn f<'a>(x: &'a str) -> char {
    let _ = "crate::ignored_string \" crate::still_ignored";
    let _ = r#"crate::ignored_raw "quoted" crate::ignored_raw_too"#;
    let _ = br"crate::ignored_raw_bytes\";
    let _ = b"crate::ignored_bytes";
    let r#for = 1;
    let _ = my_crate::not_ours::X;
    let _ = '"';
    let _ = crate::theta::iota(x);
    '\''
}
"##;
    let found = crate_references(&code_only(source));
    let want = ["alpha", "beta", "theta", "zeta"];
    assert_eq!(found, want.iter().map(|s| s.to_string()).collect());
}

#[test]
fn files_map_to_their_top_level_module_and_edges_only_join_modules() {
    assert_eq!(
        top_module(Path::new("daemon/x.rs")).as_deref(),
        Some("daemon")
    );
    assert_eq!(
        top_module(Path::new("daemon/mod.rs")).as_deref(),
        Some("daemon")
    );
    assert_eq!(top_module(Path::new("event.rs")).as_deref(), Some("event"));
    assert_eq!(top_module(Path::new("lib.rs")), None);
    assert_eq!(top_module(Path::new("main.rs")), None);

    let files = [
        (
            "lib.rs",
            "pub mod a; pub mod b; fn run() { crate::a::go(); }",
        ),
        (
            "a/mod.rs",
            "use crate::{b, EX_CONFIG}; use crate::a::inner;",
        ),
        ("a/inner.rs", "use crate::c::Thing;"),
        (
            "b.rs",
            "// crate::a would be a circle, but this is a comment\n",
        ),
        ("c.rs", ""),
    ]
    .map(|(p, s)| (PathBuf::from(p), s.to_owned()));
    let graph = module_graph(&files);
    assert_eq!(graph, graph_of(&[("a", "b"), ("a", "c")]));
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn a_name_the_root_re_exports_counts_as_its_module() {
    let files = [
        (
            "lib.rs",
            "pub mod config; pub mod daemon; pub mod util;\n\
             pub use daemon::reload::plan as reload_plan;\n\
             #[doc(hidden)] pub use crate::daemon::{probe, systemd::{self, Notify as N}};\n\
             use util::*;",
        ),
        ("daemon/mod.rs", "use crate::config::Config;"),
        ("config/keys.rs", "fn f() { crate::reload_plan(); }"),
        ("util.rs", ""),
    ]
    .map(|(p, s)| (PathBuf::from(p), s.to_owned()));
    let graph = module_graph(&files);
    assert_eq!(
        find_cycle(&graph).map(|c| c.join(" -> ")).as_deref(),
        Some("config -> daemon -> config")
    );
    for (name, module) in [
        ("probe", "daemon"),
        ("systemd", "daemon"),
        ("N", "daemon"),
        ("other", "util"),
    ] {
        let mut files = files.to_vec();
        files[2] = (PathBuf::from("config/x.rs"), format!("use crate::{name};"));
        let graph = module_graph(&files);
        assert!(graph["config"].contains(module), "{name}: {graph:?}");
    }
}
