//! The dataflow graph of a compiled pipeline.
//!
//! The compiler produces a [`Graph`]; the runtime consumes it. Nodes are
//! operations (`Source`, `Generate`, `Update`, ...) with typed ports; edges
//! connect an output port to an input port. The training step loop of each
//! stage is explicit: its nodes carry the stage name in [`Node::stage_loop`]
//! and one edge per stage is marked [`Edge::loop_back`] (the updated policy
//! feeding the next step's generation); every other edge must keep the
//! graph acyclic. Node names come from the source (`train.safer_grpo.generate`),
//! so printed graphs are stable.

mod credentials;
pub mod plan;
mod print;
mod validate;

pub use credentials::{mask_urls_in, masked_url};
pub use print::{to_dot, to_mermaid, to_text};
pub use validate::{validate, GraphError};

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use serde::Serialize;
use std::collections::BTreeMap;

/// The operations of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Op {
    /// Load a model from a directory.
    LoadModel,
    /// Freeze a copy of a model (the reference).
    FreezeCopy,
    /// Read rows from a file.
    Source,
    /// Drop rows by conditions.
    Filter,
    /// Rollout-based curation (QI-Box).
    Curate,
    /// Resample to balance a field.
    Balance,
    /// Drop rows that appear in other splits.
    Dedup,
    /// Assign rows to named splits.
    Split,
    /// A judge (rules, local model, HTTP endpoint).
    Judge,
    /// A rubric bound to its judge.
    Score,
    /// Draw the next batch of prompts.
    Batch,
    /// Sample completions.
    Generate,
    /// Reflect on and correct unsafe completions.
    Reflect,
    /// Group advantages (with dynamic sampling and the cost constraint).
    Advantage,
    /// Log-probs of the completions under the reference model.
    RefLogprob,
    /// A policy update (GRPO or SFT).
    Update,
    /// Write checkpoints.
    Checkpoint,
    /// Write metrics.
    Metrics,
    /// Summarise a stage or an evaluation.
    Report,
}

/// What flows through a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PortType {
    /// Model weights.
    Model,
    /// Dataset rows.
    Rows,
    /// A batch of prompts.
    Prompts,
    /// Sampled completions with log-probs.
    Completions,
    /// Per-completion scores.
    Scores,
    /// A scoring function (rubric with judge).
    Scorer,
    /// A judge.
    Judge,
    /// Per-completion advantages.
    Advantages,
    /// Per-token log-probs.
    LogProbs,
    /// Step metrics.
    Metrics,
}

/// A named, typed port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// The port's name.
    pub name: String,
    /// What flows through it.
    pub ty: PortType,
}

/// A node of the graph.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// A stable name derived from the source (`train.safer_grpo.generate`).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// The stage whose step loop this node belongs to, if any.
    pub stage_loop: Option<String>,
    /// Parameters (settings of the declaration that produced the node).
    pub params: BTreeMap<String, serde_json::Value>,
    /// Input ports.
    pub inputs: Vec<Port>,
    /// Output ports.
    pub outputs: Vec<Port>,
}

/// An edge from an output port to an input port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// The output port.
    pub from_port: String,
    /// The input port.
    pub to_port: String,
    /// True for the one back edge of a stage's step loop.
    pub loop_back: bool,
}

/// A compiled pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct Graph {
    /// The nodes and edges.
    pub graph: StableDiGraph<Node, Edge>,
    /// Content hash of the resolved program.
    pub program_hash: String,
    /// Content hashes of the rubrics used, by qualified name (for pins).
    pub rubric_hashes: BTreeMap<String, String>,
}

impl Graph {
    /// An empty graph.
    pub fn new(program_hash: String) -> Self {
        Graph {
            graph: StableDiGraph::new(),
            program_hash,
            rubric_hashes: BTreeMap::new(),
        }
    }

    /// Adds a node and returns its index.
    pub fn add(&mut self, node: Node) -> NodeIndex {
        self.graph.add_node(node)
    }

    /// Finds a node by name.
    pub fn find(&self, name: &str) -> Option<NodeIndex> {
        self.graph
            .node_indices()
            .find(|&i| self.graph[i].name == name)
    }

    /// Connects `from.from_port` to `to.to_port`.
    pub fn connect(&mut self, from: NodeIndex, from_port: &str, to: NodeIndex, to_port: &str) {
        self.edge(from, from_port, to, to_port, false);
    }

    /// Adds the back edge of a step loop.
    pub fn loop_back(&mut self, from: NodeIndex, from_port: &str, to: NodeIndex, to_port: &str) {
        self.edge(from, from_port, to, to_port, true);
    }

    fn edge(
        &mut self,
        from: NodeIndex,
        from_port: &str,
        to: NodeIndex,
        to_port: &str,
        loop_back: bool,
    ) {
        self.graph.add_edge(
            from,
            to,
            Edge {
                from_port: from_port.into(),
                to_port: to_port.into(),
                loop_back,
            },
        );
    }
}

/// Shorthand for a port.
pub fn port(name: &str, ty: PortType) -> Port {
    Port {
        name: name.into(),
        ty,
    }
}
