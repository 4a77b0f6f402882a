//! The runtime's modules form a layered graph: no module reaches, through `crate::` or `super::`
//! paths, back to itself. A cycle is how a "hub" grows (every capability knowing the run state and
//! the run state knowing every capability); this test names the cycle the moment one appears.
//!
//! Modules are the files under `src/` (`capabilities/ssh.rs` is `capabilities::ssh`; `mod.rs` is
//! its folder's module). Comments, `#[cfg(test)]` code and `testing` modules do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of `src/`, with the text that counts.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            let name = parts.join("::");
            let text = std::fs::read_to_string(&path).unwrap();
            let code: String = text
                .lines()
                .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            if name.ends_with("testing") {
                continue; // test support, compiled only under #[cfg(test)]
            }
            found.insert(name, code);
        }
    }
    found
}

/// The modules `code` of module `from` refers to.
fn references(from: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let parent: Vec<&str> = {
        let mut p: Vec<&str> = from.split("::").filter(|s| !s.is_empty()).collect();
        p.pop();
        p
    };
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        for (i, _) in code.match_indices(prefix) {
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let path: Vec<&str> = code[i + prefix.len()..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .filter(|s| !s.is_empty())
                .collect();
            // The longest prefix of the path that is a module.
            let mut best = None;
            for n in 0..=path.len() {
                let candidate: Vec<&str> = base
                    .iter()
                    .copied()
                    .chain(path[..n].iter().copied())
                    .collect();
                let name = candidate.join("::");
                if known.contains(&name) {
                    best = Some(name);
                }
            }
            if let Some(to) = best.filter(|to| to != from && !to.is_empty()) {
                out.insert(to);
            }
        }
    }
    out
}

#[test]
fn the_runtime_has_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    let graph: BTreeMap<&str, BTreeSet<String>> = modules
        .iter()
        .map(|(name, code)| (name.as_str(), references(name, code, &known)))
        .collect();
    // Depth-first search for a back edge; the path on the stack is the cycle.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<&'a str, BTreeSet<String>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|s| s.to_string()).collect();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            let next = graph.get_key_value(next.as_str()).map(|(k, _)| *k).unwrap();
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle in host/runtime: {}", cycle.join(" → "));
        }
    }
}
