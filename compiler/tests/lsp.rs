//! `saferc lsp` driven over stdio with JSON-RPC: initialize, diagnostics for
//! a bad file (code and range), hover, completion, definition into a
//! standard-library file, formatting, symbols, quick fixes, malformed input answered with
//! an error, shutdown and exit; requests out of the protocol's order.

#![allow(clippy::panic)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

struct Client {
    child: Child,
    stdin: ChildStdin,
    messages: Receiver<Value>,
}

impl Client {
    fn start() -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_saferc"))
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("Content-Length: ") {
                        length = v.parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Client {
            child,
            stdin,
            messages: rx,
        }
    }

    fn raw(&mut self, body: &str) {
        let _ = write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len());
        let _ = self.stdin.flush();
    }

    fn send(&mut self, message: Value) {
        self.raw(&message.to_string());
    }

    fn request(&mut self, id: i64, method: &str, params: Value) -> Value {
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        self.wait(|m| m["id"] == id)
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    /// Sends `exit` and waits for the server to end; its exit code.
    fn exit(mut self) -> Option<i32> {
        self.notify("exit", Value::Null);
        let status = self.child.wait().unwrap_or_else(|e| panic!("{e}"));
        status.code()
    }

    /// Every message up to and including the first that `pred` holds for.
    fn collect_until(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            match self.messages.recv_timeout(Duration::from_secs(20)) {
                Ok(m) => {
                    let last = pred(&m);
                    seen.push(m);
                    if last {
                        return seen;
                    }
                }
                Err(e) => panic!("no answer from saferc lsp: {e}"),
            }
        }
    }

    fn wait(&self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.messages.recv_timeout(Duration::from_secs(20)) {
                Ok(m) if pred(&m) => return m,
                Ok(_) => {}
                Err(e) => panic!("no answer from saferc lsp: {e}"),
            }
        }
    }
}

fn uri(path: &std::path::Path) -> String {
    format!("file://{}", path.display())
}

