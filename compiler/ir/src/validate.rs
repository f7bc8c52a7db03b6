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
