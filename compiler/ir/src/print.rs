//! Printing graphs: a stable text form (for snapshots and review), DOT and
//! Mermaid. Nodes appear in topological order with ties broken by name, so
//! output never depends on insertion order.

use crate::Graph;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Nodes in a stable topological order (loop-back edges ignored).
fn order(g: &Graph) -> Vec<NodeIndex> {
    let graph = &g.graph;
    let mut indegree: std::collections::HashMap<NodeIndex, usize> =
        graph.node_indices().map(|n| (n, 0)).collect();
    for e in graph.edge_references() {
        if !e.weight().loop_back {
            *indegree.entry(e.target()).or_default() += 1;
        }
    }
    let mut ready: BTreeSet<(String, NodeIndex)> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| (graph[*n].name.clone(), *n))
        .collect();
    let mut out = Vec::new();
    while let Some(first) = ready.iter().next().cloned() {
        ready.remove(&first);
        out.push(first.1);
        for e in graph.edges(first.1) {
            if e.weight().loop_back {
                continue;
            }
            if let Some(d) = indegree.get_mut(&e.target()) {
                *d -= 1;
                if *d == 0 {
                    ready.insert((graph[e.target()].name.clone(), e.target()));
                }
            }
        }
    }
    // Nodes on cycles (invalid graphs) last, by name.
    let mut rest: Vec<NodeIndex> = graph.node_indices().filter(|n| !out.contains(n)).collect();
    rest.sort_by_key(|n| graph[*n].name.clone());
    out.extend(rest);
    out
}

/// The stable text form.
pub fn to_text(g: &Graph) -> String {
    let graph = &g.graph;
    let mut s = String::new();
    let _ = writeln!(s, "program {}", g.program_hash);
    for (name, hash) in &g.rubric_hashes {
        let _ = writeln!(s, "rubric {name} {hash}");
    }
    for n in order(g) {
        let node = &graph[n];
        let loop_note = node
            .stage_loop
            .as_ref()
            .map(|l| format!("  [loop {l}]"))
            .unwrap_or_default();
        let _ = writeln!(s, "\n{} : {:?}{loop_note}", node.name, node.op);
        for (k, v) in &node.params {
            match v {
                serde_json::Value::String(text) => {
                    let _ = writeln!(s, "  {k} = {text}");
                }
                other => {
                    let _ = writeln!(s, "  {k} = {other}");
                }
            }
        }
        let mut inputs: Vec<String> = graph
            .edges_directed(n, petgraph::Direction::Incoming)
            .map(|e| {
                let back = if e.weight().loop_back {
                    "  (loop back)"
                } else {
                    ""
                };
                format!(
                    "  {} <- {}.{}{back}",
                    e.weight().to_port,
                    graph[e.source()].name,
                    e.weight().from_port
                )
            })
            .collect();
        inputs.sort();
        for line in inputs {
            let _ = writeln!(s, "{line}");
        }
        let outs: Vec<String> = node
            .outputs
            .iter()
            .map(|p| format!("{}: {:?}", p.name, p.ty))
            .collect();
        if !outs.is_empty() {
            let _ = writeln!(s, "  -> {}", outs.join(", "));
        }
    }
    s
}