#[test]
fn lsp_session() {
    let dir = std::env::temp_dir().join(format!("saferc-lsp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("p.safer");
    let good = "use \"std/rubrics/safety.safer\"\n\nmodel policy {\n  arch    = tiny_vlm\n  weights = \"w\"\n}\n\nrollout r { group = 8, max_tokens = 64 tokens }\n";
    let bad = "rollout r {\n  temprature = 1.0\n  max_tokens = 64 tokens\n}\n";

    let mut c = Client::start();
    let init = c.request(1, "initialize", json!({ "capabilities": {} }));
    assert_eq!(init["result"]["capabilities"]["hoverProvider"], true);
    assert_eq!(
        init["result"]["capabilities"]["codeActionProvider"]["codeActionKinds"],
        json!(["quickfix"])
    );
    c.notify("initialized", json!({}));

    // Diagnostics for a bad file: code and range.
    c.notify("textDocument/didOpen", json!({ "textDocument": { "uri": uri(&file), "languageId": "safer", "version": 1, "text": bad } }));
    let diags = c.wait(|m| m["method"] == "textDocument/publishDiagnostics");
    let d = &diags["params"]["diagnostics"][0];
    assert_eq!(d["code"], "E0205", "{diags}");
    assert_eq!(d["range"]["start"], json!({ "line": 1, "character": 2 }));
    assert_eq!(d["range"]["end"], json!({ "line": 1, "character": 12 }));
    assert!(d["message"]
        .as_str()
        .unwrap_or("")
        .contains("did you mean `temperature`?"));

    // The quick fix at the misspelt key, and none elsewhere.
    let actions = c.request(
        10,
        "textDocument/codeAction",
        json!({ "textDocument": { "uri": uri(&file) }, "range": { "start": { "line": 1, "character": 5 }, "end": { "line": 1, "character": 5 } }, "context": { "diagnostics": [] } }),
    );
    let action = &actions["result"][0];
    assert_eq!(
        action["title"], "Replace `temprature` with `temperature`",
        "{actions}"
    );
    assert_eq!(action["kind"], "quickfix");
    assert_eq!(action["isPreferred"], true);
    assert_eq!(action["diagnostics"][0]["code"], "E0205");
    assert_eq!(
        action["edit"]["changes"][uri(&file)],
        json!([{ "range": { "start": { "line": 1, "character": 2 }, "end": { "line": 1, "character": 12 } }, "newText": "temperature" }])
    );
    let elsewhere = c.request(
        11,
        "textDocument/codeAction",
        json!({ "textDocument": { "uri": uri(&file) }, "range": { "start": { "line": 2, "character": 0 }, "end": { "line": 2, "character": 3 } }, "context": { "diagnostics": [] } }),
    );
    assert_eq!(elsewhere["result"], json!([]), "{elsewhere}");
    let refactors_only = c.request(
        12,
        "textDocument/codeAction",
        json!({ "textDocument": { "uri": uri(&file) }, "range": { "start": { "line": 1, "character": 5 }, "end": { "line": 1, "character": 5 } }, "context": { "diagnostics": [], "only": ["refactor"] } }),
    );
    assert_eq!(refactors_only["result"], json!([]), "{refactors_only}");

    // A fix clears them.
    c.notify("textDocument/didChange", json!({ "textDocument": { "uri": uri(&file), "version": 2 }, "contentChanges": [{ "text": good }] }));
    let diags = c.wait(|m| m["method"] == "textDocument/publishDiagnostics");
    assert_eq!(diags["params"]["diagnostics"], json!([]), "{diags}");

    // Hover on a key: schema doc.
    let hover = c.request(2, "textDocument/hover", json!({ "textDocument": { "uri": uri(&file) }, "position": { "line": 7, "character": 13 } }));
    let text = hover["result"]["contents"]["value"].as_str().unwrap_or("");
    assert!(
        text.contains("`rollout.group`")
            && text.contains("default: 8")
            && text.contains("Completions sampled per prompt"),
        "{hover}"
    );

    // Completion inside a block: its keys.
    let completion = c.request(
        3,
        "textDocument/completion",
        json!({ "textDocument": { "uri": uri(&file) }, "position": { "line": 4, "character": 2 } }),
    );
    let labels: Vec<&str> = completion["result"]["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["label"].as_str())
        .collect();
    assert!(
        labels.contains(&"dtype") && labels.contains(&"context") && labels.contains(&"policy"),
        "{labels:?}"
    );

    // Definition of a name declared in the standard library.
    let with_ref = format!("{good}\ntrain t {{\n  policy = policy\n  data = d\n  reward = safety_rubric\n  sft {{ lr = 1e-4 }}\n}}\ndataset d {{ source = jsonl(\"d.jsonl\") }}\n");
    c.notify("textDocument/didChange", json!({ "textDocument": { "uri": uri(&file), "version": 3 }, "contentChanges": [{ "text": with_ref }] }));
    let _ = c.wait(|m| m["method"] == "textDocument/publishDiagnostics");
    let def = c.request(4, "textDocument/definition", json!({ "textDocument": { "uri": uri(&file) }, "position": { "line": 12, "character": 14 } }));
    let target = def["result"]["uri"].as_str().unwrap_or("");
    assert!(target.ends_with("std/rubrics/safety.safer"), "{def}");
    let on_disk = target.trim_start_matches("file://");
    assert!(std::fs::read_to_string(on_disk)
        .unwrap_or_default()
        .contains("rubric safety_rubric"));
    assert_eq!(def["result"]["range"]["start"]["line"], 4, "{def}");

    // Formatting: one edit with the formatted text.
    c.notify("textDocument/didChange", json!({ "textDocument": { "uri": uri(&file), "version": 4 }, "contentChanges": [{ "text": "model m{arch=tiny_vlm,weights=\"w\"}\n" }] }));
    let _ = c.wait(|m| m["method"] == "textDocument/publishDiagnostics");
    let fmt = c.request(5, "textDocument/formatting", json!({ "textDocument": { "uri": uri(&file) }, "options": { "tabSize": 2, "insertSpaces": true } }));
    assert_eq!(
        fmt["result"][0]["newText"], "model m { arch = tiny_vlm, weights = \"w\" }\n",
        "{fmt}"
    );
    let symbols = c.request(
        6,
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": uri(&file) } }),
    );
    assert_eq!(symbols["result"][0]["name"], "m");

    // Malformed input: an error response, and the server keeps going.
    c.raw("{ this is not json");
    let err = c.wait(|m| m.get("error").is_some() && m["id"].is_null());
    assert_eq!(err["error"]["code"], -32700);
    let unknown = c.request(7, "textDocument/unknownThing", json!({}));
    assert_eq!(unknown["error"]["code"], -32601);
    let not_open = c.request(8, "textDocument/hover", json!({ "textDocument": { "uri": "file:///nope.safer" }, "position": { "line": 0, "character": 0 } }));
    assert_eq!(not_open["error"]["code"], -32602);
    // A position that is not two whole numbers from 0 is invalid, not 0:0.
    for (id, position) in [
        (10, json!({ "line": -1, "character": 0 })),
        (11, json!({ "line": 0.5, "character": 0 })),
        (12, Value::Null),
    ] {
        let bad = c.request(
            id,
            "textDocument/hover",
            json!({ "textDocument": { "uri": uri(&file) }, "position": position }),
        );
        assert_eq!(bad["error"]["code"], -32602, "{bad}");
    }

    let shutdown = c.request(9, "shutdown", Value::Null);
    assert!(shutdown["result"].is_null() && shutdown.get("error").is_none());
    assert_eq!(c.exit(), Some(0));
}

/// The protocol's order: before `initialize` requests are refused (-32002)
/// and notifications dropped; a second `initialize` and anything after
/// `shutdown` are invalid requests; `exit` ends the server either way.
#[test]
fn requests_out_of_the_protocol_s_order_are_refused() {
    let file = "file:///order.safer";
    let open = json!({ "textDocument": { "uri": file, "languageId": "safer", "version": 1, "text": "model m { arch = tiny_vlm }\n" } });
    let hover =
        json!({ "textDocument": { "uri": file }, "position": { "line": 0, "character": 0 } });

    let mut c = Client::start();
    let early = c.request(1, "textDocument/hover", hover.clone());
    assert_eq!(early["error"]["code"], -32002, "{early}");
    c.notify("textDocument/didOpen", open.clone());
    let init = c.request(2, "initialize", json!({ "capabilities": {} }));
    assert_eq!(init["result"]["capabilities"]["hoverProvider"], true);
    // The early `didOpen` was dropped: the document is not open.
    let dropped = c.request(3, "textDocument/hover", hover.clone());
    assert_eq!(dropped["error"]["code"], -32602, "{dropped}");
    let again = c.request(4, "initialize", json!({ "capabilities": {} }));
    assert_eq!(again["error"]["code"], -32600, "{again}");
    c.notify("textDocument/didOpen", open);
    let symbols = c.request(
        5,
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": file } }),
    );
    assert!(symbols.get("error").is_none(), "{symbols}");

    // An id the protocol does not allow is answered with an error that
    // carries it (a request of id 7.5 was read as a notification, and its
    // client waited for ever).
    for id in [json!(7.5), json!(4_294_967_296_i64), Value::Null] {
        c.send(
            json!({ "jsonrpc": "2.0", "id": id, "method": "textDocument/hover", "params": hover }),
        );
        let answer = c.wait(|m| m.get("error").is_some() && m["id"] == id);
        assert_eq!(answer["error"]["code"], -32600, "{answer}");
    }
    // A change to a document never opened does not open it.
    let never = "file:///never-opened.safer";
    c.notify("textDocument/didChange", json!({ "textDocument": { "uri": never, "version": 2 }, "contentChanges": [{ "text": "model m {}\n" }] }));
    let not_open = c.request(
        8,
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": never } }),
    );
    assert_eq!(not_open["error"]["code"], -32602, "{not_open}");

    let shutdown = c.request(6, "shutdown", Value::Null);
    assert!(shutdown.get("error").is_none(), "{shutdown}");
    let late = c.request(7, "textDocument/hover", hover);
    assert_eq!(late["error"]["code"], -32600, "{late}");
    assert_eq!(c.exit(), Some(0));

    // `exit` without `shutdown`, even before `initialize`: exit code 1.
    assert_eq!(Client::start().exit(), Some(1));
}

/// Hover on a completion part's field (`answer.length`) explains it (it
/// showed the built-in `length` scorer), and on a scorer shows its
/// parameters; completion after `answer.` offers the part's fields.
#[test]
fn hover_on_parts_and_scorer_signatures() {
    let file = "file:///scorers.safer";
    let text = "scorer brief(max: number = 40) = if answer.length <= max { 1 } else { 0 }\nrubric r {\n  criterion c weight 1 { scorer = brief(max = 20) }\n}\n";
    let mut c = Client::start();
    c.request(1, "initialize", json!({ "capabilities": {} }));
    c.notify("textDocument/didOpen", json!({ "textDocument": { "uri": file, "languageId": "safer", "version": 1, "text": text } }));
    let at = |line: usize, needle: &str| {
        let column = text
            .lines()
            .nth(line)
            .and_then(|l| l.find(needle))
            .unwrap_or(0);
        json!({ "textDocument": { "uri": file }, "position": { "line": line, "character": column + 1 } })
    };
    let part = c.request(2, "textDocument/hover", at(0, "length"));
    let shown = part["result"]["contents"]["value"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        shown.contains("`answer.length`") && shown.contains("words"),
        "{part}"
    );
    let scorer = c.request(3, "textDocument/hover", at(2, "brief"));
    let shown = scorer["result"]["contents"]["value"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(shown.contains("scorer brief(max: number = 40)"), "{scorer}");
    // Completion after `answer.` offers its fields only.
    let column = text.find("answer.").unwrap_or(0) + "answer.".len();
    let completion = c.request(
        5,
        "textDocument/completion",
        json!({ "textDocument": { "uri": file }, "position": { "line": 0, "character": column } }),
    );
    let labels: Vec<&str> = completion["result"]["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["label"].as_str())
        .collect();
    assert_eq!(labels, ["text", "length", "verdict"], "{completion}");
    c.request(4, "shutdown", Value::Null);
    c.exit();
}

/// An import of a document open in the editor reads its unsaved text, and
/// a change to it republishes the documents that import it (they kept the
/// file on disk's answers).
#[test]
fn open_documents_are_read_by_the_documents_that_import_them() {
    let dir = std::env::temp_dir().join(format!("saferc-lsp-open-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let house =
        "rubric house_rubric {\n  criterion safety weight 1 \"Safe.\" { scorer = refusal() }\n}\n";
    let pipeline = "use \"house.safer\"\n\nmodel m { arch = tiny_vlm, weights = \"w\" }\ndataset d { source = jsonl(\"d.jsonl\") }\neval e {\n  model  = m\n  data   = d\n  rubric = house_rubric\n}\n";
    std::fs::write(dir.join("house.safer"), house).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("p.safer"), pipeline).unwrap_or_else(|e| panic!("{e}"));
    let (house_uri, pipeline_uri) = (uri(&dir.join("house.safer")), uri(&dir.join("p.safer")));
    let mut c = Client::start();
    c.request(1, "initialize", json!({ "capabilities": {} }));
    c.notify("initialized", json!({}));
    let published_for = |c: &Client, target: &str| {
        let target = target.to_string();
        c.wait(move |m| {
            m["method"] == "textDocument/publishDiagnostics"
                && m["params"]["uri"] == target.as_str()
        })
    };
    c.notify("textDocument/didOpen", json!({ "textDocument": { "uri": pipeline_uri, "languageId": "safer", "version": 1, "text": pipeline } }));
    let clean = published_for(&c, &pipeline_uri);
    assert_eq!(clean["params"]["diagnostics"], json!([]), "{clean}");
    c.notify("textDocument/didOpen", json!({ "textDocument": { "uri": house_uri, "languageId": "safer", "version": 1, "text": house } }));
    // The rubric renamed in the editor, not saved.
    let renamed = house.replace("house_rubric", "house_rubric2");
    c.notify("textDocument/didChange", json!({ "textDocument": { "uri": house_uri, "version": 2 }, "contentChanges": [{ "text": renamed }] }));
    let broken = published_for(&c, &pipeline_uri);
    let broken = loop {
        // The didOpen of house.safer republished p.safer too: the one
        // after the change is the one that counts.
        if broken["params"]["diagnostics"] != json!([]) {
            break broken;
        }
        let next = published_for(&c, &pipeline_uri);
        if next["params"]["diagnostics"] != json!([]) {
            break next;
        }
    };
    assert_eq!(
        broken["params"]["diagnostics"][0]["code"], "E0203",
        "{broken}"
    );
    // Closed without saving: the file on disk counts again.
    c.notify(
        "textDocument/didClose",
        json!({ "textDocument": { "uri": house_uri } }),
    );
    let again = published_for(&c, &pipeline_uri);
    assert_eq!(again["params"]["diagnostics"], json!([]), "{again}");
    c.request(2, "shutdown", Value::Null);
    c.exit();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A change republishes the diagnostics of the documents that import the
/// changed one, not of every open document (each change re-analysed them
/// all: 0.8 s a keystroke with 100 open); a document whose import was not
/// found is republished when a file is opened, and an import of a new file
/// open in the editor but not yet saved reads its text.
#[test]
fn a_change_republishes_the_documents_that_read_it() {
    let dir = std::env::temp_dir().join(format!("saferc-lsp-reads-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let house =
        "rubric house_rubric {\n  criterion safety weight 1 \"Safe.\" { scorer = refusal() }\n}\n";
    let pipeline = |import: &str| {
        format!("use \"{import}\"\n\nmodel m {{ arch = tiny_vlm, weights = \"w\" }}\ndataset d {{ source = jsonl(\"d.jsonl\") }}\neval e {{\n  model  = m\n  data   = d\n  rubric = house_rubric\n}}\n")
    };
    std::fs::write(dir.join("house.safer"), house).unwrap_or_else(|e| panic!("{e}"));
    let [house_uri, importer, unrelated, waiting, new_file] =
        ["house.safer", "p.safer", "q.safer", "w.safer", "new.safer"].map(|f| uri(&dir.join(f)));
    let mut c = Client::start();
    let watching =
        json!({ "workspace": { "didChangeWatchedFiles": { "dynamicRegistration": true } } });
    c.request(1, "initialize", json!({ "capabilities": watching }));
    c.notify("initialized", json!({}));
    // The client is asked to watch the files the documents may read.
    let register = c.wait(|m| m["method"] == "client/registerCapability");
    assert_eq!(
        register["params"]["registrations"][0]["method"], "workspace/didChangeWatchedFiles",
        "{register}"
    );
    let open = |c: &mut Client, uri: &str, text: &str| {
        c.notify("textDocument/didOpen", json!({ "textDocument": { "uri": uri, "languageId": "safer", "version": 1, "text": text } }));
    };
    open(&mut c, &importer, &pipeline("house.safer"));
    open(
        &mut c,
        &unrelated,
        "model q { arch = tiny_vlm, weights = \"w\" }\n",
    );
    open(&mut c, &house_uri, house);
    c.request(
        2,
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": importer } }),
    );
    let published = |messages: &[Value]| -> Vec<String> {
        messages
            .iter()
            .filter(|m| m["method"] == "textDocument/publishDiagnostics")
            .filter_map(|m| m["params"]["uri"].as_str().map(str::to_string))
            .collect()
    };
    c.notify("textDocument/didChange", json!({ "textDocument": { "uri": house_uri, "version": 2 }, "contentChanges": [{ "text": house.replace("house_rubric", "renamed") }] }));
    // A request after the change: what was published before its answer
    // is what the change published.
    let symbols = |c: &mut Client, id: i64, uri: &str| {
        c.send(json!({ "jsonrpc": "2.0", "id": id, "method": "textDocument/documentSymbol", "params": { "textDocument": { "uri": uri } } }));
        c.collect_until(|m| m["id"] == id)
    };
    // The diagnostics last published for `uri` among `messages`.
    let last_for = |messages: &[Value], uri: &str| -> Value {
        messages
            .iter()
            .rfind(|m| m["params"]["uri"] == uri)
            .cloned()
            .unwrap_or_else(|| panic!("none for {uri}: {messages:?}"))["params"]["diagnostics"]
            .clone()
    };
    let after_change = published(&symbols(&mut c, 3, &importer));
    assert_eq!(after_change, [house_uri.clone(), importer.clone()]);

    // `new.safer` is not on disk: not found, until it is open.
    open(&mut c, &waiting, &pipeline("new.safer"));
    let missing = c.wait(|m| m["params"]["uri"] == waiting.as_str());
    assert_eq!(
        missing["params"]["diagnostics"][0]["code"], "E0200",
        "{missing}"
    );
    open(&mut c, &new_file, house);
    let messages = symbols(&mut c, 4, &waiting);
    assert_eq!(last_for(&messages, &waiting), json!([]));
    assert!(!published(&messages).contains(&unrelated), "{messages:?}");

    // Closed, then changed on disk: the watcher's news checks its readers
    // again (the importer kept its old diagnostics).
    c.notify(
        "textDocument/didClose",
        json!({ "textDocument": { "uri": house_uri } }),
    );
    let closed = symbols(&mut c, 5, &importer);
    assert_eq!(last_for(&closed, &importer), json!([]));
    std::fs::write(
        dir.join("house.safer"),
        house.replace("house_rubric", "gone"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    c.notify(
        "workspace/didChangeWatchedFiles",
        json!({ "changes": [{ "uri": house_uri, "type": 2 }] }),
    );
    let messages = symbols(&mut c, 6, &importer);
    let stale = last_for(&messages, &importer);
    assert_eq!(stale[0]["code"], "E0203", "{stale}");
    assert!(!published(&messages).contains(&unrelated), "{messages:?}");

    // A `safer.toml` created where there was none: no document read it,
    // and every open one is checked again (a judge's named endpoint needs
    // a project).
    let judged = uri(&dir.join("judged.safer"));
    open(
        &mut c,
        &judged,
        "judge g { kind = http, named = \"grm\" }\n",
    );
    let without = c.wait(|m| m["params"]["uri"] == judged.as_str());
    assert_ne!(without["params"]["diagnostics"], json!([]), "{without}");
    std::fs::write(
        dir.join("safer.toml"),
        "[project]\nname = \"p\"\nversion = \"0.1.0\"\n\n[judges.grm]\nendpoint = \"http://localhost:8000/v1\"\nmodel = \"m\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    c.notify(
        "workspace/didChangeWatchedFiles",
        json!({ "changes": [{ "uri": uri(&dir.join("safer.toml")), "type": 1 }] }),
    );
    let messages = symbols(&mut c, 7, &judged);
    assert_eq!(last_for(&messages, &judged), json!([]), "{messages:?}");
    c.request(8, "shutdown", Value::Null);
    c.exit();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that refuses the server's file watchers (or never answers
/// their registration, or watches only its workspace) tells of no file
/// changed on disk: the server's own look still finds an imported rubric
/// rewritten by another program.
#[test]
fn a_refused_watcher_registration_still_finds_files_changed_on_disk() {
    let dir = std::env::temp_dir().join(format!("saferc-lsp-refused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let house =
        "rubric house_rubric {\n  criterion safety weight 1 \"Safe.\" { scorer = refusal() }\n}\n";
    let pipeline = "use \"house.safer\"\n\nmodel m { arch = tiny_vlm, weights = \"w\" }\ndataset d { source = jsonl(\"d.jsonl\") }\neval e {\n  model  = m\n  data   = d\n  rubric = house_rubric\n}\n";
    std::fs::write(dir.join("house.safer"), house).unwrap_or_else(|e| panic!("{e}"));
    let importer = uri(&dir.join("p.safer"));
    let mut c = Client::start();
    let watching =
        json!({ "workspace": { "didChangeWatchedFiles": { "dynamicRegistration": true } } });
    c.request(1, "initialize", json!({ "capabilities": watching }));
    c.notify("initialized", json!({}));
    let register = c.wait(|m| m["method"] == "client/registerCapability");
    c.send(json!({ "jsonrpc": "2.0", "id": register["id"], "error": { "code": -32601, "message": "no file watching here" } }));
    c.notify("textDocument/didOpen", json!({ "textDocument": { "uri": importer, "languageId": "safer", "version": 1, "text": pipeline } }));
    let first = c.wait(|m| m["method"] == "textDocument/publishDiagnostics");
    assert_eq!(first["params"]["diagnostics"], json!([]), "{first}");
    let part = dir.join("house.part");
    std::fs::write(&part, house.replace("house_rubric", "renamed"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&part, dir.join("house.safer")).unwrap_or_else(|e| panic!("{e}"));
    let stale = c.wait(|m| m["method"] == "textDocument/publishDiagnostics");
    assert_eq!(
        stale["params"]["diagnostics"][0]["code"], "E0203",
        "{stale}"
    );
    c.request(2, "shutdown", Value::Null);
    c.exit();
    let _ = std::fs::remove_dir_all(&dir);
}

/// With a client that watches no files for the server, a file changed on
/// disk is found by looking: an imported rubric rewritten by another
/// program, a missing import made, an imported file deleted each republish
/// the open document that reads it (they waited for its next edit).
#[test]
fn without_file_watchers_files_changed_on_disk_are_found() {
    let dir = std::env::temp_dir().join(format!("saferc-lsp-poll-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let house =
        "rubric house_rubric {\n  criterion safety weight 1 \"Safe.\" { scorer = refusal() }\n}\n";
    let pipeline = |import: &str| {
        format!("use \"{import}\"\n\nmodel m {{ arch = tiny_vlm, weights = \"w\" }}\ndataset d {{ source = jsonl(\"d.jsonl\") }}\neval e {{\n  model  = m\n  data   = d\n  rubric = house_rubric\n}}\n")
    };
    std::fs::write(dir.join("house.safer"), house).unwrap_or_else(|e| panic!("{e}"));
    // Files are replaced whole, as editors save them: a file read while a
    // plain write is half done gives a state the test does not wait for.
    let put = |path: std::path::PathBuf, text: &str| -> std::io::Result<()> {
        let part = path.with_extension("part");
        std::fs::write(&part, text)?;
        std::fs::rename(&part, &path)
    };
    let [importer, waiting] = ["p.safer", "w.safer"].map(|f| uri(&dir.join(f)));
    let mut c = Client::start();
    c.request(1, "initialize", json!({ "capabilities": {} }));
    c.notify("initialized", json!({}));
    let codes_for = |c: &Client, target: &str| -> Vec<Value> {
        let target = target.to_string();
        let m = c.wait(move |m| {
            m["method"] == "textDocument/publishDiagnostics"
                && m["params"]["uri"] == target.as_str()
        });
        m["params"]["diagnostics"]
            .as_array()
            .map(|d| d.iter().map(|d| d["code"].clone()).collect())
            .unwrap_or_default()
    };
    c.notify("textDocument/didOpen", json!({ "textDocument": { "uri": importer, "languageId": "safer", "version": 1, "text": pipeline("house.safer") } }));
    assert_eq!(codes_for(&c, &importer), Vec::<Value>::new());
    c.notify("textDocument/didOpen", json!({ "textDocument": { "uri": waiting, "languageId": "safer", "version": 1, "text": pipeline("later.safer") } }));
    assert_eq!(codes_for(&c, &waiting), vec![json!("E0200")]);

    // Rewritten by another program: the rubric renamed.
    put(
        dir.join("house.safer"),
        &house.replace("house_rubric", "house_rubric2"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(codes_for(&c, &importer), vec![json!("E0203")]);
    // The missing import made.
    put(dir.join("later.safer"), house).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(codes_for(&c, &waiting), Vec::<Value>::new());
    // The import deleted.
    std::fs::remove_file(dir.join("house.safer")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(codes_for(&c, &importer), vec![json!("E0200")]);

    // Two documents read one file: when it changes on disk and one of them
    // is edited at once (its analysis sees the change first), the other
    // is still found stale; and a client that never pauses (a request every
    // 100 ms) does not hold the look off.
    put(dir.join("house.safer"), house).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(codes_for(&c, &importer), Vec::<Value>::new());
    let second = uri(&dir.join("s.safer"));
    c.notify("textDocument/didOpen", json!({ "textDocument": { "uri": second, "languageId": "safer", "version": 1, "text": pipeline("house.safer") } }));
    assert_eq!(codes_for(&c, &second), Vec::<Value>::new());
    put(
        dir.join("house.safer"),
        &house.replace("house_rubric", "house_rubric3"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    c.notify("textDocument/didChange", json!({ "textDocument": { "uri": second, "version": 2 }, "contentChanges": [{ "text": format!("{}\n", pipeline("house.safer")) }] }));
    assert_eq!(codes_for(&c, &second), vec![json!("E0203")]);
    let started = std::time::Instant::now();
    let mut id = 10;
    let republished = loop {
        id += 1;
        c.send(json!({ "jsonrpc": "2.0", "id": id, "method": "textDocument/documentSymbol", "params": { "textDocument": { "uri": second } } }));
        std::thread::sleep(Duration::from_millis(100));
        let found = c.messages.try_iter().find(|m| {
            m["method"] == "textDocument/publishDiagnostics"
                && m["params"]["uri"] == importer.as_str()
        });
        if let Some(m) = found {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "p.safer was not republished"
        );
    };
    assert_eq!(
        republished["params"]["diagnostics"][0]["code"], "E0203",
        "{republished}"
    );

    // A `safer.toml` made beside the documents, where there was none,
    // makes them a project's: its mistake shows in them.
    put(dir.join("safer.toml"), "[project]\nname = 7\n").unwrap_or_else(|e| panic!("{e}"));
    let code = |c: &Client| codes_for(c, &waiting).first().cloned();
    let mut seen = code(&c);
    while seen.is_none() {
        seen = code(&c);
    }
    assert_eq!(seen, Some(json!("E0222")));
    c.request(3, "shutdown", Value::Null);
    assert_eq!(c.exit(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// While the text does not parse (a statement half typed), a name still
/// hovers as the last text that parsed declared it, with its `##` lines,
/// also one an import brings, and the imported one still goes to its file
/// (names had no hover, and imported ones no definition, until the text
/// parsed again).
#[test]
fn names_hover_as_the_last_text_that_parsed_declared_them() {
    let file = "file:///unparsed/pipeline.safer";
    let good = "use \"std/rubrics/safety.safer\"\n\n## The policy being trained.\nmodel policy {\n  arch    = tiny_vlm\n  weights = \"m\"\n}\n";
    let broken =
        format!("{good}\ntrain t {{\n  policy = policy\n  reward = safety_rubric\n  rollout = \n");
    let mut c = Client::start();
    c.request(1, "initialize", json!({ "capabilities": {} }));
    c.notify("textDocument/didOpen", json!({ "textDocument": { "uri": file, "languageId": "safer", "version": 1, "text": good } }));
    c.notify("textDocument/didChange", json!({ "textDocument": { "uri": file, "version": 2 }, "contentChanges": [{ "text": broken }] }));
    let at = |needle: &str, nth: usize| {
        let offset = broken.match_indices(needle).nth(nth).map_or(0, |(i, _)| i);
        let line = broken[..offset].matches('\n').count();
        let column = offset - broken[..offset].rfind('\n').map_or(0, |i| i + 1);
        json!({ "textDocument": { "uri": file }, "position": { "line": line, "character": column + 1 } })
    };
    let shown = |answer: &Value| {
        answer["result"]["contents"]["value"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    // `policy` after `policy = `: the model.
    let model = c.request(2, "textDocument/hover", at("policy", 3));
    let text = shown(&model);
    assert!(text.contains("model policy"), "{model}");
    assert!(text.contains("The policy being trained."), "{model}");
    assert!(text.contains("last parsed"), "{model}");
    // An imported rubric.
    let rubric = c.request(3, "textDocument/hover", at("safety_rubric", 0));
    let text = shown(&rubric);
    assert!(text.contains("rubric safety_rubric"), "{rubric}");
    assert!(text.contains("std/rubrics/safety.safer"), "{rubric}");
    let definition = c.request(4, "textDocument/definition", at("safety_rubric", 0));
    let target = definition["result"]["uri"].as_str().unwrap_or("");
    assert!(target.ends_with("std/rubrics/safety.safer"), "{definition}");
    // This file's model still goes to where the text now declares it.
    let own = c.request(5, "textDocument/definition", at("policy", 3));
    assert_eq!(own["result"]["uri"], file, "{own}");
    assert_eq!(own["result"]["range"]["start"]["line"], 3, "{own}");
    // A name neither text declares hovers with nothing.
    let none = c.request(6, "textDocument/hover", at("rollout", 0));
    assert!(!shown(&none).contains("last parsed"), "{none}");
    c.request(7, "shutdown", Value::Null);
    c.exit();
}
