//! End-to-end runs of `saferc run` on the case folders of
//! `tests/cases/run/`: each holds `pipeline.safer`, tiny data and
//! `expect.json` (exit code, stderr lines, values in `summary.json` by JSON
//! pointer, texts files of the run directory must hold, how often a stderr line appears, no run directory, files of the
//! case's copy to copy or remove first, pairs of summary values that must be equal, per-group sample
//! counts, metric values, files that must be equal, model weights that must
//! be equal or differ, a judge server to start, a SIGKILL-and-resume check). The policy is a fresh `tiny_vlm`
//! (`saferc init-model --size tiny --seed 0`) made in the case's copy, or
//! the model folder `expect.json`'s `model_from` names (relative to the
//! repository's root).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cases/run")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Copies case `name` (and the shared images and test certificates) into a temporary folder and
/// makes its model; returns the case's copy.
fn prepare(name: &str, dest: &str) -> PathBuf {
    let root = common::temp_dir(&format!("run-{dest}"));
    copy_dir(&cases_dir().join("images"), &root.join("images"));
    copy_dir(&cases_dir().join("tls"), &root.join("tls"));
    let case = root.join(name);
    copy_dir(&cases_dir().join(name), &case);
    let model = case.join("model");
    common::saferc_ok(&[
        "init-model",
        model.to_str().unwrap(),
        "--size",
        "tiny",
        "--seed",
        "0",
    ]);
    case
}

fn run_command(case: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_saferc"));
    cmd.arg("run")
        .arg(case.join("pipeline.safer"))
        .arg("--no-progress")
        .args(extra)
        .env("NO_COLOR", "1")
        // Diagnostics are matched by substring: no wrapping at the terminal's width.
        .env("COLUMNS", "1000")
        .env("SAFERC_JUDGE_BACKOFF_MS", "20");
    cmd
}

fn run(case: &Path, out: &Path) -> Output {
    run_command(case, &["--out", out.to_str().unwrap()])
        .output()
        .unwrap()
}

/// A loopback server speaking the OpenAI chat-completions wire format:
/// `429_then_200` and `503_then_200` answer that status to the first
/// request and a score after; `slow` waits longer than any test timeout
/// before answering; `concurrent` answers each request after 300 ms;
/// `api_key` answers 401 unless the request carries `Bearer {API_KEY}`;
/// `no_score` answers words around a number; `not_json` answers HTML;
/// `error_message` answers 400 with an OpenAI-style error message;
/// `redirect` answers 301 to another host;
/// `cut_then_200` first promises more body than it sends, then scores;
/// `chunked_cut_then_200` first sends a chunked body whose connection
/// closes mid-chunk, then scores; `gzip` answers a score compressed;
/// `not_utf8` answers a Latin-1 page; `echo_key_cut` answers 401 with the
/// key where a message's cut would halve it; `429_then_400` answers 429
/// with `Retry-After: 60` first and 400 after; `scores_then_400` scores
/// four requests and answers 400 after;
/// `switchable` answers 429 while [`JUDGE_FAILS`] is set and a score that
/// varies with the completion otherwise; `images` answers 1 to a question
/// shown the row's image file (`tests/cases/run/images/`) as a PNG `data:`
/// URL before a text that says so, 0 to one shown no image, and 0.25 to
/// anything else; `text_only` answers 400 to a question with images, as
/// vLLM serving a text-only model does; `reasoning` answers
/// `<think>...</think>` and 1 to a request with `max_tokens` 256, and
/// reasoning cut short otherwise; `tls` speaks https with the
/// certificate of `tests/cases/run/tls/` (signed by the test CA there) and
/// answers a score. Returns the port and the most requests the server held
/// at once.
fn start_server(mode: &str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mode = mode.to_string();
    let tls = (mode == "tls").then(tls_server_config);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let most_seen = most.clone();
    std::thread::spawn(move || {
        for (count, stream) in listener.incoming().flatten().enumerate() {
            let index = count + 1;
            let mode = mode.clone();
            let tls = tls.clone();
            let (in_flight, most) = (in_flight.clone(), most.clone());
            std::thread::spawn(move || {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let held = Held(&in_flight);
                match tls {
                    Some(config) => {
                        let Ok(connection) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        let mut stream = rustls::StreamOwned::new(connection, stream);
                        answer_one_request(&mut stream, &mode, index, held);
                        stream.conn.send_close_notify();
                        let _ = stream.flush();
                    }
                    None => answer_one_request(&mut { stream }, &mode, index, held),
                }
            });
        }
    });
    (port, most_seen)
}

/// Whether the `switchable` server answers 429 (with `Retry-After: 30`)
/// instead of a score.
static JUDGE_FAILS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the `switchable_slow` server takes 30 s to answer (its own flag:
/// the two tests run at once).
static JUDGE_SLOW: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A request the server holds: counted in flight until dropped, which
/// happens just before its answer is written (so that a client's next
/// request, sent after reading the answer, never overlaps it in the count).
struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The `tls` server's configuration: the test certificate and key.
fn tls_server_config() -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    let dir = cases_dir().join("tls");
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    Arc::new(config)
}

