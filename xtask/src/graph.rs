//! `cargo xtask graph`: the import graph a newcomer would draw, from the
//! sources. Per crate, which top-level modules use which (`crate::m` paths
//! outside comments and test modules), and the workspace crates each crate
//! depends on; fails when modules of one crate import each other in a
//! circle. A text scan rather than `cargo-modules` (which builds
//! rust-analyzer, minutes on 2 cores) because `crate::` paths are how every
//! module here names another.

use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules it uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn module_graph(src: &Path) -> Result<Graph> {
    let mut graph = Graph::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src)?.with_extension("");
            let top = rel
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let uses = graph.entry(top.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    // `crate::m::x` names m; `crate::{m::x, n}` names m and n.
                    let heads: Vec<&str> = match rest.strip_prefix('{') {
                        Some(group) => group
                            .split('}')
                            .next()
                            .unwrap_or("")
                            .split(',')
                            .map(str::trim)
                            .collect(),
                        None => vec![rest],
                    };
                    for head in heads {
                        let name: String = head
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        let module = src.join(&name);
                        let is_module = module.with_extension("rs").is_file()
                            || module.join("mod.rs").is_file();
                        if !name.is_empty() && is_module && name != top {
                            uses.insert(name);
                        }
                    }
                }
            }
        }
    }
    Ok(graph)
}

/// The circles of `graph`, each as its modules in order.
fn cycles(graph: &Graph) -> BTreeSet<Vec<String>> {
    fn walk(g: &Graph, path: &mut Vec<String>, found: &mut BTreeSet<Vec<String>>) {
        let last = path.last().cloned().unwrap_or_default();
        for next in g.get(&last).into_iter().flatten() {
            if let Some(at) = path.iter().position(|m| m == next) {
                let mut circle = path[at..].to_vec();
                // One spelling per circle: start at its smallest name.
                let min = circle
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, m)| *m)
                    .map_or(0, |(i, _)| i);
                circle.rotate_left(min);
                found.insert(circle);
            } else if path.len() < 16 {
                path.push(next.clone());
                walk(g, path, found);
                path.pop();
            }
        }
    }
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        walk(graph, &mut vec![start.clone()], &mut found);
    }
    found
}

/// Prints every crate's workspace dependencies and module graph; an error
/// names the circles.
pub fn run(root: &Path) -> Result<()> {
    let mut circles = Vec::new();
    let crates = root.join("crates");
    let mut names: Vec<_> = std::fs::read_dir(&crates)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    names.sort();
    for dir in names {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))?;
        let normal = manifest.split("[dev-dependencies]").next().unwrap_or("");
        let deps: Vec<&str> = normal
            .lines()
            .filter_map(|l| l.split(['.', ' ', '=']).next())
            .filter(|d| d.starts_with("dtml-") && *d != name)
            .collect();
        println!(
            "{name} -> {}",
            if deps.is_empty() {
                "(none)".into()
            } else {
                deps.join(", ")
            }
        );
        let graph = module_graph(&dir.join("src"))?;
        for (module, uses) in &graph {
            if !uses.is_empty() {
                let list: Vec<&str> = uses.iter().map(String::as_str).collect();
                println!("    {module} -> {}", list.join(", "));
            }
        }
        for circle in cycles(&graph) {
            circles.push(format!("{name}: {} -> {}", circle.join(" -> "), circle[0]));
        }
    }
    if !circles.is_empty() {
        bail!(
            "modules that import each other in a circle:\n  {}",
            circles.join("\n  ")
        );
    }
    println!("no import circles");
    Ok(())
}