/// A DOT or Mermaid node id for `name`: every character but ASCII letters,
/// digits and `_` (module paths hold `.`, `/`, spaces, quotes) becomes `_`.
fn id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `text` inside a DOT double-quoted string.
fn dot_text(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `text` inside a Mermaid double-quoted label: Mermaid renders labels as
/// HTML and reads `#...;` as an entity code, so `#`, `"`, `<` and `>` are
/// written as entity codes (`#` first: the others' codes hold one).
fn mermaid_text(text: &str) -> String {
    text.replace('#', "#35;")
        .replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

/// The DOT or Mermaid id of every node: [`id`] of its name, with `_2`,
/// `_3`, ... after names that [`id`] maps to an id already taken (`a_b::x`
/// and `a/b::x`), in the order the nodes are printed.
fn node_ids(g: &Graph) -> impl Fn(NodeIndex) -> String {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut ids = BTreeMap::new();
    for n in order(g) {
        let base = id(&g.graph[n].name);
        let mut unique = base.clone();
        let mut k = 2;
        while !taken.insert(unique.clone()) {
            unique = format!("{base}_{k}");
            k += 1;
        }
        ids.insert(n, unique);
    }
    move |n| ids.get(&n).cloned().unwrap_or_default()
}

/// Graphviz DOT.
pub fn to_dot(g: &Graph) -> String {
    let graph = &g.graph;
    let id_of = node_ids(g);
    let mut s = String::from(
        "digraph pipeline {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    let nodes = order(g);
    let mut loops: BTreeSet<String> = BTreeSet::new();
    for n in &nodes {
        if let Some(l) = &graph[*n].stage_loop {
            loops.insert(l.clone());
        }
    }
    for l in &loops {
        let _ = writeln!(
            s,
            "  subgraph cluster_{} {{\n    label=\"step loop: {}\";",
            id(l),
            dot_text(l)
        );
        for n in nodes
            .iter()
            .filter(|n| graph[**n].stage_loop.as_deref() == Some(l))
        {
            let _ = writeln!(
                s,
                "    {} [label=\"{}\\n{:?}\"];",
                id_of(*n),
                dot_text(&graph[*n].name),
                graph[*n].op
            );
        }
        s.push_str("  }\n");
    }
    for n in nodes.iter().filter(|n| graph[**n].stage_loop.is_none()) {
        let _ = writeln!(
            s,
            "  {} [label=\"{}\\n{:?}\"];",
            id_of(*n),
            dot_text(&graph[*n].name),
            graph[*n].op
        );
    }
    let mut edges: Vec<String> = graph
        .edge_references()
        .map(|e| {
            let style = if e.weight().loop_back {
                ", style=dashed"
            } else {
                ""
            };
            format!(
                "  {} -> {} [label=\"{}\"{style}];",
                id_of(e.source()),
                id_of(e.target()),
                dot_text(&e.weight().to_port)
            )
        })
        .collect();
    edges.sort();
    for e in edges {
        s.push_str(&e);
        s.push('\n');
    }
    s.push_str("}\n");
    s
}

/// Mermaid flowchart.
pub fn to_mermaid(g: &Graph) -> String {
    let graph = &g.graph;
    let id_of = node_ids(g);
    let mut s = String::from("flowchart LR\n");
    for n in order(g) {
        let _ = writeln!(
            s,
            "  {}[\"{}<br/>{:?}\"]",
            id_of(n),
            mermaid_text(&graph[n].name),
            graph[n].op
        );
    }
    let mut edges: Vec<String> = graph
        .edge_references()
        .map(|e| {
            let arrow = if e.weight().loop_back { "-.->" } else { "-->" };
            format!(
                "  {} {arrow}|{}| {}",
                id_of(e.source()),
                e.weight().to_port,
                id_of(e.target())
            )
        })
        .collect();
    edges.sort();
    for e in edges {
        s.push_str(&e);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Node, Op};

    #[test]
    fn names_with_spaces_and_quotes_give_valid_ids_and_labels() {
        let mut g = Graph::new(String::new());
        let node = |name: &str| Node {
            name: name.into(),
            op: Op::Score,
            stage_loop: None,
            params: Default::default(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        let a = g.add(node("rubric.my rubrics::r2"));
        let b = g.add(node("rubric.a\"b/x::r"));
        g.connect(a, "out", b, "in");
        let dot = to_dot(&g);
        assert!(
            dot.contains("  rubric_my_rubrics__r2 [label=\"rubric.my rubrics::r2\\nScore\"];"),
            "{dot}"
        );
        assert!(
            dot.contains("  rubric_a_b_x__r [label=\"rubric.a\\\"b/x::r\\nScore\"];"),
            "{dot}"
        );
        assert!(
            dot.contains("  rubric_my_rubrics__r2 -> rubric_a_b_x__r"),
            "{dot}"
        );
        let mermaid = to_mermaid(&g);
        assert!(
            mermaid.contains("  rubric_a_b_x__r[\"rubric.a#quot;b/x::r<br/>Score\"]"),
            "{mermaid}"
        );
        // HTML and entity codes in a name are shown as written.
        let mut g = Graph::new(String::new());
        g.add(node("rubric.<b>#quot;/x::r"));
        let mermaid = to_mermaid(&g);
        assert!(
            mermaid.contains("[\"rubric.#lt;b#gt;#35;quot;/x::r<br/>Score\"]"),
            "{mermaid}"
        );
    }

    /// Names that map to one id (`a_b::x`, `a/b::x`) stay two nodes.
    #[test]
    fn names_that_share_an_id_stay_apart() {
        let mut g = Graph::new(String::new());
        let node = |name: &str| Node {
            name: name.into(),
            op: Op::LoadModel,
            stage_loop: None,
            params: Default::default(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        let a = g.add(node("model.a_b::x"));
        let b = g.add(node("model.a/b::x"));
        g.connect(a, "out", b, "in");
        let dot = to_dot(&g);
        let ids: BTreeSet<&str> = dot
            .lines()
            .filter(|l| l.contains("[label=\"model."))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(ids.len(), 2, "{dot}");
        assert!(
            dot.contains("model_a_b__x -> model_a_b__x_2")
                || dot.contains("model_a_b__x_2 -> model_a_b__x"),
            "{dot}"
        );
        let mermaid = to_mermaid(&g);
        assert!(mermaid.contains("model_a_b__x_2["), "{mermaid}");
    }
}