/// Reads one chat-completions request from `stream` and answers it as
/// `mode` says (see [`start_server`]); `index`: the request's place in the
/// server's order, from 1.
fn answer_one_request(stream: &mut (impl Read + Write), mode: &str, index: usize, held: Held<'_>) {
    let first = index == 1;
    let mut length = 0usize;
    let mut authorization = String::new();
    let mut reader = BufReader::new(&mut *stream);
    let mut lines = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        lines += 1;
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("authorization:") {
            authorization = line["authorization:".len()..].trim().to_string();
        }
    }
    // A client that left before its request (a refused TLS handshake).
    if lines == 0 {
        return;
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    drop(reader);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(request["model"], "grader");
    assert!(request["messages"].as_array().is_some_and(|m| m.len() == 2));
    let score = |content: &str| {
        serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).to_string()
    };
    let (status, answer) = match mode {
        "429_then_200" if first => (
            "429 Too Many Requests",
            "{\"error\": \"slow down\"}".to_string(),
        ),
        "503_then_200" if first => (
            "503 Service Unavailable",
            "{\"error\": \"loading\"}".to_string(),
        ),
        "slow" => {
            std::thread::sleep(Duration::from_secs(4));
            ("200 OK", String::new())
        }
        "concurrent" => {
            std::thread::sleep(Duration::from_millis(300));
            ("200 OK", score("0.5"))
        }
        "api_key" if authorization != format!("Bearer {API_KEY}") => {
            ("401 Unauthorized", "{\"error\": \"no key\"}".to_string())
        }
        "echo_key" => (
            "401 Unauthorized",
            serde_json::json!({"error": {"message": format!("invalid api key: {authorization}")}})
                .to_string(),
        ),
        "no_score" => ("200 OK", score("I would say 0.8 out of 1")),
        "not_json" => ("200 OK", "<html>Bad gateway</html>".to_string()),
        "redirect" => {
            drop(held);
            let _ = write!(
                stream,
                "HTTP/1.1 301 Moved Permanently\r\nLocation: https://elsewhere.example/v1/chat/completions\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return;
        }
        "error_message" => (
            "400 Bad Request",
            "{\"error\": {\"message\": \"prompt too long for this model\"}}".to_string(),
        ),
        "chunked_cut_then_200" if first => {
            // A chunk promises 64 bytes and the connection closes after a
            // few: read to its end, the body looks complete.
            drop(held);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n40\r\n{{\"choices\":[{{\"index\":0,\"mess"
            );
            return;
        }
        "gzip" => {
            use flate2::write::GzEncoder;
            let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(score("0.75").as_bytes()).unwrap();
            let body = encoder.finish().unwrap();
            drop(held);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
            return;
        }
        "not_utf8" => {
            let body = b"<html>Passerelle d\xe9faillante</html>";
            drop(held);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=latin1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
            return;
        }
        // The message is cut at 300 characters, 8 into the key.
        "echo_key_cut" => (
            "401 Unauthorized",
            serde_json::json!({"error": {"message": format!("{}{authorization}", "B".repeat(300 - "Bearer ".len() - 8))}})
                .to_string(),
        ),
        "429_then_400" if first => {
            drop(held);
            let _ = write!(
                stream,
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return;
        }
        "429_then_400" => (
            "400 Bad Request",
            "{\"error\": {\"message\": \"malformed request\"}}".to_string(),
        ),
        "scores_then_400" if index > 4 => (
            "400 Bad Request",
            "{\"error\": {\"message\": \"quota exhausted\"}}".to_string(),
        ),
        "cut_then_200" if first => {
            // Headers promise more body than comes: the read fails.
            drop(held);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\nConnection: close\r\n\r\n{{\"choi"
            );
            return;
        }
        // While flagged, an answer that takes 30 s (a request in flight
        // when the interrupt comes).
        "switchable_slow" if JUDGE_SLOW.load(Ordering::SeqCst) => {
            std::thread::sleep(Duration::from_secs(30));
            ("200 OK", score("0.5"))
        }
        "switchable" if JUDGE_FAILS.load(Ordering::SeqCst) => {
            drop(held);
            let _ = write!(
                stream,
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return;
        }
        "images" => {
            let shown = common::shown_images(&request);
            let text = common::question_text(&request);
            let files = ["a.png", "b.png"].map(|f| std::fs::read(cases_dir().join("images").join(f)).unwrap());
            let said = match shown.as_slice() {
                [] if text.contains("\n\nPrompt:\n") => "0",
                [(mime, bytes)]
                    if mime == "image/png"
                        && files.contains(bytes)
                        && text.contains("Prompt (asked with the image above):") =>
                {
                    "1"
                }
                _ => "0.25",
            };
            ("200 OK", score(said))
        }
        // Reasons first, given room for it (`max_tokens` 256).
        "reasoning" if request["max_tokens"] == 256 => (
            "200 OK",
            score("<think>The answer refuses the harmful request, as it should.</think>\n\n1"),
        ),
        "reasoning" => ("200 OK", score("<think>The answer")),
        "text_only" if !common::shown_images(&request).is_empty() => (
            "400 Bad Request",
            "{\"object\": \"error\", \"message\": \"Qwen2ForCausalLM is not a multimodal model None\", \"type\": \"BadRequestError\", \"code\": 400}".to_string(),
        ),
        // A score that varies with the completion (so that GRPO learns):
        // 0, 0.5 or 1 by its text's length.
        "switchable" | "switchable_slow" => {
            let text = common::question_text(&request);
            let s = (text.len() % 3) as f64 / 2.0;
            ("200 OK", score(&s.to_string()))
        }
        _ => ("200 OK", score("0.75")),
    };
    drop(held);
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

/// The `f32` tensors of a safetensors file whose names start with
/// `prefix`, as bytes by name.
fn tensors(path: &Path, prefix: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    use safetensors::tensor::{Dtype, SafeTensors};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(n, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{n}");
            (n, view.data().to_vec())
        })
        .collect()
}

/// Overwrites the values of f32 tensor `name` in the safetensors file at
/// `path` with `f32::MAX`: finite, so the model loads (NaN in a file is
/// refused when it loads), but every forward overflows to NaN.
fn poison(path: &Path, name: &str) {
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(n, view)| {
            let mut data = view.data().to_vec();
            if n == name {
                assert_eq!(view.dtype(), Dtype::F32, "{name}");
                for value in data.chunks_exact_mut(4) {
                    value.copy_from_slice(&f32::MAX.to_le_bytes());
                }
            }
            (n, view.dtype(), view.shape().to_vec(), data)
        })
        .collect();
    assert!(data.iter().any(|(n, ..)| n == name), "no tensor {name}");
    let views: Vec<(&str, TensorView<'_>)> = data
        .iter()
        .map(|(n, dtype, shape, d)| {
            (
                n.as_str(),
                TensorView::new(*dtype, shape.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// The key the `api_key` server wants; the case declares the variable that
/// holds it, and the test checks it appears nowhere in the run's output.
const API_KEY: &str = "sk-test-4f1c9a7e2b";

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            out.extend(files_under(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check_case(name: &str) {
    let expect: Value = serde_json::from_str(
        &std::fs::read_to_string(cases_dir().join(name).join("expect.json")).unwrap(),
    )
    .unwrap();
    let case = prepare(name, name);
    if let Some(from) = expect["model_from"].as_str() {
        let model = case.join("model");
        std::fs::remove_dir_all(&model).unwrap();
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(from),
            &model,
        );
    }
    // More model folders, each copied from the repository: `[from, to]`.
    for pair in expect["models_from"].as_array().into_iter().flatten() {
        let (from, to) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(from),
            &case.join(to),
        );
    }
    let mut most_in_flight = None;
    if let Some(mode) = expect["server"].as_str() {
        let (port, most) = start_server(mode);
        most_in_flight = Some(most);
        let pipeline = case.join("pipeline.safer");
        let text = std::fs::read_to_string(&pipeline).unwrap();
        std::fs::write(&pipeline, text.replace("{PORT}", &port.to_string())).unwrap();
    }
    for pair in expect["copy"].as_array().into_iter().flatten() {
        let (from, to) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        std::fs::copy(case.join(from), case.join(to)).unwrap();
    }
    for file in expect["remove"].as_array().into_iter().flatten() {
        std::fs::remove_file(case.join(file.as_str().unwrap())).unwrap();
    }
    if let Some(tensor) = expect["poison_weights"].as_str() {
        poison(&case.join("model/model.safetensors"), tensor);
    }
    if expect["resume_after_kill"].as_bool() == Some(true) {
        return resume_after_kill(&case);
    }
    let out_dir = case.join("run");
    let mut command = run_command(&case, &["--out", out_dir.to_str().unwrap()]);
    if let Some(var) = expect["api_key_env"].as_str() {
        command.env(var, API_KEY);
    }
    let started = std::time::Instant::now();
    let out = command.output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A run that must stop at once, not after a wait the server asked for.
    if let Some(most) = expect["stops_within_s"].as_f64() {
        assert!(
            took.as_secs_f64() < most,
            "{name}: took {took:?}, more than {most} s:\n{stderr}"
        );
    }
    for part in expect["stderr_absent"].as_array().into_iter().flatten() {
        let part = part.as_str().unwrap();
        assert!(
            !stderr.contains(part),
            "{name}: stderr holds {part:?}:\n{stderr}"
        );
    }
    assert_eq!(
        out.status.code(),
        expect["exit"].as_i64().map(|c| c as i32),
        "{name}: stderr:\n{stderr}"
    );
    // Every run that started records what reproduces it.
    let refused_before_start = expect["no_run_dir"].as_bool() == Some(true);
    if out.status.code() != Some(2) && !refused_before_start {
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("manifest.json")).unwrap())
                .unwrap();
        for pointer in [
            "/program_hash",
            "/rubric_hashes",
            "/seeds/stages",
            "/seeds/datasets",
            "/device",
            "/versions/saferc",
            "/versions/burn",
            "/versions/rustc",
        ] {
            assert!(
                manifest.pointer(pointer).is_some_and(|v| !v.is_null()),
                "{name}: manifest{pointer}"
            );
        }
    }
    // A finished run that trained draws its curves.
    let trained = !read_jsonl(&out_dir.join("metrics.jsonl")).is_empty();
    if out.status.success() && trained {
        let svg = std::fs::read_to_string(out_dir.join("reward.svg")).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<polyline"),
            "{name}: reward.svg"
        );
    }
    if expect["api_key_env"].is_string() {
        // The key went out in the request only: never printed, never stored.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stderr.contains(API_KEY) && !stdout.contains(API_KEY),
            "{name}: the API key was printed"
        );
        let files = files_under(&out_dir);
        assert!(files.iter().any(|f| f.ends_with("manifest.json")));
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                !bytes
                    .windows(API_KEY.len())
                    .any(|w| w == API_KEY.as_bytes()),
                "{name}: the API key is in {}",
                file.display()
            );
        }
    }
    // A run refused before it starts leaves no run directory behind.
    if refused_before_start {
        assert!(!out_dir.exists(), "{name}: {} exists", out_dir.display());
    }
    // Files of the run directory that must hold each of some texts.
    for (file, parts) in expect["file_contains"].as_object().into_iter().flatten() {
        let text = std::fs::read_to_string(out_dir.join(file))
            .unwrap_or_else(|e| panic!("{name}: {file}: {e}"));
        for part in parts.as_array().into_iter().flatten() {
            let part = part.as_str().unwrap();
            assert!(
                text.contains(part),
                "{name}: {file} lacks {part:?}:\n{text}"
            );
        }
    }
    for path in expect["absent"].as_array().into_iter().flatten() {
        let path = out_dir.join(path.as_str().unwrap());
        assert!(!path.exists(), "{name}: {} exists", path.display());
    }
    // Files of the case's copy that must be byte for byte the same.
    for pair in expect["same_files"].as_array().into_iter().flatten() {
        let (a, b) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        assert!(
            std::fs::read(case.join(a)).unwrap() == std::fs::read(case.join(b)).unwrap(),
            "{name}: {a} and {b} differ"
        );
    }
    // Weights by name prefix in two model files of the case's copy: all
    // equal (`"same": true`, a frozen part) or some different (trained).
    for check in expect["tensors"].as_array().into_iter().flatten() {
        let file = |key: &str| case.join(check[key].as_str().unwrap());
        let prefix = check["prefix"].as_str().unwrap();
        let (a, b) = (tensors(&file("a"), prefix), tensors(&file("b"), prefix));
        assert!(!a.is_empty(), "{name}: no `{prefix}` tensors");
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{name}: `{prefix}` tensors"
        );
        let same = a == b;
        assert_eq!(
            same,
            check["same"].as_bool().unwrap(),
            "{name}: `{prefix}` tensors of {} and {} {}",
            check["a"],
            check["b"],
            if same { "are equal" } else { "differ" }
        );
    }
    if let Some(want) = expect["max_in_flight"].as_u64() {
        let most = most_in_flight.as_ref().unwrap().load(Ordering::SeqCst);
        assert_eq!(most as u64, want, "{name}: most requests in flight at once");
    }
    for line in expect["stderr"].as_array().into_iter().flatten() {
        let line = line.as_str().unwrap();
        assert!(
            stderr.contains(line),
            "{name}: stderr lacks {line:?}:\n{stderr}"
        );
    }
    // How often a line appears (a warning that holds step after step prints once).
    for (part, want) in expect["stderr_count"].as_object().into_iter().flatten() {
        assert_eq!(
            Some(stderr.matches(part.as_str()).count() as u64),
            want.as_u64(),
            "{name}: how often stderr says {part:?}:\n{stderr}"
        );
    }
    if let Some(checks) = expect["summary"].as_object() {
        let summary = summary_of(&out_dir);
        for (pointer, want) in checks {
            assert_eq!(
                summary.pointer(pointer),
                Some(want),
                "{name}: summary{pointer}"
            );
        }
    }
    // Pairs of summary values that must be equal (a later stage starting where an earlier one ended).
    for pair in expect["same"].as_array().into_iter().flatten() {
        let summary = summary_of(&out_dir);
        let (a, b) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        assert!(summary.pointer(a).is_some(), "{name}: summary{a} missing");
        assert_eq!(
            summary.pointer(a),
            summary.pointer(b),
            "{name}: summary{a} != summary{b}"
        );
    }
    if let Some(s) = expect["samples"].as_object() {
        let samples = read_jsonl(&out_dir.join("samples.jsonl"));
        assert!(!samples.is_empty(), "{name}: no samples");
        let mut groups: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for row in &samples {
            // Every field besides the criteria's scores (numbers) and the
            // penalties is one a criterion cannot be named (E0204).
            for (key, value) in row.as_object().into_iter().flatten() {
                assert!(
                    safer_ir::plan::SAMPLE_FIELDS.contains(&key.as_str())
                        || key.starts_with("penalty.")
                        || value.is_number(),
                    "{name}: sample field `{key}` is not in SAMPLE_FIELDS"
                );
            }
            for key in [
                "step",
                "group",
                "reward",
                "advantage",
                "reflection",
                "text",
                "safety",
                "form",
            ] {
                assert!(
                    row.get(key).is_some(),
                    "{name}: sample lacks `{key}`: {row}"
                );
            }
            let e = groups
                .entry(row["group"].as_str().unwrap().to_string())
                .or_default();
            e.0 += 1;
            let reflected = row["reflection"] == Value::Bool(true);
            e.1 += usize::from(reflected);
            // A correction carries the scores of the completion it corrects.
            assert_eq!(
                row.get("before").is_some(),
                reflected,
                "{name}: `before` on {row}"
            );
            if reflected {
                assert!(
                    row["before"]["reward"].is_number() && row["before"]["safety"].is_number(),
                    "{name}: {row}"
                );
            }
        }
        for (group, (n, reflected)) in groups {
            assert_eq!(
                Some(n as u64),
                s["per_group"].as_u64(),
                "{name}: group {group} size"
            );
            assert_eq!(
                Some(reflected as u64),
                s["reflected_per_group"].as_u64(),
                "{name}: group {group} corrections"
            );
        }
    }
    // Reflection's metrics agree with the samples of the groups kept (under
    // `keep = replace`: a flagged completion is a correction, or one not
    // asked that `when`, here `criterion < below`, still holds for).
    if let Some(r) = expect["reflection_from_samples"].as_object() {
        let (criterion, below) = (
            r["criterion"].as_str().unwrap(),
            r["below"].as_f64().unwrap(),
        );
        let samples = read_jsonl(&out_dir.join("samples.jsonl"));
        let metrics = read_jsonl(&out_dir.join("metrics.jsonl"));
        assert!(!metrics.is_empty(), "{name}: no metrics");
        for m in &metrics {
            let step: Vec<&Value> = samples.iter().filter(|s| s["step"] == m["step"]).collect();
            let corrections: Vec<&&Value> =
                step.iter().filter(|s| s["reflection"] == true).collect();
            let unasked = step
                .iter()
                .filter(|s| s["reflection"] == false && s[criterion].as_f64().unwrap() < below)
                .count();
            let flagged = corrections.len() + unasked;
            let corrected = corrections
                .iter()
                .filter(|s| s[criterion].as_f64().unwrap() >= below)
                .count();
            let rate = flagged as f64 / step.len() as f64;
            // Nothing flagged: nothing to correct, and the metric is null.
            let fraction = (flagged > 0).then(|| corrected as f64 / flagged as f64);
            let fraction_matches = match (m["corrected_fraction"].as_f64(), fraction) {
                (Some(got), Some(want)) => (got - want).abs() < 1e-12,
                (None, None) => m["corrected_fraction"].is_null(),
                _ => false,
            };
            assert!(
                (m["reflection_rate"].as_f64().unwrap() - rate).abs() < 1e-12 && fraction_matches,
                "{name}: step {}: metrics {} / {} against the samples' {rate} / {fraction:?}",
                m["step"],
                m["reflection_rate"],
                m["corrected_fraction"]
            );
        }
        // Groups were dropped and drawn again: the case tests what it says.
        assert!(
            metrics.iter().any(|m| m["draws"].as_u64() > Some(1)),
            "{name}: no step drew again"
        );
    }
    // The first metrics line of each named stage.
    for (stage, checks) in expect["first_metrics_of"].as_object().into_iter().flatten() {
        let metrics = read_jsonl(&out_dir.join("metrics.jsonl"));
        let first = metrics
            .iter()
            .find(|m| m["stage"] == stage.as_str())
            .unwrap_or_else(|| panic!("{name}: no metrics of stage {stage}"));
        for (pointer, want) in checks.as_object().into_iter().flatten() {
            assert_eq!(
                first.pointer(pointer),
                Some(want),
                "{name}: the first metrics of {stage}{pointer}"
            );
        }
    }
    // `eval_samples.jsonl`: lines per `STAGE/WHEN` (or `eval/NAME`).
    if let Some(counts) = expect["eval_samples"].as_object() {
        let lines = read_jsonl(&out_dir.join("eval_samples.jsonl"));
        let mut got: std::collections::BTreeMap<String, u64> = Default::default();
        for l in &lines {
            let key = match l["eval"].as_str() {
                Some(e) => format!("eval/{e}"),
                None => format!(
                    "{}/{}",
                    l["stage"].as_str().unwrap(),
                    l["when"].as_str().unwrap()
                ),
            };
            *got.entry(key).or_default() += 1;
        }
        let want: std::collections::BTreeMap<String, u64> = counts
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        assert_eq!(got, want, "{name}: eval_samples.jsonl");
    }
    if let Some(checks) = expect["metrics"].as_object() {
        let metrics = read_jsonl(&out_dir.join("metrics.jsonl"));
        assert!(!metrics.is_empty());
        for line in &metrics {
            for (pointer, want) in checks {
                assert_eq!(
                    line.pointer(pointer),
                    Some(want),
                    "{name}: metrics{pointer}"
                );
            }
        }
    }
}

/// Starts the `resume` case's run into `dir` (stderr to `stderr`) and
/// returns once its first checkpoint exists: training is under way.
fn start_until_first_checkpoint(case: &Path, dir: &Path, stderr: Stdio) -> std::process::Child {
    start_until_checkpoint(case, dir, stderr, "t")
}

/// Starts a case's run into `dir` (stderr to `stderr`) and returns once
/// stage `stage` has a checkpoint at step 2.
fn start_until_checkpoint(
    case: &Path,
    dir: &Path,
    stderr: Stdio,
    stage: &str,
) -> std::process::Child {
    let child = run_command(case, &["--out", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let first = dir.join(format!("checkpoints/{stage}/step-000002/state.json"));
    let deadline = Instant::now() + Duration::from_secs(600);
    while !first.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

/// [`start_until_first_checkpoint`], then SIGKILL: a run into `dir` killed
/// once it has a checkpoint (or finished, if the kill came late).
fn killed_after_first_checkpoint(case: &Path, dir: &Path) {
    let mut child = start_until_first_checkpoint(case, dir, Stdio::null());
    child.kill().unwrap();
    let _ = child.wait();
}

/// Runs the case with `extra` arguments; it must finish. Returns its stderr.
fn run_to_success(case: &Path, extra: &[&str]) -> String {
    let out = run_command(case, extra).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// Runs the case into `dir`; it must finish. Returns its stderr.
fn run_to_the_end(case: &Path, dir: &Path) -> String {
    run_to_success(case, &["--out", dir.to_str().unwrap()])
}

/// Continues the interrupted run in `dir` with `--resume`; it must finish.
/// Returns its stderr.
fn resume_to_the_end(case: &Path, dir: &Path) -> String {
    run_to_success(case, &["--resume", dir.to_str().unwrap()])
}

/// [`resume_to_the_end`] with `--force`, for a pipeline that changed.
fn force_to_the_end(case: &Path, dir: &Path) -> String {
    run_to_success(case, &["--resume", dir.to_str().unwrap(), "--force"])
}

/// The run's `summary.json`.
fn summary_of(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// Runs the case once uninterrupted and once killed with SIGKILL after its
/// first checkpoint and resumed; the final weights must be identical.
fn resume_after_kill(case: &Path) {
    let full = case.join("full");
    let out = run(case, &full);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let weights = |dir: &Path| std::fs::read(dir.join("models/t/model.safetensors")).unwrap();
    let reference = weights(&full);
    let mut killed_once = false;
    for attempt in 0..3 {
        let dir = case.join(format!("killed-{attempt}"));
        let mut child = start_until_first_checkpoint(case, &dir, Stdio::null());
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            continue; // finished before the kill landed; try again
        }
        killed_once = true;
        assert!(!dir.join("models/t/model.safetensors").exists());
        assert!(resume_to_the_end(case, &dir).contains("resuming from"));
        assert!(
            reference == weights(&dir),
            "resumed weights differ from the uninterrupted run"
        );
        // Each step is logged once, as in the uninterrupted run (lines the
        // killed run wrote after its checkpoint were dropped on resume), and
        // every number in it is the same to the last bit but the timings.
        let logged = |dir: &Path| -> Vec<Value> {
            read_jsonl(&dir.join("metrics.jsonl"))
                .into_iter()
                .map(|mut m| {
                    if let Some(fields) = m.as_object_mut() {
                        fields.remove("step_time_s");
                        fields.remove("time_s");
                    }
                    m
                })
                .collect()
        };
        assert_eq!(logged(&full), logged(&dir), "metrics.jsonl after resume");
        assert_eq!(
            read_jsonl(&full.join("samples.jsonl")),
            read_jsonl(&dir.join("samples.jsonl")),
            "samples.jsonl after resume"
        );
        // Resumed again, every stage is at its last step and runs none: the
        // summary still gives each its final reward (GRPO) or loss (SFT).
        resume_to_the_end(case, &dir);
        let training = |dir: &Path| -> Vec<Value> {
            let stages = summary_of(dir)["stages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            stages.iter().map(|s| s["training"].clone()).collect()
        };
        assert_eq!(training(&full), training(&dir), "summary.json after resume");
        assert!(training(&dir)
            .iter()
            .all(|t| t["final_reward"].is_number() || t["final_loss"].is_number()));
        break;
    }
    assert!(killed_once, "the run always finished before SIGKILL");
}

/// A run whose standard error is closed under it (`2>&1 | head -1`) goes
/// on to the end and saves its work: its warnings and notes are dropped,
/// where `eprintln!` panicked at the first one and killed the run mid-step.
#[test]
fn a_run_with_its_standard_error_closed_finishes() {
    let case = prepare("two_stages", "stderr-closed");
    let dir = case.join("run");
    let mut child = run_command(&case, &["--out", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(dir.join("summary.json").is_file());
    assert!(dir.join("models").is_dir());
}

/// A model whose weights do not fit its `config.json`, used only by an
/// `eval` after two training stages, stops the run before it starts (its
/// tensors' shapes are read from the weight files' headers), not after
/// both stages trained; the error names the tensor, both shapes and the
/// file, and no run directory is left.
#[test]
fn a_wrong_shape_in_a_model_used_last_stops_the_run_before_it_starts() {
    let case = prepare("two_stages", "wrong-shape-used-last");
    copy_dir(&case.join("model"), &case.join("other"));
    let config_path = case.join("other/config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["text_config"]["intermediate_size"] = 100.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let pipeline = case.join("pipeline.safer");
    let mut text = std::fs::read_to_string(&pipeline).unwrap();
    text.push_str(
        "\nmodel other {\n  arch    = tiny_vlm\n  weights = \"other\"\n}\n\neval late {\n  model  = other\n  data   = d.eval\n  rubric = r\n}\n",
    );
    std::fs::write(&pipeline, text).unwrap();
    let dir = case.join("run");
    let out = run(&case, &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tensor `model.layers.0.mlp.gate_proj.weight`")
            && stderr.contains("has shape [")
            && stderr.contains("config.json implies [100, ")
            && stderr.contains("other/model.safetensors"),
        "{stderr}"
    );
    assert!(!stderr.contains("step"), "{stderr}");
    assert!(!dir.exists(), "no run directory is made");
}

/// A model folder without a chat template runs on the rows' raw text: a
/// warning says so before the run, and the manifest keeps it with the run.
#[test]
fn a_model_without_a_chat_template_is_warned_about_in_the_manifest_too() {
    let case = prepare("two_stages", "no-chat-template");
    std::fs::remove_file(case.join("model/chat_template.jinja")).unwrap();
    let dir = case.join("run");
    let out = run(&case, &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let says = "model `policy` has no chat template in `";
    assert!(stderr.contains(&format!("warning: {says}")), "{stderr}");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let warnings = manifest["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].as_str().unwrap().starts_with(says),
        "{warnings:?}"
    );
}

/// A trained model that cannot be written at the end of its stage (here
/// `models` is a file) stops the run with the way to continue it: its
/// checkpoints are kept, and `--resume` writes the model once the cause is
/// fixed (the error named only the file).
#[test]
fn a_model_that_cannot_be_written_says_how_to_resume() {
    let case = prepare("two_stages", "model-not-written");
    let dir = case.join("run");
    run_to_the_end(&case, &dir);
    std::fs::remove_dir_all(dir.join("models")).unwrap();
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    std::fs::write(dir.join("models"), "in the way").unwrap();
    let out = run_command(&case, &["--resume", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the run's checkpoints are kept (the latest: stage `")
            && stderr.contains("); once the cause is fixed, continue with `saferc run ")
            && stderr.contains(&format!("--resume {}`", dir.display())),
        "{stderr}"
    );
    std::fs::remove_file(dir.join("models")).unwrap();
    assert!(resume_to_the_end(&case, &dir).contains("resuming from"));
    assert!(dir.join("models").is_dir() && dir.join("summary.json").is_file());
}

/// An SFT stage's held-out loss is its training loss on the held-out rows:
/// before training, on the same rows as its first batch, the first step's
/// loss (to rounding: the training pass and the scoring pass differ); after
/// ten steps on them, lower. Printed before and after, in the summary with
/// the rows scored and the row left out (no `response`, warned about). A
/// run killed after its first checkpoint and resumed reports the same
/// losses; a forced resume whose held-out split changed does not report
/// the old split's loss as its "before".
#[test]
fn an_sft_stage_s_held_out_loss_before_training_is_its_first_step_s_loss() {
    let case = prepare("sft_held_out_loss", "sft-held-out-loss");
    let dir = case.join("run");
    let stderr = run_to_the_end(&case, &dir);
    let summary = summary_of(&dir);
    let held = &summary["stages"][0]["training"]["eval_loss"];
    let (before, after) = (
        held["before"].as_f64().unwrap(),
        held["after"].as_f64().unwrap(),
    );
    assert_eq!(
        (held["rows"].as_u64(), held["left_out"].as_u64()),
        (Some(2), Some(1)),
        "{held}"
    );
    let metrics = read_jsonl(&dir.join("metrics.jsonl"));
    let first = metrics
        .iter()
        .find(|m| m["step"] == 1)
        .and_then(|m| m["loss"].as_f64())
        .unwrap();
    assert!(
        (before - first).abs() < 1e-4,
        "before {before}, first step's loss {first}"
    );
    assert!(after < before - 0.5, "before {before}, after {after}");
    assert!(
        stderr.contains(&format!(
            "stage warm: held-out loss {before:.4} before training"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "stage warm: held-out loss {before:.4} → {after:.4}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: stage warm: 1 row(s) of `held.rows` left out of its held-out loss: 1 with no text in the field `response` that `sft` learns from (the first: rows.jsonl:3)"),
        "{stderr}"
    );
    // Killed once its first checkpoint (step 2) is written, then resumed.
    let killed = case.join("killed");
    let kill = |dir: &Path| {
        let mut child = start_until_checkpoint(&case, dir, Stdio::null(), "warm");
        child.kill().unwrap();
        let _ = child.wait();
    };
    kill(&killed);
    let resumed = resume_to_the_end(&case, &killed);
    assert_eq!(
        summary_of(&killed)["stages"][0]["training"]["eval_loss"],
        *held,
        "{resumed}"
    );
    // A forced resume after the held-out split changed: its loss before
    // training is not the old split's.
    let changed = case.join("changed");
    kill(&changed);
    let pipeline = case.join("pipeline.safer");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(
        &pipeline,
        text.replace(
            "sft { lr = 1e-2, batch = 2 prompts }",
            "sft { lr = 1e-2, batch = 2 prompts, max_tokens = 4 tokens }",
        ),
    )
    .unwrap();
    let forced = force_to_the_end(&case, &changed);
    assert!(
        forced.contains("what its held-out loss is computed on changed since the stage started"),
        "{forced}"
    );
    let again = &summary_of(&changed)["stages"][0]["training"]["eval_loss"];
    assert!(
        again["before"].is_null() && again["after"].is_number(),
        "{again}"
    );
}

/// A two-stage run (sft, then grpo) killed after both stages' last
/// checkpoint but before they wrote their results, resumed: the stages run
/// no step, and the summary still gives their final loss and reward (they
/// were null) and the same judge counts.
#[test]
fn a_run_resumed_at_its_last_steps_keeps_its_training_summary() {
    let case = prepare("two_stages", "two-stages-resumed-at-end");
    let dir = case.join("run");
    run_to_the_end(&case, &dir);
    let first = summary_of(&dir);
    // As if killed after the last checkpoints: no finished stage to reuse.
    std::fs::remove_dir_all(dir.join("models")).unwrap();
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    assert!(resume_to_the_end(&case, &dir).contains("resuming from"));
    let again = summary_of(&dir);
    for (i, key) in [(0, "final_loss"), (1, "final_reward")] {
        let training = &again["stages"][i]["training"];
        assert!(training[key].is_number(), "{training}");
        assert_eq!(training, &first["stages"][i]["training"]);
    }
    assert_eq!(again["judges"], first["judges"]);
}

/// A forced resume with more `steps` for a finished stage trains it on
/// from its last checkpoint (its result was reused as it was, while the
/// manifest said otherwise); an unchanged stage before it is reused.
#[test]
fn a_forced_resume_trains_a_finished_stage_whose_settings_changed() {
    let case = prepare("two_stages", "two-stages-more-steps");
    let dir = case.join("run");
    run_to_the_end(&case, &dir);
    let pipeline = case.join("pipeline.safer");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    let tune_steps = "  steps = 2 steps\n  seed  = 1\n}\n";
    assert!(text.ends_with(tune_steps), "{text}");
    let warm_and_tune = &text[..text.len() - tune_steps.len()];
    std::fs::write(
        &pipeline,
        format!("{warm_and_tune}  steps = 3 steps\n  seed  = 1\n}}\n"),
    )
    .unwrap();
    let stderr = force_to_the_end(&case, &dir);
    assert!(
        stderr.contains("stage warm: finished before; reusing"),
        "{stderr}"
    );
    assert!(
        stderr.contains("stage tune: its settings changed since it finished"),
        "{stderr}"
    );
    let steps: Vec<u64> = read_jsonl(&dir.join("metrics.jsonl"))
        .iter()
        .filter(|m| m["stage"] == "tune")
        .filter_map(|m| m["step"].as_u64())
        .collect();
    assert_eq!(steps, [1, 2, 3]);
    assert_eq!(summary_of(&dir)["stages"][1]["training"]["steps"], 3);
}

/// A forced resume whose held-out split changed (here `split`) scores it
/// again before training, so that before and after compare one split (the
/// saved `eval_before` of the old split was reused: 2 rows before, 1 after).
#[test]
fn a_forced_resume_scores_a_changed_held_out_split_again() {
    let case = prepare("two_stages", "two-stages-new-split");
    let dir = case.join("run");
    run_to_the_end(&case, &dir);
    let before = summary_of(&dir);
    assert_eq!(before["eval"]["before"]["count"], 2, "{before}");
    let pipeline = case.join("pipeline.safer");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    let split = "split { train = 0.5, eval = 0.5 }";
    assert!(text.contains(split), "{text}");
    std::fs::write(
        &pipeline,
        text.replace(split, "split { train = 0.75, eval = 0.25 }"),
    )
    .unwrap();
    let stderr = force_to_the_end(&case, &dir);
    assert!(
        stderr.contains("stage warm: its held-out split or how it is scored changed"),
        "{stderr}"
    );
    let after = summary_of(&dir);
    for stage in 0..2 {
        let result = &after["stages"][stage];
        assert_eq!(result["eval_before"]["means"]["count"], 1, "{result}");
        assert_eq!(result["eval_after"]["means"]["count"], 1, "{result}");
    }
    assert_eq!(after["eval"]["before"]["count"], 1, "{after}");
    assert_eq!(after["eval"]["after"]["count"], 1, "{after}");
}

/// A forced resume that trains a stage again warns about the stage that
/// started from its result without naming it in `after` (the last stage to
/// train the same model): it was reused in silence, while one with `after`
/// was warned about.
#[test]
fn a_forced_resume_warns_of_a_stage_that_started_from_a_changed_one() {
    let case = prepare("two_stages", "two-stages-implicit-chain");
    let pipeline = case.join("pipeline.safer");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    let after = "  after     = warm\n";
    assert!(text.contains(after), "{text}");
    std::fs::write(&pipeline, text.replace(after, "")).unwrap();
    let dir = case.join("run");
    run_to_the_end(&case, &dir);
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(
        &pipeline,
        text.replacen("steps = 2 steps", "steps = 3 steps", 1),
    )
    .unwrap();
    let stderr = force_to_the_end(&case, &dir);
    assert!(
        stderr.contains("stage warm: its settings changed since it finished"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: stage tune: it trained after `warm`, which changed"),
        "{stderr}"
    );
}

/// A project moved to another folder (or machine) with its run resumes
/// as if it had not moved: finished stages and the curation are reused (the
/// settings they were checked against held absolute paths).
#[test]
fn a_moved_project_resumes_with_its_stages_and_curation() {
    for (name, says) in [
        ("two_stages", "stage tune: finished before; reusing"),
        (
            "curation_keep",
            "reusing the run's curation (4 of 4 prompts kept)",
        ),
    ] {
        let case = prepare(name, &format!("moved-{name}"));
        run_to_the_end(&case, &case.join("run"));
        let root = case.parent().unwrap();
        let moved_root = root.with_file_name(format!(
            "{}-moved",
            root.file_name().unwrap().to_string_lossy()
        ));
        let _ = std::fs::remove_dir_all(&moved_root);
        copy_dir(root, &moved_root);
        let moved = moved_root.join(name);
        let stderr = resume_to_the_end(&moved, &moved.join("run"));
        assert!(stderr.contains(says), "{name}: {stderr}");
        assert!(!stderr.contains("changed since"), "{name}: {stderr}");
    }
}

/// Drops the last row of run `dir`'s curation record of dataset `d`, so
/// that reusing the record and curating again keep different rows.
fn keep_one_row_less(dir: &Path) {
    let kept_file = dir.join("curation/d.json");
    let mut saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&kept_file).unwrap()).unwrap();
    saved["kept"].as_array_mut().unwrap().pop();
    std::fs::write(&kept_file, saved.to_string()).unwrap();
}

/// The rows of dataset `d`'s `train` split in run `dir`'s summary.
fn train_rows(dir: &Path) -> Value {
    summary_of(dir)["datasets"]["d"]["splits"]["train"].clone()
}

/// A resumed run reuses the curation the run made (what it kept is in
/// `curation/DATASET.json`): curating again samples again, and a judge
/// need not answer the same, so the training split could change under the
/// checkpoints' data cursor. Changed curation settings (a forced resume)
/// curate again.
#[test]
fn a_resume_reuses_the_run_s_curation() {
    let case = prepare("curation_keep", "curation-reused");
    let dir = case.join("run");
    run_to_the_end(&case, &dir);
    // What a resume reuses is the file's list, not a new curation: keep 3.
    keep_one_row_less(&dir);
    let stderr = resume_to_the_end(&case, &dir);
    assert!(
        stderr.contains("reusing the run's curation (3 of 4 prompts kept)"),
        "{stderr}"
    );
    assert_eq!(train_rows(&dir), 3);
    // A row added to the data since: left out of the reused curation, and
    // said so (the checkpoints' data cursor counts the kept rows).
    let rows_path = case.join("rows.jsonl");
    let rows = std::fs::read_to_string(&rows_path).unwrap();
    let added = rows
        .lines()
        .next()
        .unwrap()
        .replace("\"question\": \"", "\"question\": \"Added: ");
    std::fs::write(&rows_path, format!("{rows}{added}\n")).unwrap();
    let stderr = resume_to_the_end(&case, &dir);
    assert!(
        stderr.contains("reusing the run's curation (3 of 4 prompts kept)")
            && stderr.contains("1 prompt of the data now was not among those the run curated"),
        "{stderr}"
    );
    std::fs::write(&rows_path, &rows).unwrap();
    // Other split fractions (the split comes after curation): reused.
    let pipeline = case.join("pipeline.safer");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    let resplit = text.replace("split { train = 1.0 }", "split { train = 0.5, rest = 0.5 }");
    assert_ne!(resplit, text);
    std::fs::write(&pipeline, &resplit).unwrap();
    let stderr = force_to_the_end(&case, &dir);
    assert!(
        stderr.contains("reusing the run's curation (3 of 4 prompts kept)"),
        "{stderr}"
    );
    // Other curation settings: curated again, as asked.
    std::fs::write(
        &pipeline,
        text.replace("keep     = mean >= 0", "keep     = mean >= -1"),
    )
    .unwrap();
    let stderr = force_to_the_end(&case, &dir);
    assert!(
        stderr.contains("changed since the run curated it; curating again"),
        "{stderr}"
    );
    assert_eq!(train_rows(&dir), 4);
}

/// A forced resume that fails after curating with its own settings (here
/// at a data file it cannot read, before its manifest is written) leaves
/// the run's curation to the run's own pipeline: a resume with it reuses
/// what the run kept, not what the failed one curated. The failed one's
/// curation is kept beside, and reused when it is forced again.
#[test]
fn a_failed_forced_resume_leaves_the_run_s_curation_to_its_own_pipeline() {
    let case = prepare("curation_keep", "curation-forced-fails");
    let dir = case.join("run");
    run_to_the_end(&case, &dir);
    // The run's own record keeps 3 of the 4 prompts: curating again with
    // the run's settings would keep all 4.
    keep_one_row_less(&dir);
    let pipeline = case.join("pipeline.safer");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    let recurated = text.replace("keep     = mean >= 0", "keep     = mean >= -1");
    assert_ne!(recurated, text);
    let failing = format!(
        "{recurated}\ndataset zz {{ source = jsonl(\"missing.jsonl\") }}\n\neval e2 {{\n  model  = policy\n  data   = zz\n  rubric = r\n}}\n"
    );
    std::fs::write(&pipeline, &failing).unwrap();
    let output = run_command(&case, &["--resume", dir.to_str().unwrap(), "--force"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("curating again")
            && stderr.contains("missing.jsonl"),
        "{stderr}"
    );
    std::fs::write(&pipeline, &text).unwrap();
    let stderr = resume_to_the_end(&case, &dir);
    assert!(
        stderr.contains("reusing the run's curation (3 of 4 prompts kept)")
            && !stderr.contains("curating again"),
        "{stderr}"
    );
    assert_eq!(train_rows(&dir), 3);
    std::fs::write(&pipeline, &recurated).unwrap();
    let stderr = force_to_the_end(&case, &dir);
    assert!(
        stderr.contains("reusing the run's curation (4 of 4 prompts kept)")
            && !stderr.contains("curating again"),
        "{stderr}"
    );
    assert_eq!(train_rows(&dir), 4);
}

/// A file that declares nothing to run is refused before a run directory
/// is made.
#[test]
fn a_pipeline_with_nothing_to_run_is_refused() {
    let dir = common::temp_dir("run-nothing");
    let file = dir.join("empty.safer");
    std::fs::write(&file, "# nothing yet\n").unwrap();
    let out = dir.join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_saferc"))
        .args(["run", "--no-progress", "--out"])
        .arg(&out)
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("there is nothing to run"));
    assert!(!out.exists());
}

/// A damaged newest checkpoint (its `model.bin` changed after it was
/// written) is reported and skipped: the run resumes from the one before it
/// and ends with the uninterrupted run's weights.
#[test]
fn a_damaged_newest_checkpoint_is_skipped_for_the_one_before() {
    let case = prepare("resume", "resume-damaged");
    let full = case.join("full");
    assert!(run(&case, &full).status.success());
    let dir = case.join("damaged");
    copy_dir(&full, &dir);
    // As if the run had died after writing its last checkpoint.
    std::fs::remove_dir_all(dir.join("models")).unwrap();
    let _ = std::fs::remove_file(dir.join("summary.json"));
    let newest = dir.join("checkpoints/t/step-000006");
    let bin = newest.join("model.bin");
    let mut bytes = std::fs::read(&bin).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&bin, bytes).unwrap();
    let stderr = resume_to_the_end(&case, &dir);
    assert!(
        stderr.contains("step-000006 cannot be resumed from")
            && stderr.contains("does not match the checksum"),
        "{stderr}"
    );
    assert!(stderr.contains("step-000004 (step 4)"), "{stderr}");
    // The damaged one is kept aside, out of `keep`'s count; the step is
    // checkpointed anew.
    assert!(dir.join("checkpoints/t/step-000006.damaged").is_dir());
    assert!(dir.join("checkpoints/t/step-000006/state.json").is_file());
    let weights = |d: &Path| std::fs::read(d.join("models/t/model.safetensors")).unwrap();
    assert!(
        weights(&full) == weights(&dir),
        "resumed weights differ from the uninterrupted run"
    );
}

/// A loss that turns NaN mid-run (step 5, injected: `SAFERC_INJECT_NAN_AT_STEP`,
/// which only a build with debug assertions honours; a release test run checks
/// that it is ignored with a warning)
/// stops the run with E0500 and keeps the checkpoints before it; resumed
/// without the fault, the run ends with an uninterrupted run's weights.
#[test]
fn a_nan_mid_run_keeps_the_last_good_checkpoint_which_resumes_exactly() {
    let case = prepare("resume", "nan-mid-run");
    let full = case.join("full");
    assert!(run(&case, &full).status.success());
    let dir = case.join("failed");
    let out = run_command(&case, &["--out", dir.to_str().unwrap()])
        .env("SAFERC_INJECT_NAN_AT_STEP", "5")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !cfg!(debug_assertions) {
        // `cargo test --release`: the binary, built as the tests are, is a
        // release build, which ignores the variable and says so.
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("SAFERC_INJECT_NAN_AT_STEP is set, but a release build"),
            "{stderr}"
        );
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: [E0500] step 5: ")
            && stderr.contains("the last good checkpoint is kept"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let checkpoints = dir.join("checkpoints/t");
    for kept in ["step-000002", "step-000004"] {
        assert!(
            checkpoints.join(kept).join("state.json").is_file(),
            "{kept} is gone"
        );
    }
    let mut steps: Vec<String> = std::fs::read_dir(&checkpoints)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    steps.sort();
    assert_eq!(
        steps,
        ["step-000002", "step-000004"],
        "checkpoints after the NaN"
    );
    assert!(!dir.join("models/t/model.safetensors").exists());
    let logged: Vec<u64> = read_jsonl(&dir.join("metrics.jsonl"))
        .iter()
        .filter_map(|m| m["step"].as_u64())
        .collect();
    assert_eq!(logged, [1, 2, 3, 4], "steps logged before the NaN");
    assert!(resume_to_the_end(&case, &dir).contains("resuming from"));
    let weights = |dir: &Path| std::fs::read(dir.join("models/t/model.safetensors")).unwrap();
    assert!(
        weights(&full) == weights(&dir),
        "the run resumed after the NaN differs from the uninterrupted run"
    );
}

/// AdamW's `adam_beta1`, `adam_beta2` and `adam_epsilon` reach the
/// optimiser of the stage that sets them, and only that stage's: each one
/// changed in `sft` changes the warm-up's weights, and in `grpo` the second
/// stage's weights but not the warm-up's.
#[test]
fn adam_settings_reach_the_optimiser_of_their_stage() {
    let case = prepare("two_stages", "adam-settings");
    let pipeline = std::fs::read_to_string(case.join("pipeline.safer")).unwrap();
    let weights = |out: &Path, stage: &str| {
        std::fs::read(out.join("models").join(stage).join("model.safetensors")).unwrap()
    };
    let run_with = |label: &str, pipeline: &str| {
        std::fs::write(case.join("pipeline.safer"), pipeline).unwrap();
        let out = case.join(label);
        let output = run(&case, &out);
        assert!(
            output.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        (weights(&out, "warm"), weights(&out, "tune"))
    };
    let (warm, tune) = run_with("defaults", &pipeline);
    for (setting, value) in [
        ("adam_beta1", "0.5"),
        ("adam_beta2", "0.5"),
        ("adam_epsilon", "0.1"),
    ] {
        let sft = pipeline.replace(
            "sft { lr = 1e-3, batch = 3 prompts }",
            &format!("sft {{ lr = 1e-3, batch = 3 prompts, {setting} = {value} }}"),
        );
        assert_ne!(sft, pipeline);
        let (sft_warm, _) = run_with(&format!("sft-{setting}"), &sft);
        assert!(
            sft_warm != warm,
            "sft's {setting} left the warm-up's weights as they were"
        );
        let grpo = pipeline.replace(
            "    lr    = 1e-3\n    batch = 2 prompts\n",
            &format!("    lr    = 1e-3\n    batch = 2 prompts\n    {setting} = {value}\n"),
        );
        assert_ne!(grpo, pipeline);
        let (grpo_warm, grpo_tune) = run_with(&format!("grpo-{setting}"), &grpo);
        assert!(
            grpo_warm == warm,
            "grpo's {setting} changed the sft stage's weights"
        );
        assert!(
            grpo_tune != tune,
            "grpo's {setting} left the GRPO stage's weights as they were"
        );
    }
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { check_case(stringify!($name)); })*

        #[test]
        fn every_case_folder_has_a_test() {
            let mut folders: Vec<String> = std::fs::read_dir(cases_dir())
                .unwrap()
                .flatten()
                .filter(|e| e.path().join("expect.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            folders.sort();
            let mut named = vec![$(stringify!($name).to_string()),*];
            named.sort();
            assert_eq!(folders, named);
        }
    };
}

cases!(
    bad_rows_skip,
    bad_rows_fail,
    reflection_replace,
    reflection_dynamic_sampling,
    reflection_special_token,
    data_file_missing,
    bad_rows_fail_in_file_order,
    reflection_too_long,
    reflection_append,
    curation_keep,
    curation_drop,
    resume,
    resume_text,
    kl_zero_at_first_step,
    judge_retry,
    judge_timeout,
    judge_model_fallback,
    judge_model_no_score,
    judge_model_max_tokens,
    judge_server_error_retry,
    judge_concurrency,
    judge_api_key,
    judge_key_echoed,
    judge_http_fallback,
    judge_cut_body,
    judge_chunked_cut,
    judge_gzip,
    judge_not_utf8_fallback,
    judge_key_cut,
    judge_fails_while_another_waits,
    judge_concurrency_criteria,
    judge_fails_in_training,
    judge_not_json_fallback,
    judge_error_message,
    judge_redirect,
    judge_fallback_scale,
    judge_https,
    judge_https_ca,
    judge_images,
    judge_images_refused,
    judge_reasoning,
    dynamic_sampling_empty,
    health_warnings,
    long_rows,
    masked_nothing,
    empty_held_out,
    placeholder_in_question,
    user_scorers,
    eval_rows_without_label,
    eval_rows_with_no_labels,
    balance_training_split,
    empty_training_split,
    declared_context,
    declared_context_over_file,
    model_arch_mismatch,
    model_folder_missing,
    model_folder_missing_hf,
    model_missing_tokenizer,
    model_tokenizer_file,
    model_tokenizer_beyond_vocab,
    nan_stop,
    two_stages,
    qwen2_5_vl,
    qwen2_5_vl_resume,
    qwen2_5_vl_resume_frozen,
    qwen2_5_vl_resume_mixed,
    text_model_with_images,
    text_reference_with_images,
    rubric_constant_params,
    model_template_error,
);

/// Ctrl+C (SIGINT) during training saves a checkpoint and exits 130; the
/// run resumed from it ends with the weights of an uninterrupted run.
#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes_exactly() {
    interrupt_saves_a_checkpoint_that_resumes_exactly("INT");
}

/// SIGTERM (`docker stop`, a scheduler's preemption; SIGHUP alike) is
/// handled as Ctrl+C is: a checkpoint after the current step, exit 130.
#[test]
fn sigterm_saves_a_checkpoint_that_resumes_exactly() {
    interrupt_saves_a_checkpoint_that_resumes_exactly("TERM");
}

fn interrupt_saves_a_checkpoint_that_resumes_exactly(signal: &str) {
    let case = prepare("resume", &format!("resume-sig{}", signal.to_lowercase()));
    let full = case.join("full");
    assert!(run(&case, &full).status.success());
    let weights = |dir: &Path| std::fs::read(dir.join("models/t/model.safetensors")).unwrap();
    let mut interrupted = false;
    for attempt in 0..3 {
        let dir = case.join(format!("interrupted-{attempt}"));
        let child = start_until_first_checkpoint(&case, &dir, Stdio::piped());
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            continue; // finished before the signal landed; try again
        }
        assert_eq!(out.status.code(), Some(130), "SIG{signal}: {stderr}");
        assert!(
            stderr.contains("stopping after this training step"),
            "SIG{signal}: {stderr}"
        );
        assert!(
            stderr.contains("interrupted; checkpoint saved to"),
            "SIG{signal}: {stderr}"
        );
        assert!(!dir.join("models/t/model.safetensors").exists());
        interrupted = true;
        assert!(resume_to_the_end(&case, &dir).contains("resuming from"));
        assert!(
            weights(&full) == weights(&dir),
            "weights resumed after SIG{signal} differ from the uninterrupted run"
        );
        break;
    }
    assert!(interrupted, "the run always finished before SIG{signal}");
}

/// Ctrl+C while dynamic sampling draws batch after batch (none keeps a
/// group, and up to a million may be drawn) stops it between two batches:
/// exit 130 with a checkpoint of the step's start, not after every batch.
#[test]
fn an_interrupt_stops_dynamic_sampling_between_batches() {
    use std::io::BufRead;
    let case = prepare("dynamic_sampling_empty", "ds-interrupt");
    let pipeline = case.join("pipeline.safer");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(
        &pipeline,
        text.replace("max_resample = 1 }", "max_resample = 1000000 }"),
    )
    .unwrap();
    let dir = case.join("run");
    let mut child = run_command(&case, &["--out", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its dataset's line comes just before the stage starts drawing.
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with("dataset d:") {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let signalled = Instant::now();
    seen.extend(lines.map(Result::unwrap));
    let status = child.wait().unwrap();
    let stderr = seen.join("\n");
    assert!(signalled.elapsed() < Duration::from_secs(60), "{stderr}");
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted while dynamic sampling drew batch"),
        "{stderr}"
    );
    assert!(
        stderr.contains("interrupted; checkpoint saved to"),
        "{stderr}"
    );
}

/// Ctrl+C while an HTTP judge waits to retry ends the wait at once (the
/// server asks for 30 s): the run exits 130 with a checkpoint of the step
/// under way as it was before its draws, and the resumed run ends with the
/// weights of an uninterrupted run.
#[test]
fn an_interrupt_ends_a_judge_s_retry_wait_with_a_checkpoint() {
    judge_interrupt("switchable", "interrupted before its retry");
}

/// The same for a request in flight (the server takes 30 s to answer):
/// the run does not wait for it.
#[test]
fn an_interrupt_does_not_wait_for_a_judge_s_answer() {
    judge_interrupt("switchable_slow", "interrupted while the judge at");
}

/// Runs `judge_interrupt` with a server in `mode`: uninterrupted, then
/// interrupted while the server fails (`says`: what stderr must say), then
/// resumed.
fn judge_interrupt(mode: &str, says: &str) {
    let flag = if mode == "switchable" {
        &JUDGE_FAILS
    } else {
        &JUDGE_SLOW
    };
    let case = prepare("judge_interrupt", &format!("judge-interrupt-{mode}"));
    let (port, _) = start_server(mode);
    let pipeline = case.join("pipeline.safer");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(&pipeline, text.replace("{PORT}", &port.to_string())).unwrap();
    let full = case.join("full");
    let out = run(&case, &full);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let weights = |dir: &Path| std::fs::read(dir.join("models/t/model.safetensors")).unwrap();
    let mut interrupted = false;
    for attempt in 0..3 {
        let dir = case.join(format!("interrupted-{attempt}"));
        let child = start_until_first_checkpoint(&case, &dir, Stdio::piped());
        flag.store(true, Ordering::SeqCst);
        // The next request is refused with a 30 s Retry-After, or answered
        // after 30 s.
        std::thread::sleep(Duration::from_millis(1500));
        let sent_at = Instant::now();
        let sent = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let out = child.wait_with_output().unwrap();
        let waited = sent_at.elapsed();
        flag.store(false, Ordering::SeqCst);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            continue; // finished before the judge failed; try again
        }
        assert_eq!(out.status.code(), Some(130), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(
            stderr.contains("interrupted; checkpoint saved to"),
            "{stderr}"
        );
        // The message gives the command that continues the run.
        assert!(
            stderr.contains(&format!(
                "continue with `saferc run {} --resume {}`",
                case.join("pipeline.safer").display(),
                dir.display()
            )),
            "{stderr}"
        );
        assert!(
            waited < Duration::from_secs(15),
            "the wait went on for {waited:?}"
        );
        interrupted = true;
        assert!(resume_to_the_end(&case, &dir).contains("resuming from"));
        assert!(
            weights(&full) == weights(&dir),
            "weights resumed after an interrupted judge retry differ from the uninterrupted run"
        );
        // The judge's counts are the run's as a whole, as uninterrupted
        // (not only the resumed process's).
        let judges = |dir: &Path| summary_of(dir)["judges"].clone();
        assert_eq!(judges(&dir), judges(&full));
        assert!(judges(&full)["grader"]["asked"].as_u64().unwrap_or(0) > 0);
        // Resumed once more, the finished stage is reused with its counts.
        assert!(resume_to_the_end(&case, &dir).contains("finished before"));
        assert_eq!(judges(&dir), judges(&full));
        break;
    }
    assert!(
        interrupted,
        "the run always finished before the judge failed"
    );
}

/// `--resume --force` of a pipeline whose `steps` fell below the
/// checkpoint is refused (the weights hold steps it no longer asks for), and
/// a resume after the data file changed says so.
#[test]
fn a_resume_past_steps_is_refused_and_changed_data_is_named() {
    let case = prepare("resume", "resume-past-steps");
    let dir = case.join("killed");
    killed_after_first_checkpoint(&case, &dir);
    let manifest = || std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let before = manifest();
    let pipeline = case.join("pipeline.safer");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(&pipeline, text.replace("steps = 6 steps", "steps = 1 step")).unwrap();
    let rows = std::fs::read_to_string(case.join("rows.jsonl")).unwrap();
    let first = rows
        .lines()
        .next()
        .unwrap()
        .replace("\"id\": \"", "\"id\": \"again-");
    std::fs::write(case.join("rows.jsonl"), format!("{rows}{first}\n")).unwrap();
    let out = run_command(&case, &["--resume", dir.to_str().unwrap(), "--force"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("dataset `d`: its source rows.jsonl changed since this run started"),
        "{stderr}"
    );
    assert!(
        // Step 2, or later if the kill came after another checkpoint.
        stderr.contains("stage `t`: its checkpoint is at step ")
            && stderr.contains(", past the pipeline's `steps = 1`"),
        "{stderr}"
    );
    // The refused resume left the manifest as it was: the first pipeline
    // resumes without `--force`.
    assert_eq!(manifest(), before);
    std::fs::write(&pipeline, &text).unwrap();
    assert!(resume_to_the_end(&case, &dir).contains("resuming from"));
}

/// A forced resume whose pipeline fails before it trains (here a data
/// file it cannot read) leaves the manifest as it was: the run's own
/// pipeline resumes without `--force`, and `forced_from` gains nothing.
#[test]
fn a_forced_resume_that_fails_leaves_the_manifest() {
    let case = prepare("resume", "resume-forced-fails");
    let dir = case.join("killed");
    killed_after_first_checkpoint(&case, &dir);
    let manifest = || std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let before = manifest();
    let pipeline = case.join("pipeline.safer");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    let broken = case.join("broken.safer");
    std::fs::write(&broken, text.replace("rows.jsonl", "nope.jsonl")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_saferc"))
        .args([
            "run",
            broken.to_str().unwrap(),
            "--no-progress",
            "--resume",
            dir.to_str().unwrap(),
            "--force",
        ])
        .current_dir(&case)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nope.jsonl"), "{stderr}");
    assert_eq!(manifest(), before);
    assert!(resume_to_the_end(&case, &dir).contains("resuming from"));
    assert!(!manifest().contains("forced_from"));
}

/// A resume says when the rows' images changed since the run started (the
/// manifest's hash covers the JSONL file; the run keeps the images' digest
/// in `images.json`), and an unchanged resume says nothing of them.
#[test]
fn a_resume_names_changed_images() {
    let case = prepare("resume", "resume-images");
    let dir = case.join("run");
    let said = |stderr: &str| stderr.contains("warning: dataset `d`: its images (under ");
    let first = run_to_the_end(&case, &dir);
    assert!(!said(&first), "{first}");
    assert!(dir.join("images.json").is_file());
    let again = resume_to_the_end(&case, &dir);
    assert!(!said(&again), "{again}");
    let images = case.join("../images");
    std::fs::copy(images.join("b.png"), images.join("a.png")).unwrap();
    let changed = resume_to_the_end(&case, &dir);
    assert!(
        said(&changed) && changed.contains(") changed since this run started"),
        "{changed}"
    );
}

/// A resume says when a model's folder changed since the run started (a
/// stage resumed from its checkpoint reads it for its reference, tokenizer
/// and chat template), and an unchanged resume says nothing of it.
#[test]
fn a_resume_names_a_changed_model_folder() {
    let case = prepare("resume", "resume-model");
    let dir = case.join("run");
    let said = |stderr: &str| stderr.contains("warning: model `policy`: its folder ");
    let first = run_to_the_end(&case, &dir);
    assert!(!said(&first), "{first}");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest["models"]["policy"]
        .as_str()
        .unwrap()
        .starts_with("sampled-sha256:"));
    let again = resume_to_the_end(&case, &dir);
    assert!(!said(&again), "{again}");
    // A fingerprint recorded by an earlier scheme (which counted file
    // times) is not compared.
    let path = dir.join("manifest.json");
    let mut older = manifest.clone();
    older["models"]["policy"] = "sha256:0123".into();
    std::fs::write(&path, older.to_string()).unwrap();
    let older_run = resume_to_the_end(&case, &dir);
    assert!(!said(&older_run), "{older_run}");
    std::fs::write(&path, manifest.to_string()).unwrap();
    let template = case.join("model/chat_template.jinja");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(&template, format!("{text}\n")).unwrap();
    let changed = resume_to_the_end(&case, &dir);
    assert!(
        said(&changed) && changed.contains("changed since this run started"),
        "{changed}"
    );
}

/// In a project, `saferc run` without `--out` writes under `[paths] runs`
/// (relative to the project's folder, wherever it is run from), and its
/// `[run] device` is the run's device unless `--device` or a model names one.
#[test]
fn a_project_s_runs_folder_and_device_are_run_defaults() {
    let case = prepare("resume", "project-defaults");
    let manifest = |device: &str| {
        std::fs::write(
            case.join("safer.toml"),
            format!("[project]\nname = \"demo\"\n\n[paths]\nruns = \"trained\"\n\n[run]\ndevice = \"{device}\"\n"),
        )
        .unwrap();
    };
    manifest("cpu");
    let out = run_command(&case, &[])
        .current_dir(case.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Vec<PathBuf> = std::fs::read_dir(case.join("trained"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].join("manifest.json").is_file());
    let device: Value =
        serde_json::from_str(&std::fs::read_to_string(runs[0].join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(device["device"].as_str(), Some("cpu"), "{device}");
    // Two runs started in the same second go into two folders.
    let both: Vec<_> = (0..2)
        .map(|_| {
            run_command(&case, &[])
                .current_dir(case.parent().unwrap())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in both {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(std::fs::read_dir(case.join("trained")).unwrap().count(), 3);
    // A device this build lacks: the project's default is used, and refused.
    if !cfg!(feature = "wgpu") {
        manifest("wgpu");
        let out = run_command(&case, &["--out", case.join("w").to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("device `wgpu` is not built into this saferc"),
            "{stderr}"
        );
    }
}

#[test]
fn resume_refuses_a_changed_pipeline_unless_forced() {
    let case = prepare("resume", "resume-changed");
    let dir = case.join("out");
    assert!(run(&case, &dir).status.success());
    let pipeline = case.join("pipeline.safer");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(&pipeline, text.replace("1e-3", "2e-3")).unwrap();
    let manifest = |dir: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
    };
    let first_hash = manifest(&dir)["program_hash"].clone();
    let refused = run_command(&case, &["--resume", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("the pipeline changed since this run started"));
    let forced = run_command(&case, &["--resume", dir.to_str().unwrap(), "--force"])
        .output()
        .unwrap();
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    // The manifest describes the pipeline the run went on with.
    let after = manifest(&dir);
    assert_ne!(after["program_hash"], first_hash);
    assert_eq!(after["forced_from"], serde_json::json!([first_hash]));
    let again = run(&case, &dir);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a second run into the same folder is refused"
    );
}

/// The executor on wgpu (CI runs it on Mesa's software Vulkan driver): an
/// SFT stage then a GRPO stage; the SFT loss matches the CPU run's.
#[cfg(feature = "wgpu")]
#[test]
fn two_stages_run_on_wgpu_as_on_the_cpu() {
    let case = prepare("two_stages", "two-stages-wgpu");
    let summary = |device: &str| -> Value {
        let dir = case.join(format!("run-{device}"));
        let out = run_command(&case, &["--out", dir.to_str().unwrap(), "--device", device])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{device}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        summary_of(&dir)
    };
    let (gpu, cpu) = (summary("wgpu"), summary("cpu"));
    assert_eq!(gpu["device"], "wgpu");
    assert_eq!(gpu["stages"][1]["training"]["algorithm"], "grpo");
    let loss = |s: &Value| s["stages"][0]["training"]["final_loss"].as_f64().unwrap();
    println!(
        "SFT loss after 2 steps: wgpu {}, cpu {}",
        loss(&gpu),
        loss(&cpu)
    );
    assert!((loss(&gpu) - loss(&cpu)).abs() < 1e-4);
}

/// Declares the case's model `dtype = bf16` in its pipeline.
fn declare_bf16(case: &Path) {
    let pipeline = case.join("pipeline.safer");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(
        &pipeline,
        text.replace(
            "weights = \"model\"",
            "weights = \"model\"\n  dtype   = bf16",
        ),
    )
    .unwrap();
}

/// A model stored in BF16 is trained in f32 and saved in f32, exactly as
/// trained (rounding to BF16 would undo most of a short run's updates,
/// which are far below BF16's step); with `dtype = bf16` it is saved in
/// BF16, each weight the nearest BF16 value to the trained one. Either
/// way `config.json` is the source's as written, fields saferc does not
/// read included, and the tokenizer's other files are beside it.
#[test]
fn a_trained_model_is_saved_exactly_or_in_its_declared_dtype() {
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};
    let case = prepare("resume", "bf16-source");
    let model = case.join("model");
    let weights = model.join("model.safetensors");
    let f32_bytes = std::fs::read(&weights).unwrap();
    let source = SafeTensors::deserialize(&f32_bytes).unwrap();
    // Each f32's upper half is a BF16 value.
    let halves: Vec<(String, Vec<usize>, Vec<u8>)> = source
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let bf16 = view
                .data()
                .chunks_exact(4)
                .flat_map(|c| [c[2], c[3]])
                .collect();
            (name, view.shape().to_vec(), bf16)
        })
        .collect();
    let views: Vec<(&str, TensorView)> = halves
        .iter()
        .map(|(name, shape, data)| {
            (
                name.as_str(),
                TensorView::new(Dtype::BF16, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &weights).unwrap();
    let config_path = model.join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["torch_dtype"] = "bfloat16".into();
    config["notes"] = serde_json::json!({"kept": ["as", "written"]});
    std::fs::write(&config_path, serde_json::to_string(&config).unwrap()).unwrap();
    std::fs::write(model.join("merges.txt"), "#version: 0.2\n").unwrap();

    // The trained model and the last checkpoint (step 6 of 6), by tensor.
    let saved_and_trained = |dir: &Path| {
        let read = |path: PathBuf| {
            let bytes = std::fs::read(path).unwrap();
            let file = SafeTensors::deserialize(&bytes).unwrap();
            let mut tensors: Vec<(String, Dtype, Vec<u8>)> = file
                .tensors()
                .into_iter()
                .map(|(name, view)| (name, view.dtype(), view.data().to_vec()))
                .collect();
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            tensors
        };
        let saved = read(dir.join("models/t/model.safetensors"));
        let trained = read(dir.join("checkpoints/t/step-000006/model.safetensors"));
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("models/t/config.json")).unwrap(),
        )
        .unwrap();
        assert!(dir.join("models/t/merges.txt").is_file());
        (saved, trained, config)
    };

    let exact = case.join("exact");
    run_to_the_end(&case, &exact);
    let (saved, trained, saved_config) = saved_and_trained(&exact);
    assert_eq!(saved_config, config);
    assert_eq!(
        saved, trained,
        "the trained model differs from its last checkpoint"
    );
    assert!(saved.iter().all(|(_, dtype, _)| *dtype == Dtype::F32));
    let changed = saved
        .iter()
        .filter(|(name, _, data)| {
            let before = halves.iter().find(|(n, _, _)| n == name).unwrap();
            let as_f32: Vec<u8> = before
                .2
                .chunks_exact(2)
                .flat_map(|c| [0, 0, c[0], c[1]])
                .collect();
            *data != as_f32
        })
        .count();
    assert!(changed > 0, "training changed no weight");

    declare_bf16(&case);
    let rounded = case.join("rounded");
    let stderr = run_to_the_end(&case, &rounded);
    assert!(
        stderr.contains("saves the trained model in bf16"),
        "{stderr}"
    );
    let (saved, trained, saved_config) = saved_and_trained(&rounded);
    assert_eq!(saved_config, config);
    for ((name, dtype, data), (_, _, f32_data)) in saved.iter().zip(&trained) {
        assert_eq!(*dtype, Dtype::BF16, "{name}");
        // Round to nearest, ties to even, of each trained f32.
        let nearest: Vec<u8> = f32_data
            .chunks_exact(4)
            .flat_map(|c| {
                let bits = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                let rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16;
                (rounded as u16).to_le_bytes()
            })
            .collect();
        assert_eq!(*data, nearest, "{name}");
    }
}

/// A finished stage's model that changed on disk since (a later stage
/// reads it) is not reused on resume as it is: the stage's result names
/// the checksums of its files, and a model that differs is saved again
/// from the stage's last checkpoint, as it was.
#[test]
fn a_resume_saves_again_a_finished_stage_s_changed_model() {
    let case = prepare("resume", "changed-final-model");
    let dir = case.join("run");
    run_to_the_end(&case, &dir);
    let summary = summary_of(&dir);
    let weights = dir.join("models/t/model.safetensors");
    let saved = std::fs::read(&weights).unwrap();
    let stage: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("models/t/stage.json")).unwrap())
            .unwrap();
    assert!(
        stage["checksums"]["model.safetensors"].is_string(),
        "{stage}"
    );
    let unchanged = resume_to_the_end(&case, &dir);
    assert!(
        unchanged.contains("finished before; reusing"),
        "{unchanged}"
    );
    // The stage's reused result is reported as the run reported it.
    assert_eq!(summary_of(&dir), summary);
    let mut damaged = saved.clone();
    let at = damaged.len() - 3;
    damaged[at] ^= 0x40;
    std::fs::write(&weights, &damaged).unwrap();
    let again = resume_to_the_end(&case, &dir);
    assert!(
        again.contains("does not match the checksum recorded when the stage finished"),
        "{again}"
    );
    assert!(
        again.contains("its model is saved again as it was"),
        "{again}"
    );
    assert_eq!(std::fs::read(&weights).unwrap(), saved);
    assert_eq!(summary_of(&dir), summary);
    let healed = resume_to_the_end(&case, &dir);
    assert!(healed.contains("finished before; reusing"), "{healed}");

    // Without the final step's checkpoint the stage trains its last steps
    // again from the one before (on the CPU, to the same weights).
    std::fs::write(&weights, &damaged).unwrap();
    std::fs::remove_dir_all(dir.join("checkpoints/t/step-000006")).unwrap();
    let retrained = resume_to_the_end(&case, &dir);
    assert!(retrained.contains("resuming from"), "{retrained}");
    assert!(
        retrained.contains("its model is saved again as it was"),
        "{retrained}"
    );
    assert_eq!(std::fs::read(&weights).unwrap(), saved);

    // Saved in another dtype since (`--force`): another model, said so.
    std::fs::write(&weights, &damaged).unwrap();
    declare_bf16(&case);
    let other = force_to_the_end(&case, &dir);
    assert!(
        other.contains("the model saved again differs from the one the stage first saved"),
        "{other}"
    );
}
