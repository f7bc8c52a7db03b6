//! `saferc lsp`: a language server over stdio (JSON-RPC with
//! `Content-Length` framing, `lsp-server` message types, no async runtime).
//!
//! Features: diagnostics on open and change (the same diagnostics as
//! `saferc check`, with codes and related locations; a change republishes
//! the open documents that read the changed one, and so does a file
//! changed on disk, as the client's file watchers tell and as the server
//! finds by looking each second), hover on keys (doc,
//! type, default, range from the schema table) and names (kind and doc
//! comment), completion of keys in the enclosing block and of declared
//! names, go-to-definition across `use`d files (standard library files are
//! written to a cache folder so that editors can open them), formatting
//! (`saferc fmt`), document symbols, quick fixes (code actions that apply a
//! diagnostic's replacement: a misspelt key or name, a renamed key).
//! Malformed input gets a JSON-RPC error
//! response and the server keeps running.

mod features;
mod transport;

use lsp_server::{Message, Notification, Request, Response};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

/// The diagnostics the server would publish for `text` at `uri` (the work
/// done on every change; benchmarked by `benches/parse_check.rs`).
pub fn diagnostics_for(uri: &str, text: &str) -> Vec<Value> {
    features::Document::analyze(uri, text).diagnostics()
}

/// Whether a request's `position` is a line and a character, each a
/// whole number from 0, as the protocol's `uinteger`s are.
fn has_position(params: &Value) -> bool {
    let position = &params["position"];
    position["line"].as_u64().is_some() && position["character"].as_u64().is_some()
}

/// How often the server looks at the files open documents read (also
/// with the client's file watchers, which may not cover them all).
const DISK_POLL: Duration = Duration::from_secs(1);

