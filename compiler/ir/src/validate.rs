//! Graph validation: cycles outside step loops, dangling or doubly fed
//! inputs, and type mismatches across edges.

use crate::Graph;
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
    // Cycles, ignoring the loop-back edges.
    let mut filtered = graph.clone();
    filtered.retain_edges(|g, e| !g[e].loop_back);
    if let Err(cycle) = petgraph::algo::toposort(&filtered, None) {
        let start = cycle.node_id();
        let mut path = vec![graph[start].name.clone()];
        let mut cur = start;
        // Walk one cycle through `start`.
        let mut seen = vec![start];
        'walk: loop {
            for next in filtered.neighbors(cur) {
                if next == start {
                    path.push(graph[start].name.clone());
                    break 'walk;
                }
                if !seen.contains(&next)
                    && petgraph::algo::has_path_connecting(&filtered, next, start, None)
                {
                    seen.push(next);
                    path.push(graph[next].name.clone());
                    cur = next;
                    continue 'walk;
                }
            }
            break;
        }
        errors.push(GraphError::Cycle(path));
    }
    errors
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
