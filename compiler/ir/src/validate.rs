//! Graph validation: cycles outside step loops, dangling or doubly fed
//! inputs, and type mismatches across edges.

use crate::{Edge, Graph, Node};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;

/// What is wrong with a graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphError {
    /// A cycle that is not a step loop, with the node names in order.
    Cycle(Vec<String>),
    /// An input port that nothing feeds.
    Dangling {
        /// The node.
        node: String,
        /// The port.
        port: String,
    },
    /// An input fed by several edges, or an edge whose port types differ.
    BadEdge(String),
}

/// Validates a graph; returns every problem found.
pub fn validate(g: &Graph) -> Vec<GraphError> {
    let mut errors = Vec::new();
    let graph = &g.graph;
    for n in graph.node_indices() {
        let node = &graph[n];
        for input in &node.inputs {
            let feeds: Vec<_> = graph
                .edges_directed(n, petgraph::Direction::Incoming)
                .filter(|e| e.weight().to_port == input.name && !e.weight().loop_back)
                .collect();
            match feeds.as_slice() {
                [] => errors.push(GraphError::Dangling {
                    node: node.name.clone(),
                    port: input.name.clone(),
                }),
                [one] => {
                    let src = &graph[one.source()];
                    let out = src
                        .outputs
                        .iter()
                        .find(|p| p.name == one.weight().from_port);
                    match out {
                        Some(p) if p.ty == input.ty => {}
                        Some(p) => errors.push(GraphError::BadEdge(format!(
                            "{}.{} ({:?}) feeds {}.{} ({:?})",
                            src.name, p.name, p.ty, node.name, input.name, input.ty
                        ))),
                        None => errors.push(GraphError::BadEdge(format!(
                            "{} has no output `{}`",
                            src.name,
                            one.weight().from_port
                        ))),
                    }
                }
                _ => errors.push(GraphError::BadEdge(format!(
                    "{}.{} is fed {} times",
                    node.name,
                    input.name,
                    feeds.len()
                ))),
            }
        }
    }
    // Cycles, ignoring the loop-back edges: one per strongly connected
    // component that holds one, so that two separate cycles are both
    // reported (in the order of their first node).
    let mut filtered = graph.clone();
    filtered.retain_edges(|g, e| !g[e].loop_back);
    let mut components: Vec<Vec<NodeIndex>> = petgraph::algo::tarjan_scc(&filtered)
        .into_iter()
        .filter(|c| c.len() > 1 || filtered.contains_edge(c[0], c[0]))
        .map(|mut c| {
            c.sort();
            c
        })
        .collect();
    components.sort();
    for component in components {
        errors.push(GraphError::Cycle(cycle_through(&filtered, &component)));
    }
    errors
}

/// The names along one cycle of a strongly connected `component`, from its
/// first node back to it.
fn cycle_through(graph: &StableDiGraph<Node, Edge>, component: &[NodeIndex]) -> Vec<String> {
    let start = component[0];
    let mut path = vec![graph[start].name.clone()];
    let mut cur = start;
    let mut seen = vec![start];
    'walk: loop {
        let mut next_nodes: Vec<NodeIndex> = graph.neighbors(cur).collect();
        next_nodes.sort();
        for next in next_nodes {
            if next == start {
                path.push(graph[start].name.clone());
                break 'walk;
            }
            if component.contains(&next)
                && !seen.contains(&next)
                && petgraph::algo::has_path_connecting(graph, next, start, None)
            {
                seen.push(next);
                path.push(graph[next].name.clone());
                cur = next;
                continue 'walk;
            }
        }
        break;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{port, Graph, Node, Op, PortType};
    use std::collections::BTreeMap;

    fn node(name: &str, inputs: &[&str], outputs: &[&str]) -> Node {
        Node {
            name: name.into(),
            op: Op::Generate,
            stage_loop: None,
            params: BTreeMap::new(),
            inputs: inputs.iter().map(|p| port(p, PortType::Model)).collect(),
            outputs: outputs.iter().map(|p| port(p, PortType::Model)).collect(),
        }
    }

    #[test]
    fn dangling_inputs_are_reported() {
        let mut g = Graph::new("h".into());
        g.add(node("a", &["in"], &["out"]));
        assert_eq!(
            validate(&g),
            vec![GraphError::Dangling {
                node: "a".into(),
                port: "in".into()
            }]
        );
    }

    #[test]
    fn loop_back_edges_may_close_cycles_but_others_may_not() {
        let mut g = Graph::new("h".into());
        let src = g.add(node("src", &[], &["out"]));
        let a = g.add(node("a", &["in"], &["out"]));
        g.connect(src, "out", a, "in");
        g.loop_back(a, "out", a, "in");
        assert!(validate(&g).is_empty());

        let b = g.add(node("b", &["in"], &["out"]));
        let c = g.add(node("c", &["in"], &["out"]));
        g.connect(b, "out", c, "in");
        g.connect(c, "out", b, "in");
        let errors = validate(&g);
        assert!(
            errors
                .iter()
                .any(|e| matches!(e, GraphError::Cycle(path) if path.len() == 3)),
            "{errors:?}"
        );
    }

    #[test]
    fn each_separate_cycle_is_reported_once() {
        let mut g = Graph::new("h".into());
        let names = ["a", "b", "c", "d", "e"];
        let n: Vec<_> = names
            .iter()
            .map(|name| g.add(node(name, &["in", "in2"], &["out"])))
            .collect();
        // a → b → a, and c → d → e → c with a chord d → c (one component).
        g.connect(n[0], "out", n[1], "in");
        g.connect(n[1], "out", n[0], "in");
        g.connect(n[2], "out", n[3], "in");
        g.connect(n[3], "out", n[4], "in");
        g.connect(n[4], "out", n[2], "in");
        g.connect(n[3], "out", n[2], "in2");
        let cycles: Vec<Vec<String>> = validate(&g)
            .into_iter()
            .filter_map(|e| match e {
                GraphError::Cycle(path) => Some(path),
                _ => None,
            })
            .collect();
        assert_eq!(cycles.len(), 2, "{cycles:?}");
        assert_eq!(cycles[0], ["a", "b", "a"]);
        assert_eq!(cycles[1].first().map(String::as_str), Some("c"));
        assert_eq!(cycles[1].last().map(String::as_str), Some("c"));
    }

    #[test]
    fn mismatched_port_types_are_reported() {
        let mut g = Graph::new("h".into());
        let mut a = node("a", &[], &[]);
        a.outputs.push(port("rows", PortType::Rows));
        let a = g.add(a);
        let b = g.add(node("b", &["in"], &[]));
        g.connect(a, "rows", b, "in");
        assert!(matches!(validate(&g).as_slice(), [GraphError::BadEdge(_)]));
    }
}