/// Runs the server until `exit` or the end of `input`; returns the process
/// exit code (0 after a `shutdown` request, 1 otherwise, as the protocol
/// asks). Messages are read on a thread of their own, so that between them
/// the server can look for files changed on disk ([`Server::poll_disk`]).
pub fn serve(input: impl BufRead + Send + 'static, output: &mut impl Write) -> i32 {
    let (sender, messages) = mpsc::sync_channel(16);
    std::thread::spawn(move || {
        let mut input = input;
        loop {
            let message = transport::read(&mut input);
            let last = !matches!(message, Ok(Some(_)));
            if sender.send(message).is_err() || last {
                return;
            }
        }
    });
    let mut server = Server::default();
    // A deadline, not a quiet second: a client sending messages without a
    // pause (typing, hovering) would otherwise hold the look off.
    let mut next_poll = Instant::now() + DISK_POLL;
    loop {
        match messages.recv_timeout(next_poll.saturating_duration_since(Instant::now())) {
            Ok(Ok(Some(Ok(message)))) => {
                if let Some(code) = server.handle(message, output) {
                    return code;
                }
            }
            Ok(Ok(Some(Err(error)))) => transport::write_error(output, &error),
            Ok(Ok(None) | Err(_)) | Err(RecvTimeoutError::Disconnected) => return 1,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= next_poll {
            server.poll_disk(output);
            next_poll = Instant::now() + DISK_POLL;
        }
    }
}

/// The canonical path of a `file:` URI, as open buffers and a document's
/// reads are keyed ([`crate::semantic::loader::canonical_path`]).
fn canonical_path_of(uri: &str) -> Option<PathBuf> {
    features::uri_to_path(uri).map(|p| crate::semantic::loader::canonical_path(&p))
}

/// JSON-RPC error codes of the protocol's life cycle.
const SERVER_NOT_INITIALIZED: i32 = -32002;
const INVALID_REQUEST: i32 = -32600;

#[derive(Default)]
struct Server {
    documents: HashMap<String, String>,
    /// What each open document's last analysis read: the files it
    /// imports (and `safer.toml`), and whether an import was not found.
    /// A change republishes only the documents that read the changed one
    /// (each change re-analysed every open document).
    reads: HashMap<String, (BTreeSet<PathBuf>, bool)>,
    /// `initialize` has been answered: until then only `initialize` and
    /// `exit` are taken (the protocol's order).
    initialized: bool,
    /// `shutdown` has been answered: from then on only `exit` is.
    shutdown: bool,
    /// The client registers file watchers on request
    /// (`workspace.didChangeWatchedFiles.dynamicRegistration`): asked to
    /// at `initialized`, it tells of `.safer` files and `safer.toml`
    /// changed on disk, and the open documents that read them are
    /// checked again. [`Server::poll_disk`] looks as well.
    can_watch_files: bool,
    /// For each open document, each file its last analysis read, as it was
    /// on disk then (modification time and length; `None`: not there).
    /// Kept per document: an analysis of one must not mark a change as
    /// seen by the others.
    stamps: HashMap<String, BTreeMap<PathBuf, Stamp>>,
    /// The diagnostics last published for each open document.
    published: HashMap<String, Value>,
    /// The last text of each open document that parsed: while the text
    /// does not (a statement half typed), hover and go-to-definition of
    /// names read that text's analysis.
    parsed: HashMap<String, String>,
}

/// A file's modification time and length, or `None` where it cannot be
/// read.
type Stamp = Option<(SystemTime, u64)>;

/// The [`Stamp`] of `path` now.
fn disk_stamp(path: &std::path::Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Server {
    /// Handles one message; `Some(code)` ends the loop.
    fn handle(&mut self, message: Message, out: &mut impl Write) -> Option<i32> {
        match message {
            Message::Request(req) => {
                let response = self.request(req);
                transport::write(out, &Message::Response(response));
                None
            }
            Message::Notification(n) => self.notification(n, out),
            Message::Response(_) => None,
        }
    }

    fn request(&mut self, req: Request) -> Response {
        let Request { id, method, params } = req;
        let result: Result<Value, (i32, String)> = match method.as_str() {
            _ if self.shutdown => Err((
                INVALID_REQUEST,
                format!("`{method}` after `shutdown`: only `exit` is taken now"),
            )),
            "initialize" if self.initialized => {
                Err((INVALID_REQUEST, "the server is already initialized".into()))
            }
            "initialize" => {
                self.initialized = true;
                self.can_watch_files = params["capabilities"]["workspace"]["didChangeWatchedFiles"]
                    ["dynamicRegistration"]
                    == true;
                Ok(json!({
                "capabilities": {
                    "textDocumentSync": 1,
                    "hoverProvider": true,
                    "completionProvider": { "triggerCharacters": ["."] },
                    "definitionProvider": true,
                    "documentFormattingProvider": true,
                    "documentSymbolProvider": true,
                    "codeActionProvider": { "codeActionKinds": ["quickfix"] },
                },
                "serverInfo": { "name": "saferc", "version": env!("CARGO_PKG_VERSION") },
                }))
            }
            _ if !self.initialized => Err((
                SERVER_NOT_INITIALIZED,
                format!("`{method}` before `initialize`"),
            )),
            "shutdown" => {
                self.shutdown = true;
                Ok(Value::Null)
            }
            // Hover and definition read names from the last text that
            // parsed while this one does not; the others need no names.
            "textDocument/hover" | "textDocument/completion" | "textDocument/definition"
                if !has_position(&params) =>
            {
                Err((
                    -32602,
                    "`position` must hold `line` and `character`, whole numbers from 0".into(),
                ))
            }
            "textDocument/hover" => self.with_document(&params, features::hover, true),
            "textDocument/completion" => self.with_document(&params, features::completion, false),
            "textDocument/definition" => self.with_document(&params, features::definition, true),
            "textDocument/formatting" => self.with_document(&params, features::formatting, false),
            "textDocument/documentSymbol" => self.with_document(&params, features::symbols, false),
            "textDocument/codeAction" => self.with_document(&params, features::code_actions, false),
            other => Err((-32601, format!("method not supported: {other}"))),
        };
        match result {
            Ok(value) => Response::new_ok(id, value),
            Err((code, message)) => Response::new_err(id, code, message),
        }
    }

    fn with_document(
        &self,
        params: &Value,
        f: fn(&features::Document, &Value) -> Value,
        reads_last_parsed: bool,
    ) -> Result<Value, (i32, String)> {
        let uri = params["textDocument"]["uri"]
            .as_str()
            .ok_or((-32602, "missing textDocument.uri".to_string()))?;
        let text = self
            .documents
            .get(uri)
            .ok_or((-32602, format!("document not open: {uri}")))?;
        let buffers = self.open_buffers();
        let mut doc = features::Document::analyze_among(uri, text, &buffers);
        let wanted = reads_last_parsed && !doc.parses();
        if let Some(previous) = self.parsed.get(uri).filter(|_| wanted) {
            doc = doc.with_last_parsed(features::Document::analyze_among(uri, previous, &buffers));
        }
        Ok(f(&doc, params))
    }

    fn notification(&mut self, n: Notification, out: &mut impl Write) -> Option<i32> {
        let uri = n.params["textDocument"]["uri"].as_str().map(str::to_string);
        match n.method.as_str() {
            "exit" => return Some(if self.shutdown { 0 } else { 1 }),
            // Before `initialize` and after `shutdown`, notifications other
            // than `exit` are dropped (the protocol's order).
            _ if !self.initialized || self.shutdown => {}
            "initialized" if self.can_watch_files => {
                let register = Request::new(
                    lsp_server::RequestId::from("saferc-watch-files".to_string()),
                    "client/registerCapability".into(),
                    json!({ "registrations": [{
                        "id": "saferc-watch-files",
                        "method": "workspace/didChangeWatchedFiles",
                        "registerOptions": { "watchers": [
                            { "globPattern": "**/*.safer" },
                            { "globPattern": "**/safer.toml" },
                        ] },
                    }] }),
                );
                transport::write(out, &Message::Request(register));
            }
            "workspace/didChangeWatchedFiles" => {
                let changes = n.params["changes"].as_array().cloned().unwrap_or_default();
                let changed: Vec<PathBuf> = changes
                    .iter()
                    .filter_map(|c| canonical_path_of(c["uri"].as_str()?))
                    .collect();
                // A file created or deleted (type 1 or 3) can change what an
                // import or a project resolves to (a `safer.toml` made where
                // there was none, a file beside the importer taking over
                // one found under an import root): every open document.
                let moved = changes.iter().any(|c| c["type"] != 2);
                let readers = match moved {
                    true => {
                        let mut all: Vec<String> = self.documents.keys().cloned().collect();
                        all.sort_unstable();
                        all
                    }
                    false => self.readers_of(&changed, None),
                };
                let buffers = self.open_buffers();
                for uri in readers {
                    self.publish(&uri, &buffers, out);
                }
            }
            "textDocument/didOpen" => {
                if let (Some(uri), Some(text)) = (uri, n.params["textDocument"]["text"].as_str()) {
                    self.documents.insert(uri.clone(), text.to_string());
                    self.publish_after_change(&uri, out);
                }
            }
            "textDocument/didChange" => {
                let text = n.params["contentChanges"]
                    .as_array()
                    .and_then(|c| c.last())
                    .and_then(|c| c["text"].as_str())
                    .map(str::to_string);
                // A document not open (never, or closed) is not made one.
                if let (Some(uri), Some(text)) = (uri, text) {
                    if let Some(held) = self.documents.get_mut(&uri) {
                        *held = text;
                        self.publish_after_change(&uri, out);
                    }
                }
            }
            "textDocument/didClose" => {
                if let Some(uri) = uri {
                    self.documents.remove(&uri);
                    self.reads.remove(&uri);
                    self.published.remove(&uri);
                    self.stamps.remove(&uri);
                    self.parsed.remove(&uri);
                    let clear = json!({ "uri": uri, "diagnostics": [] });
                    transport::write(
                        out,
                        &Message::Notification(Notification::new(
                            "textDocument/publishDiagnostics".into(),
                            clear,
                        )),
                    );
                    // The documents importing it read it from disk again.
                    self.publish_after_change(&uri, out);
                }
            }
            _ => {}
        }
        None
    }

    /// The texts of the open documents, by canonical path, for the loader
    /// to read instead of the files on disk (a new file not yet saved
    /// included).
    fn open_buffers(&self) -> BTreeMap<PathBuf, String> {
        self.documents
            .iter()
            .filter_map(|(uri, text)| Some((canonical_path_of(uri)?, text.clone())))
            .collect()
    }

    /// Publishes the diagnostics of `changed` (while it is open), then of
    /// every other open document that read it (imports it, directly or
    /// not, or is in the project of a changed `safer.toml`) or has an
    /// import not found. The open texts are gathered once for all of them.
    fn publish_after_change(&mut self, changed: &str, out: &mut impl Write) {
        let buffers = self.open_buffers();
        let changed_path: Vec<PathBuf> = canonical_path_of(changed).into_iter().collect();
        let others = self.readers_of(&changed_path, Some(changed));
        for uri in std::iter::once(changed.to_string()).chain(others) {
            self.publish(&uri, &buffers, out);
        }
    }

    /// The open documents (but `except`) whose last analysis read one of
    /// `files` or found an import missing, in a stable order.
    fn readers_of(&self, files: &[PathBuf], except: Option<&str>) -> Vec<String> {
        let mut readers: Vec<String> = self
            .documents
            .keys()
            .filter(|o| Some(o.as_str()) != except)
            .filter(|o| {
                self.reads.get(*o).is_none_or(|(read, unresolved)| {
                    *unresolved || files.iter().any(|f| read.contains(f))
                })
            })
            .cloned()
            .collect();
        readers.sort_unstable();
        readers
    }

    /// Called while no message comes, each second, with or without the
    /// client's file watchers (a client may refuse or never answer their
    /// registration, and watches only its workspace, not the shared
    /// rubrics of an import root such as `../shared`): the open documents
    /// that read a file changed on disk since their
    /// analysis (an imported rubric edited in another program, a
    /// `safer.toml` rewritten, a file deleted), or that have an import not
    /// found (the file may have been made since), are analysed again, and
    /// their diagnostics published where they changed.
    fn poll_disk(&mut self, out: &mut impl Write) {
        if self.shutdown || self.documents.is_empty() {
            return;
        }
        let mut stale: Vec<String> = self
            .reads
            .iter()
            .filter(|(uri, (_, unresolved))| {
                let seen = self.stamps.get(*uri);
                self.documents.contains_key(*uri)
                    && (*unresolved
                        || seen.is_none_or(|files| {
                            files.iter().any(|(file, stamp)| *stamp != disk_stamp(file))
                        }))
            })
            .map(|(uri, _)| uri.clone())
            .collect();
        if stale.is_empty() {
            return;
        }
        stale.sort_unstable();
        let buffers = self.open_buffers();
        for uri in stale {
            let before = self.published.get(&uri).cloned();
            let Some(diagnostics) = self.analyze(&uri, &buffers) else {
                continue;
            };
            if before.as_ref() != Some(&diagnostics) {
                self.send_diagnostics(&uri, diagnostics, out);
            }
        }
    }

    /// Analyses open document `uri` and keeps what it read, each file with
    /// its stamp from before the analysis (a file changed while it was read
    /// is then found changed by the next look); its diagnostics.
    fn analyze(&mut self, uri: &str, buffers: &BTreeMap<PathBuf, String>) -> Option<Value> {
        let text = self.documents.get(uri)?;
        // The files the last analysis read are most likely those this one
        // reads: stamped before it.
        let before: BTreeMap<PathBuf, Stamp> = self
            .reads
            .get(uri)
            .map(|(read, _)| read.iter().map(|f| (f.clone(), disk_stamp(f))).collect())
            .unwrap_or_default();
        let doc = features::Document::analyze_among(uri, text, buffers);
        let diagnostics = json!(doc.diagnostics());
        let reads = doc.dependencies();
        let mut stamps: BTreeMap<PathBuf, Stamp> = reads
            .0
            .iter()
            .map(|f| {
                (
                    f.clone(),
                    before.get(f).copied().unwrap_or_else(|| disk_stamp(f)),
                )
            })
            .collect();
        // Where a `safer.toml` made since would become the document's
        // project: each folder from the document's up to the project it
        // has (or to the top), stamped absent.
        if let Some(path) = canonical_path_of(uri) {
            for dir in path.ancestors().skip(1) {
                let manifest = dir.join(crate::project::MANIFEST);
                let stamp = disk_stamp(&manifest);
                stamps.entry(manifest).or_insert(stamp);
                if stamp.is_some() {
                    break;
                }
            }
        }
        if doc.parses() {
            let text = text.clone();
            self.parsed.insert(uri.to_string(), text);
        }
        self.stamps.insert(uri.to_string(), stamps);
        self.reads.insert(uri.to_string(), reads);
        Some(diagnostics)
    }

    fn publish(&mut self, uri: &str, buffers: &BTreeMap<PathBuf, String>, out: &mut impl Write) {
        if let Some(diagnostics) = self.analyze(uri, buffers) {
            self.send_diagnostics(uri, diagnostics, out);
        }
    }

    fn send_diagnostics(&mut self, uri: &str, diagnostics: Value, out: &mut impl Write) {
        self.published.insert(uri.to_string(), diagnostics.clone());
        let params = json!({ "uri": uri, "diagnostics": diagnostics });
        transport::write(
            out,
            &Message::Notification(Notification::new(
                "textDocument/publishDiagnostics".into(),
                params,
            )),
        );
    }
}
