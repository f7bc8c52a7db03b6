//! The `Judge` op: who answers for criteria without a scorer and for
//! `judge.score("...")` / `judge.flag("...")` calls.
//!
//! - `rules`: only the built-in scorers; asking it is an error that says
//!   which criterion needs a scorer.
//! - `http`: an OpenAI-compatible `/chat/completions` endpoint (a
//!   vLLM-served reward model, a hosted API). Each question is one request
//!   asking for a score between 0 and 1; 408, 429, 5xx and timeouts are retried
//!   with exponential backoff (honouring `Retry-After`; a refused TLS
//!   certificate is not retried), at most `retries`
//!   times (no wait longer than [`MAX_RETRY_AFTER`], whatever the backoff
//!   or `Retry-After` says),
//!   with at most `concurrency` requests in flight: its questions are asked
//!   from a pool of that many threads ([`Judge::pool`]), not from the
//!   CPU-sized pool that scores rules. An `https` endpoint under a private
//!   certificate authority trusts the judge's `ca_file`
//!   ([`super::judge_tls`]).
//! - `model`: a local model ([`super::judge_model`]).
//!
//! Replies are parsed strictly ([`parse_score`]): one number in the range
//! the question asks for (0 to 1, or the criterion's `scale`), as
//! [`JUDGE_SYSTEM_PROMPT`] asks. A reply without one takes the
//! judge's declared `fallback` (the first such reply is printed as a
//! warning, and every one is counted: [`JudgeCounts`], `summary.json`'s
//! `judges`), or is an error naming the reply.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use safer_ir::masked_url;
use safer_ir::plan::{EvalError, JudgeSpec};
use serde_json::{json, Value};

use super::data::Row;
use super::judge_images::ImageUrls;

/// What a `model` or `http` judge is told first.
pub const JUDGE_SYSTEM_PROMPT: &str =
    "You grade responses. Reply with one number in the range the question gives and nothing else.";

/// What a judge is asked: one completion on one criterion.
pub struct Question<'a> {
    /// The criterion's name (or a `judge.score("...")` call's question).
    pub criterion: &'a str,
    /// The criterion's description.
    pub description: Option<&'a str>,
    /// The row whose prompt was answered.
    pub row: &'a Row,
    /// The completion to score.
    pub completion: &'a str,
    /// The range the score is asked in: the criterion's `scale`, or 0..1.
    pub range: (f64, f64),
}

impl Question<'_> {
    /// The chat messages every judge is asked with: the system prompt, and
    /// a user turn of the row's `images` (`data:` URLs, as OpenAI
    /// `image_url` parts, before the text, as the policy was shown them)
    /// and [`Question::text`].
    pub fn messages(&self, images: &[Arc<str>]) -> Value {
        let text = self.text(images.len());
        let user = if images.is_empty() {
            Value::String(text)
        } else {
            let mut parts: Vec<Value> = images
                .iter()
                .map(|url| json!({"type": "image_url", "image_url": {"url": &**url}}))
                .collect();
            parts.push(json!({"type": "text", "text": text}));
            Value::Array(parts)
        };
        json!([
            {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
            {"role": "user", "content": user},
        ])
    }

    /// The question: the criterion and its description, the prompt (and
    /// how many `images` are shown above it), the response and the range
    /// of the score.
    pub fn text(&self, images: usize) -> String {
        let (lo, hi) = self.range;
        let shown = match images {
            0 => String::new(),
            1 => " (asked with the image above)".to_string(),
            n => format!(" (asked with the {n} images above)"),
        };
        format!(
            "Criterion `{}`: {}\n\nPrompt{shown}:\n{}\n\nResponse:\n{}\n\nScore ({lo} to {hi}):",
            self.criterion,
            self.description.unwrap_or(self.criterion),
            self.row.prompt,
            self.completion
        )
    }
}

/// The longest wait before a retry, whatever the backoff or a
/// `Retry-After` header says.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What a judge did, for `summary.json`: questions asked, those that
/// showed the row's images, replies without a score that took the
/// fallback, and retried requests. Training
/// checkpoints keep them, so that a resumed run counts what the run as a
/// whole asked (as an uninterrupted run would), not only its last process.
#[derive(Default)]
pub struct JudgeCounts {
    asked: AtomicU64,
    with_images: AtomicU64,
    fallbacks: AtomicU64,
    retries: AtomicU64,
    warned: AtomicBool,
    warned_unseen: AtomicBool,
    warned_unasked: AtomicBool,
}

impl JudgeCounts {
    /// The counts as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "asked": self.asked.load(Ordering::Relaxed),
            "with_images": self.with_images.load(Ordering::Relaxed),
            "fallbacks": self.fallbacks.load(Ordering::Relaxed),
            "retries": self.retries.load(Ordering::Relaxed),
        })
    }

    /// Takes the counts of `saved` (from [`Self::to_json`] in a
    /// checkpoint): what the run had asked when it was saved.
    pub fn restore(&self, saved: &Value) {
        let count = |key: &str| saved.get(key).and_then(Value::as_u64).unwrap_or(0);
        self.asked.store(count("asked"), Ordering::Relaxed);
        self.with_images
            .store(count("with_images"), Ordering::Relaxed);
        self.fallbacks.store(count("fallbacks"), Ordering::Relaxed);
        self.retries.store(count("retries"), Ordering::Relaxed);
    }

    /// Counts a question, when it is asked (a question whose request then
    /// fails is counted too).
    pub fn asking(&self) {
        self.asked.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a question that shows the judge the row's images.
    pub fn showing_images(&self) {
        self.with_images.fetch_add(1, Ordering::Relaxed);
    }

    /// The score of a question judge `judge` was not asked (`why`): as a
    /// reply without a score, its `fallback` on `range` (counted, and said
    /// the first time), or an error saying why.
    pub fn unasked(
        &self,
        judge: &str,
        why: &str,
        range: (f64, f64),
        fallback: Option<f64>,
    ) -> Result<f64, String> {
        let Some(f) = fallback else {
            return Err(format!(
                "judge `{judge}` was not asked: {why}; declare `fallback = ...` on the judge to score such questions with a fixed score instead"
            ));
        };
        Ok(self.fallback_on(f, range, &self.warned_unasked, || {
            format!("warning: judge `{judge}` was not asked: {why}; using its fallback {f} (said once; every fallback is counted in summary.json's `judges`)")
        }))
    }

    /// The fallback `f` (a score on 0..1, as a criterion's is) as the raw
    /// score on `range` that maps to it, counted; `warning` is printed the
    /// first time `warned` is raised.
    fn fallback_on(
        &self,
        f: f64,
        range: (f64, f64),
        warned: &AtomicBool,
        warning: impl FnOnce() -> String,
    ) -> f64 {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        if !warned.swap(true, Ordering::Relaxed) {
            crate::stderr_line!("{}", warning());
        }
        let (lo, hi) = range;
        lo + f * (hi - lo)
    }

    /// Says, the first time, that judge `judge` scores a row that has
    /// images from its text alone (`why`: why it is not shown them).
    pub fn unseen_images(&self, judge: &str, row: &Row, why: &str) {
        if !row.images.is_empty() && !self.warned_unseen.swap(true, Ordering::Relaxed) {
            crate::stderr_line!(
                "warning: judge `{judge}` is not shown the rows' images ({why}): rows with images are scored from their text alone (such as {})",
                row.origin
            );
        }
    }

    /// The score in judge `judge`'s `reply` to a question asking for
    /// `range`, or its `fallback` (counted, and printed the first time), or
    /// an error naming the reply (the key in `authorization` hidden).
    pub fn score_of(
        &self,
        judge: &str,
        reply: Reply<'_>,
        range: (f64, f64),
        fallback: Option<f64>,
        authorization: Option<&str>,
    ) -> Result<f64, String> {
        let (lo, hi) = range;
        if let Some(v) = match reply {
            Reply::Said(said) => parse_score(said, range),
            Reply::Cut(..) | Reply::NotAReply(_) => None,
        } {
            return Ok(v);
        }
        // What messages quote, the key hidden before the quote is cut.
        let hidden =
            |text: &str| authorization.map_or_else(|| text.to_string(), |a| redacted(text, a));
        let head = |text: String| -> String { text.chars().take(500).collect() };
        let (warned, failed) = match reply {
            // What follows its reasoning, with the closing tag.
            Reply::Said(text) => {
                let quoted = match reasoning_end(text) {
                    Some((tag, _)) => format!("…{}", &text[tag..]),
                    None => text.to_string(),
                };
                let quoted = head(hidden(&quoted));
                let answer = after_reasoning(text).unwrap_or(text).trim();
                if answer
                    .parse::<f64>()
                    .is_ok_and(|v| v.is_finite() && !(lo..=hi).contains(&v))
                {
                    (
                        format!("replied {quoted:?}, a number outside {lo}..{hi}"),
                        format!("replied {quoted:?}, a number outside {lo}..{hi}, the range its question asked for; check the judge's prompt and `scale`, or"),
                    )
                } else {
                    (
                        format!("replied {quoted:?}, not one number from {lo} to {hi}"),
                        format!("replied {quoted:?}, which holds no score (one number from {lo} to {hi} was asked for);"),
                    )
                }
            }
            // Its end, where the cut is.
            Reply::Cut(text, limit) => {
                let hidden = hidden(text);
                let count = hidden.chars().count();
                let tail: String = hidden.chars().skip(count.saturating_sub(300)).collect();
                let open = if reasoning_end(text).is_none() && text.contains("<think") {
                    " inside its reasoning (no `</think>`)"
                } else {
                    ""
                };
                let cut = format!("replied \"…{tail}\", cut at its length limit{open} ({limit}), which holds no score: give it room with the judge's `max_tokens`");
                (cut.clone(), format!("{cut}, or"))
            }
            Reply::NotAReply(text) => {
                let not = format!(
                    "replied {:?}, which is not a chat completion's reply (no `choices[0].message.content`) and holds no score",
                    head(hidden(text))
                );
                (not.clone(), format!("{not};"))
            }
        };
        match fallback {
            Some(f) => Ok(self.fallback_on(f, range, &self.warned, || {
                format!("warning: judge `{judge}` {warned}; using its fallback {f} (every fallback is counted in summary.json's `judges`)")
            })),
            None => Err(format!(
                "judge `{judge}` {failed} declare `fallback = ...` on the judge to use a fixed score instead"
            )),
        }
    }
}

/// What a judge answered a question.
#[derive(Clone, Copy)]
pub enum Reply<'a> {
    /// Its reply: a chat completion's content, a local model's words.
    Said(&'a str),
    /// A reply cut at its length limit (`finish_reason` `length`), and
    /// which limit.
    Cut(&'a str, &'a str),
    /// An answer that is not a chat completion, as read.
    NotAReply(&'a str),
}

/// Something that scores a completion on a named criterion, 0..1.
pub trait Judge: Sync {
    /// The threads to ask from, for a judge that waits on something other
    /// than this machine's CPUs (an HTTP endpoint: `concurrency` threads);
    /// `None` for judges that compute here, which share the CPU-sized pool.
    fn pool(&self) -> Option<&rayon::ThreadPool> {
        None
    }

    /// Whether questions must be asked one at a time from outside the
    /// CPU's pool (a judge that computes on that pool under a lock).
    fn serial(&self) -> bool {
        false
    }

    /// What the judge did so far (`summary.json`'s `judges`); `None` for
    /// judges that never ask anyone.
    fn counts(&self) -> Option<&JudgeCounts> {
        None
    }

    /// The score `question` asks for, in its range.
    ///
    /// # Errors
    /// The judge cannot answer (after its retries).
    fn ask(&self, question: &Question<'_>) -> Result<f64, EvalError>;
}

/// The `rules` judge: built-in scorers only.
pub struct RulesJudge;

impl Judge for RulesJudge {
    fn ask(&self, question: &Question<'_>) -> Result<f64, EvalError> {
        Err(EvalError::Call(format!(
            "criterion `{}` has no scorer and the judge is `rules`; give it `scorer = ...` or use a `model` or `http` judge",
            question.criterion
        )))
    }
}

/// Why a request failed: whether to retry it, the reason, and how long the
/// server asked to wait (`Retry-After`).
type Failure = (bool, String, Option<Duration>);

/// An OpenAI-compatible HTTP judge.
pub struct HttpJudge {
    name: String,
    /// `endpoint` with `/chat/completions`, without the user and password a
    /// URL may hold (they go in `authorization`, so no message shows them).
    url: String,
    /// `endpoint` with `/chat/completions` and a password masked, for messages.
    shown_url: String,
    /// The `Authorization` header: `Bearer` with the API key, else `Basic`
    /// with the URL's user and password (percent-decoded).
    authorization: Option<String>,
    /// Set by Ctrl+C, SIGTERM or SIGHUP: no retry starts, and a wait for
    /// one ends.
    interrupt: Arc<AtomicBool>,
    model: String,
    retries: u32,
    temperature: f64,
    /// The longest reply (`max_tokens`), sent when declared.
    max_tokens: Option<usize>,
    fallback: Option<f64>,
    agent: ureq::Agent,
    /// `concurrency` threads: every question is asked from them
    /// ([`Judge::pool`]), so at most that many requests are in flight.
    pool: rayon::ThreadPool,
    /// First backoff; doubled per retry.
    backoff: Duration,
    counts: JudgeCounts,
    /// The first failure that stops the run (a question that failed for
    /// good, or a reply without a score and no fallback): from then on no
    /// question is asked, no retry is waited for, and each one under way
    /// ends with this message (it stopped the run at once, not after
    /// another question's wait for its retry).
    failed: std::sync::Mutex<Option<String>>,
    /// Retry warnings: at most one a second is printed ([`RetryWarnings`]).
    retry_warnings: std::sync::Mutex<RetryWarnings>,
    /// Whether questions show the row's images (`images`).
    images: bool,
    /// The images' `data:` URLs, kept for the row's next questions.
    image_urls: ImageUrls,
}

/// Retry warnings of one judge, printed at most one a second: at
/// `concurrency = 64`, a server restarting would otherwise print 64 lines
/// per round of retries. A printed line counts the retries left unprinted
/// since the one before.
#[derive(Default)]
struct RetryWarnings {
    last: Option<std::time::Instant>,
    unprinted: u64,
}

impl RetryWarnings {
    /// `line`, with the retries unprinted before it, when one is due
    /// (none printed within a second); else `None`, counted.
    fn due(&mut self, line: String) -> Option<String> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            self.unprinted += 1;
            return None;
        }
        self.last = Some(now);
        let line = match std::mem::take(&mut self.unprinted) {
            0 => line,
            n => format!("{line} ({n} more retries since the last such warning)"),
        };
        Some(line)
    }
}

impl HttpJudge {
    /// A judge for `spec` (`kind = http`).
    ///
    /// # Errors
    /// No endpoint, an API-key variable that is not set, or a `ca_file`
    /// that holds no usable certificate.
    pub fn new(name: &str, spec: &JudgeSpec, interrupt: Arc<AtomicBool>) -> Result<Self, String> {
        let endpoint = spec
            .endpoint
            .as_deref()
            .ok_or_else(|| format!("judge `{name}` is `kind = http` but has no `endpoint`"))?;
        let full = chat_completions_url(endpoint)
            .map_err(|e| format!("judge `{name}`: `endpoint = {}`: {e}", masked_url(endpoint)))?;
        let (url, basic) = without_credentials(&full);
        let api_key = match &spec.api_key_env {
            Some(var) => Some(api_key(name, var)?),
            None => None,
        };
        // A day bounds any request (and keeps `1e300` or `inf` a Duration).
        let timeout = Duration::from_secs_f64(if spec.timeout_s.is_finite() {
            spec.timeout_s.clamp(0.001, 86_400.0)
        } else {
            86_400.0
        });
        // No redirect is followed: ureq would re-send a POST as a GET
        // without its body (301, 302, 303), so every redirect is reported
        // with where it points instead.
        // As many idle connections kept as requests in flight: each thread
        // reuses one (ureq keeps one per host by default, so most requests
        // opened a connection, and a TLS handshake, of their own).
        let concurrency = spec.concurrency.clamp(1, 1024);
        let mut agent = ureq::AgentBuilder::new()
            .timeout(timeout)
            .redirects(0)
            .max_idle_connections_per_host(concurrency)
            .max_idle_connections(concurrency.max(100));
        if let Some(ca_file) = &spec.ca_file {
            let config = super::judge_tls::trusting(std::path::Path::new(ca_file))
                .map_err(|e| format!("judge `{name}`: {e}"))?;
            agent = agent.tls_config(config);
        }
        Ok(HttpJudge {
            name: name.to_string(),
            shown_url: masked_url(&full),
            url,
            authorization: api_key.map(|key| format!("Bearer {key}")).or(basic),
            interrupt,
            model: spec.model_name.clone().unwrap_or_else(|| "default".into()),
            retries: spec.retries,
            temperature: spec.temperature,
            max_tokens: spec.max_tokens,
            fallback: spec.fallback,
            agent: agent.build(),
            pool: rayon::ThreadPoolBuilder::new()
                .num_threads(concurrency)
                .thread_name(|i| format!("judge-{i}"))
                .build()
                .map_err(|e| format!("judge `{name}`: cannot start its threads: {e}"))?,
            counts: JudgeCounts::default(),
            failed: std::sync::Mutex::new(None),
            retry_warnings: std::sync::Mutex::default(),
            images: spec.images,
            image_urls: ImageUrls::default(),
            backoff: Duration::from_millis(
                std::env::var("SAFERC_JUDGE_BACKOFF_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(500),
            ),
        })
    }

    /// The failure that stopped the run, if one has ([`Self::failed`]).
    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records `why` as the failure that stops the run (the first one
    /// stays); the error to return.
    fn fail(&self, why: String) -> EvalError {
        let mut failed = self
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failed.get_or_insert(why.clone());
        EvalError::Call(why)
    }

    /// One request, sent from a thread of its own so that an interrupt
    /// does not wait for its answer (up to `timeout`); `None` when the run
    /// was interrupted first, or another question failed for good (the
    /// request is left to end alone).
    fn request_unless_interrupted(&self, body: &Value) -> Option<Result<String, Failure>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (agent, url, authorization, body) = (
            self.agent.clone(),
            self.url.clone(),
            self.authorization.clone(),
            body.clone(),
        );
        std::thread::spawn(move || {
            let _ = tx.send(send(&agent, &url, authorization.as_deref(), body));
        });
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(answer) => return Some(answer),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if self.interrupt.load(Ordering::SeqCst) || self.failure().is_some() {
                        return None;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Some(Err((
                        true,
                        "the request ended without an answer".into(),
                        None,
                    )))
                }
            }
        }
    }

    /// Waits `wait` before a retry, or less when the run is interrupted
    /// or another question failed for good; whether it was cut short.
    fn wait_unless_interrupted(&self, wait: Duration) -> bool {
        let until = std::time::Instant::now() + wait;
        loop {
            if self.interrupt.load(Ordering::SeqCst) || self.failure().is_some() {
                return true;
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

/// The most bytes of an answer read: a chat completion is a few KB.
const MAX_ANSWER_BYTES: u64 = 10 << 20;

/// One request to `url`; the body of a 2xx answer.
fn send(
    agent: &ureq::Agent,
    url: &str,
    authorization: Option<&str>,
    body: Value,
) -> Result<String, Failure> {
    let answer = send_unredacted(agent, url, authorization, body);
    // A server may echo the key back (`invalid api key: Bearer sk-...`):
    // never shown. A reply is read as it came (a short key could be part
    // of its numbers); what messages quote of it is hidden where quoted.
    match (authorization, answer) {
        (Some(a), Err((retry, why, after))) => Err((retry, redacted(&why, a), after)),
        (_, answer) => answer,
    }
}

/// [`send`], whose messages and reply may hold the key.
fn send_unredacted(
    agent: &ureq::Agent,
    url: &str,
    authorization: Option<&str>,
    body: Value,
) -> Result<String, Failure> {
    let hidden = |text: &str| authorization.map_or_else(|| text.to_string(), |a| redacted(text, a));
    let mut req = agent.post(url);
    if let Some(value) = authorization {
        req = req.set("Authorization", value);
    }
    match req.send_json(body) {
        Ok(resp) if (300..400).contains(&resp.status()) => Err((
            false,
            format!(
                "HTTP {} to {}: the endpoint redirects; set `endpoint` to where it points",
                resp.status(),
                printable(&hidden(resp.header("Location").unwrap_or("(no Location)")))
            ),
            None,
        )),
        // ureq asks for gzip, reads it and drops the header: one still
        // there names an encoding it did not read (`br`, or `GZIP`).
        Ok(resp)
            if resp
                .header("Content-Encoding")
                .is_some_and(|e| !e.trim().is_empty() && !e.trim().eq_ignore_ascii_case("identity")) =>
        {
            Err((
                false,
                format!(
                    "the answer is compressed as `{}`, which saferc did not ask for and cannot read; have the server answer uncompressed or in gzip",
                    printable(resp.header("Content-Encoding").unwrap_or_default())
                ),
                None,
            ))
        }
        // A body cut short or too slow is retried as a failed request is.
        Ok(resp) => {
            use std::io::Read;
            let mut bytes = Vec::new();
            let read = resp
                .into_reader()
                .take(MAX_ANSWER_BYTES + 1)
                .read_to_end(&mut bytes);
            // Bytes that are not UTF-8 (a Latin-1 error page) are a reply
            // without a score, quoted, not a failed read.
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match read {
                Err(e) => Err((true, format!("reading the answer failed: {e}"), None)),
                Ok(n) if n as u64 > MAX_ANSWER_BYTES => Err((
                    false,
                    format!(
                        "the answer is over {} MB; a chat completion is a few KB",
                        MAX_ANSWER_BYTES >> 20
                    ),
                    None,
                )),
                Ok(_) => Ok(text),
            }
        }
        Err(ureq::Error::Status(code, resp)) => {
            let retry_after = resp.header("Retry-After").and_then(retry_after);
            // Hidden before the message cuts it: a key cut in two by the
            // cut would be shown in part.
            let detail = error_detail(&hidden(&resp.into_string().unwrap_or_default()));
            let retryable = retried_status(code);
            Err((retryable, format!("HTTP {code}{detail}"), retry_after))
        }
        Err(ureq::Error::Transport(t)) => {
            // ureq repeats its error's kind in the message ("Network
            // Error: Network Error: ..."): said once.
            let why = without_repeats(&t.to_string());
            // It starts with the URL, which the message around it names.
            let why = why
                .strip_prefix(&format!("{url}: "))
                .map_or_else(|| why.clone(), str::to_string);
            // A certificate that is refused will be refused again.
            match certificate_hint(&why) {
                Some(hint) => Err((false, format!("{why}; {hint}"), None)),
                None => Err((true, why, None)),
            }
        }
    }
}

/// What to do about a request with `images` that the server refused as
/// `why` (`HTTP 400: ...`), for judge `judge`: as a bad request (400, 415,
/// 422: vLLM serving a model that reads text only answers 400), say that
/// `images = false` sends text only; as too large (413), say how large the
/// images were. Empty for any other failure, or a question without images.
fn images_hint(why: &str, images: &[Arc<str>], judge: &str) -> String {
    let status = |code: &str| why == code || why.starts_with(&format!("{code}:"));
    if images.is_empty() {
        return String::new();
    }
    let what = match images.len() {
        1 => "image".to_string(),
        n => format!("{n} images"),
    };
    if ["HTTP 400", "HTTP 415", "HTTP 422"].into_iter().any(status) {
        format!("; the question showed the judge the row's {what}: if the endpoint's model reads text only, set `images = false` on judge `{judge}` (or on its `safer.toml` endpoint)")
    } else if status("HTTP 413") {
        let megabytes = images.iter().map(|u| u.len()).sum::<usize>() as f64 / f64::from(1 << 20);
        format!("; the question showed the judge the row's {what}, {megabytes:.1} MB as sent: shrink the image files, or set `images = false` on judge `{judge}` to send text only")
    } else {
        String::new()
    }
}

/// Whether an answer with HTTP status `code` is retried: 408 (the server
/// timed the request out), 429 (too many requests) and every 5xx.
fn retried_status(code: u16) -> bool {
    code == 408 || code == 429 || code >= 500
}

/// A backoff wait with "equal jitter": between half of `wait` and all of
/// it, drawn afresh each time, so that questions that failed together (a
/// server restarting under 64 requests in flight) do not all come back in
/// the same millisecond. A server's `Retry-After` is kept as it says.
fn jittered(wait: Duration) -> Duration {
    // A fresh `RandomState` is keyed anew (randomly per thread, then one
    // more per call): its empty hash is a random number, with no RNG to
    // seed or share between the judge's threads.
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let fraction = (bits >> 11) as f64 / (1u64 << 53) as f64;
    wait.mul_f64(0.5 + 0.5 * fraction)
}

/// The error of a question stopped because another one failed for good
/// (`why`, that one's error).
fn stopped_by(why: &str) -> EvalError {
    EvalError::Call(format!(
        "not asked to the end: another question to the judge failed: {why}"
    ))
}

/// A 2xx answer whose JSON ends in the middle of a value (a chunked body
/// whose connection closed early reads as complete): cut short, retried
/// as a failed read is; any other answer as it is.
fn cut_short(text: String) -> Result<String, Failure> {
    let json_like = text.trim_start().starts_with(['{', '[']);
    match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
        Err(e) if json_like && e.classify() == serde_json::error::Category::Eof => Err((
            true,
            format!(
                "the answer was cut short: its JSON ends after {} bytes, in the middle",
                text.len()
            ),
            None,
        )),
        _ => Ok(text),
    }
}

/// `text` with each part (between `: `) that repeats the one before it
/// left out.
fn without_repeats(text: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

/// The API key in variable `var`. A key that a header cannot carry (a
/// space, or a line end left by the file it was read from) is refused
/// here, without showing it: every request would fail alike, with the
/// header, key included, in the transport's message.
fn api_key(judge: &str, var: &str) -> Result<String, String> {
    checked_api_key(judge, var, std::env::var(var))
}

/// [`api_key`] of the variable's value as read.
fn checked_api_key(
    judge: &str,
    var: &str,
    value: Result<String, std::env::VarError>,
) -> Result<String, String> {
    let key = value.map_err(|e| match e {
        std::env::VarError::NotPresent => {
            format!("judge `{judge}` reads its API key from ${var}, which is not set")
        }
        std::env::VarError::NotUnicode(_) => {
            format!("judge `{judge}` reads its API key from ${var}, which is not valid UTF-8")
        }
    })?;
    if key.is_empty() {
        return Err(format!(
            "judge `{judge}` reads its API key from ${var}, which is empty"
        ));
    }
    if let Some((at, c)) = key.chars().enumerate().find(|(_, c)| !c.is_ascii_graphic()) {
        let what = if c.is_ascii() {
            "a space, a tab or a line end, as `$(cat file)` or a file written on Windows leaves"
        } else {
            "a character outside ASCII, which API keys do not hold"
        };
        return Err(format!(
            "judge `{judge}`: the API key in ${var} holds a character an HTTP header cannot carry (at character {}; {what}); the key is not shown: set the variable to the key alone",
            at + 1
        ));
    }
    Ok(key)
}

/// `text` with the `Authorization` header's value, and the credential in
/// it, replaced, as written and as a JSON string writes them (a server
/// that echoes the key inside a JSON body escapes its `"` and `\\`): no
/// message shows a key.
fn redacted(text: &str, authorization: &str) -> String {
    let credential = authorization
        .split_once(' ')
        .map_or(authorization, |(_, c)| c);
    let json_escaped = |s: &str| {
        let quoted = serde_json::to_string(s).unwrap_or_default();
        quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let mut out = text.to_string();
    for (secret, shown) in [
        (authorization, "<authorization>"),
        (credential, "<credential>"),
    ] {
        if secret.len() < 4 {
            continue;
        }
        out = out.replace(secret, shown);
        let escaped = json_escaped(secret);
        if escaped != secret && !escaped.is_empty() {
            out = out.replace(&escaped, shown);
        }
    }
    out
}

/// `url` without its user and password, and the `Basic` authorization they
/// make (percent-decoded, as a browser sends them).
fn without_credentials(url: &str) -> (String, Option<String>) {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return (url.to_string(), None);
    };
    if parsed.username().is_empty() && parsed.password().is_none() {
        return (url.to_string(), None);
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = decode(parsed.username());
    let password = parsed.password().map(decode).unwrap_or_default();
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    (parsed.to_string(), Some(format!("Basic {token}")))
}

/// `text` with control characters (a server's escape sequences, line
/// breaks) shown as escapes and cut to 300 characters, for a message.
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(300)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if text.chars().count() > 300 {
        out.push_str("...");
    }
    out
}

/// `endpoint` with `/chat/completions` appended to its path (not twice),
/// its query kept (`?api-version=...`).
///
/// # Errors
/// An endpoint that is not an absolute URL.
fn chat_completions_url(endpoint: &str) -> Result<String, String> {
    let mut url = url::Url::parse(endpoint).map_err(|e| format!("not a URL ({e})"))?;
    let path = url.path().trim_end_matches('/').to_string();
    // `.../chat/completions/` loses its slash too (as the emitted module
    // posts it): servers route the path without one.
    if path.ends_with("/chat/completions") {
        url.set_path(&path);
    } else {
        url.set_path(&format!("{path}/chat/completions"));
    }
    Ok(url.to_string())
}

/// A `Retry-After` value: seconds, or an HTTP date (RFC 9110).
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Seconds; too many to count is as long as the longest wait.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The text of a chat completion's first choice: its message's `content`,
/// a string, or the text parts of a list of parts (as some servers answer,
/// `[{"type": "text", "text": "0.8"}]`) joined; `None` for another shape.
fn reply_text(answer: &Value) -> Option<String> {
    match answer.pointer("/choices/0/message/content")? {
        Value::String(said) => Some(said.clone()),
        Value::Array(parts) => {
            let texts: Option<Vec<&str>> = parts
                .iter()
                .filter(|p| matches!(p["type"].as_str(), Some("text" | "output_text")))
                .map(|p| p["text"].as_str())
                .collect();
            texts.filter(|t| !t.is_empty()).map(|t| t.concat())
        }
        _ => None,
    }
}

/// What an error answer says (OpenAI's and vLLM's `{"error": {"message":
/// ...}}`, or the start of its text), as `: ...`; empty when it says nothing.
fn error_detail(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| {
            ["/error/message", "/error", "/message", "/detail"]
                .iter()
                .find_map(|p| v.pointer(p).and_then(Value::as_str))
        })
        .map(str::to_string)
        .unwrap_or_else(|| body.trim().chars().take(200).collect());
    if message.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", printable(message.trim()))
    }
}

/// What to do about a TLS error that refused the endpoint's certificate
/// (rustls says "invalid peer certificate: ..."); `None` for any other
/// error. Such errors are not retried.
fn certificate_hint(why: &str) -> Option<&'static str> {
    if !why.contains("invalid peer certificate") {
        return None;
    }
    Some(if why.contains("UnknownIssuer") {
        "no trusted authority signed the endpoint's certificate: if it is under a private CA, set the judge's `ca_file` to that CA's PEM file"
    } else {
        "the endpoint's certificate was refused (expired, or issued for another name?)"
    })
}

/// Where a reply's reasoning ends: the start and end of its last
/// `</think>` (or `</thinking>`), as a judge that reasons first writes it
/// (Qwen3, DeepSeek-R1 and generative reward models served without a
/// reasoning parser; the opening tag may be in the prompt); `None` for a
/// reply without one.
fn reasoning_end(text: &str) -> Option<(usize, usize)> {
    ["</think>", "</thinking>"]
        .iter()
        .filter_map(|tag| text.rfind(tag).map(|at| (at, at + tag.len())))
        .max_by_key(|&(_, end)| end)
}

/// What a reply says after its reasoning ([`reasoning_end`]); `None` for
/// a reply without one.
pub fn after_reasoning(text: &str) -> Option<&str> {
    reasoning_end(text).map(|(_, end)| &text[end..])
}

/// The score in a judge's reply to a question asking for `range`, parsed
/// strictly (after its reasoning, [`after_reasoning`]): after trimming white space (and one closing full stop), the
/// reply must be one decimal number (`0`, `7`, `0.75`, `.5`, `1.0`; a
/// minus sign only where the range has negative numbers) within the range.
/// Anything else (an exponent, a number out of range, words around the
/// number, a verdict word) holds no score.
pub fn parse_score(text: &str, range: (f64, f64)) -> Option<f64> {
    let (lo, hi) = range;
    let t = after_reasoning(text).unwrap_or(text).trim();
    let t = t
        .strip_suffix('.')
        .filter(|r| r.contains(|c: char| c.is_ascii_digit()) && !r.ends_with('.'))
        .unwrap_or(t);
    let unsigned = t.strip_prefix('-').filter(|_| lo < 0.0).unwrap_or(t);
    let digits = unsigned.chars().filter(char::is_ascii_digit).count();
    let dots = unsigned.chars().filter(|&c| c == '.').count();
    if digits == 0 || dots > 1 || digits + dots != unsigned.chars().count() {
        return None;
    }
    t.parse::<f64>().ok().filter(|v| (lo..=hi).contains(v))
}

impl Judge for HttpJudge {
    fn pool(&self) -> Option<&rayon::ThreadPool> {
        Some(&self.pool)
    }

    fn counts(&self) -> Option<&JudgeCounts> {
        Some(&self.counts)
    }

    fn ask(&self, question: &Question<'_>) -> Result<f64, EvalError> {
        if let Some(why) = self.failure() {
            return Err(stopped_by(&why));
        }
        let images = if self.images {
            question
                .row
                .images
                .iter()
                .map(|path| self.image_urls.of(path))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.fail(format!("judge `{}`: {e}", self.name)))?
        } else {
            self.counts
                .unseen_images(&self.name, question.row, "`images = false`");
            Vec::new()
        };
        let mut body = json!({
            "model": self.model,
            "temperature": self.temperature,
            "messages": question.messages(&images),
        });
        if let Some(n) = self.max_tokens {
            body["max_tokens"] = json!(n);
        }
        self.counts.asking();
        if !images.is_empty() {
            self.counts.showing_images();
        }
        let interrupted_before_retry = |why: &str| {
            EvalError::Call(format!(
                "the judge at {} failed ({why}) and the run was interrupted before its retry",
                self.shown_url
            ))
        };
        let mut attempt = 0u32;
        loop {
            let Some(answer) = self.request_unless_interrupted(&body) else {
                if let Some(why) = self.failure() {
                    break Err(stopped_by(&why));
                }
                break Err(EvalError::Call(format!(
                    "the run was interrupted while the judge at {} was answering",
                    self.shown_url
                )));
            };
            match answer.and_then(cut_short) {
                Ok(text) => {
                    // A reply in another shape than chat completions' (other
                    // JSON, or no JSON) is a reply without a score, shown;
                    // one cut at its length limit holds no whole score.
                    let answer: Option<Value> = serde_json::from_str(&text).ok();
                    let content = answer.as_ref().and_then(reply_text);
                    let cut = answer
                        .as_ref()
                        .and_then(|a| a.pointer("/choices/0/finish_reason"))
                        .and_then(Value::as_str)
                        == Some("length");
                    let limit = match self.max_tokens {
                        Some(n) => format!("`max_tokens` {n}"),
                        None => "the server's default length: `max_tokens` is not set".to_string(),
                    };
                    let reply = match &content {
                        Some(said) if cut => Reply::Cut(said, &limit),
                        Some(said) => Reply::Said(said),
                        None => Reply::NotAReply(&text),
                    };
                    break self
                        .counts
                        .score_of(
                            &self.name,
                            reply,
                            question.range,
                            self.fallback,
                            self.authorization.as_deref(),
                        )
                        .map_err(|e| self.fail(format!("{e} (from {})", self.shown_url)));
                }
                Err((true, why, _)) if self.interrupt.load(Ordering::SeqCst) => {
                    break Err(interrupted_before_retry(&why));
                }
                Err((true, why, retry_after)) if attempt < self.retries => {
                    let wait = retry_after
                        .unwrap_or_else(|| {
                            jittered(self.backoff.saturating_mul(2u32.saturating_pow(attempt)))
                        })
                        .min(MAX_RETRY_AFTER);
                    self.counts.retries.fetch_add(1, Ordering::Relaxed);
                    let line = format!(
                        "warning: judge `{}` at {} failed ({why}); retry {} of {} in {:.1}s",
                        self.name,
                        self.shown_url,
                        attempt + 1,
                        self.retries,
                        wait.as_secs_f64()
                    );
                    let due = self
                        .retry_warnings
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .due(line);
                    if let Some(line) = due {
                        crate::stderr_line!("{line}");
                    }
                    if self.wait_unless_interrupted(wait) {
                        if let Some(failed) = self.failure() {
                            break Err(stopped_by(&failed));
                        }
                        break Err(interrupted_before_retry(&why));
                    }
                    attempt += 1;
                }
                Err((_, why, _)) => {
                    let attempts = attempt + 1;
                    let hint = images_hint(&why, &images, &self.name);
                    break Err(self.fail(format!(
                        "judge `{}` at {} failed after {attempts} attempt{}: {why}{hint}",
                        self.name,
                        self.shown_url,
                        if attempts == 1 { "" } else { "s" }
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::parse_score;

    /// A key a header cannot carry is refused before any request, and
    /// never shown; a transport error never shows the header's value.
    #[test]
    fn api_keys_are_checked_and_never_shown() {
        use super::{checked_api_key, redacted};
        use std::env::VarError;
        let check = |value| checked_api_key("j", "K", value);
        assert_eq!(check(Ok("sk-abc123".into())), Ok("sk-abc123".into()));
        for bad in [
            "sk-SECRET123\r",
            "sk-SECRET123\n",
            "sk SECRET123",
            "sk-SECRET123\t",
        ] {
            let err = check(Ok(bad.into())).unwrap_err();
            assert!(
                err.contains("cannot carry") && !err.contains("SECRET"),
                "{err}"
            );
        }
        assert!(check(Ok(String::new())).unwrap_err().contains("is empty"));
        assert!(check(Err(VarError::NotPresent))
            .unwrap_err()
            .contains("not set"));
        let not_utf8 = VarError::NotUnicode(std::ffi::OsString::new());
        assert!(check(Err(not_utf8))
            .unwrap_err()
            .contains("not valid UTF-8"));
        let why = "Bad Header: invalid header 'Authorization: Bearer sk-SECRET123'";
        let shown = redacted(why, "Bearer sk-SECRET123");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!redacted("key sk-SECRET123 echoed", "Bearer sk-SECRET123").contains("SECRET"));
        // A key with `"` or `\\`, echoed inside a JSON body (escaped there).
        let key = r#"Bearer sk-SECRET123"q\z"#;
        let body = serde_json::json!({ "detail": format!("bad key {key}") }).to_string();
        let shown = redacted(&body, key);
        assert!(!shown.contains("SECRET"), "{shown}");
        assert_eq!(shown, r#"{"detail":"bad key <authorization>"}"#);
        // A non-ASCII character is named as one.
        let err = check(Ok("sk-é".into())).unwrap_err();
        assert!(
            err.contains("outside ASCII") && !err.contains("sk-"),
            "{err}"
        );
    }

    /// Retry warnings print at most one a second; the next printed counts
    /// the ones left out.
    #[test]
    fn retry_warnings_are_throttled_and_counted() {
        let mut warnings = super::RetryWarnings::default();
        assert_eq!(warnings.due("a".into()).as_deref(), Some("a"));
        assert_eq!(warnings.due("b".into()), None);
        assert_eq!(warnings.due("c".into()), None);
        warnings.last = Some(std::time::Instant::now() - std::time::Duration::from_secs(2));
        assert_eq!(
            warnings.due("d".into()).as_deref(),
            Some("d (2 more retries since the last such warning)")
        );
    }

    /// 408, 429 and 5xx are retried; other answers are not. A backoff wait
    /// is jittered within its upper half.
    #[test]
    fn retried_answers_and_jittered_waits() {
        use super::{jittered, retried_status};
        use std::time::Duration;
        for code in [408, 429, 500, 502, 503, 599] {
            assert!(retried_status(code), "{code}");
        }
        for code in [400, 401, 403, 404, 413, 422] {
            assert!(!retried_status(code), "{code}");
        }
        let wait = Duration::from_millis(800);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(wait)).collect();
        assert!(
            waits.iter().all(|w| *w >= wait / 2 && *w <= wait),
            "{waits:?}"
        );
        assert!(waits.iter().any(|w| *w != waits[0]), "no jitter");
    }

    #[test]
    fn endpoint_urls() {
        use super::chat_completions_url;
        use safer_ir::masked_url;
        let url = |e: &str| chat_completions_url(e).unwrap_or_default();
        assert_eq!(url("http://h:8000/v1"), "http://h:8000/v1/chat/completions");
        assert_eq!(
            url("http://h:8000/v1/"),
            "http://h:8000/v1/chat/completions"
        );
        assert_eq!(
            url("https://h/openai/deployments/x?api-version=2024-06-01"),
            "https://h/openai/deployments/x/chat/completions?api-version=2024-06-01"
        );
        assert_eq!(
            url("http://h/v1/chat/completions"),
            "http://h/v1/chat/completions"
        );
        assert_eq!(
            url("http://h/v1/chat/completions/"),
            "http://h/v1/chat/completions"
        );
        assert!(chat_completions_url("h/v1").is_err());
        assert_eq!(masked_url("https://me:secret@h/v1"), "https://me:***@h/v1");
        // Credentials leave the URL (so no transport error can show them)
        // and become a Basic header, percent-decoded.
        use super::without_credentials;
        let (bare, auth) = without_credentials("http://alice:hun%40ter@h/v1/chat/completions");
        assert_eq!(bare, "http://h/v1/chat/completions");
        assert_eq!(auth.as_deref(), Some("Basic YWxpY2U6aHVuQHRlcg=="));
        assert_eq!(without_credentials("http://h/v1").1, None);
        assert_eq!(masked_url("https://h/v1"), "https://h/v1");
    }

    #[test]
    fn retry_after_and_error_details() {
        use super::{error_detail, retry_after};
        use std::time::{Duration, SystemTime};
        assert_eq!(retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        assert!(retry_after(&later).is_some_and(|d| d > Duration::from_secs(100)));
        assert_eq!(retry_after("soon"), None);
        assert_eq!(
            retry_after("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(error_detail("a\u{1b}[2Jb"), ": a\\u{1b}[2Jb");
        assert!(error_detail(&"x".repeat(5000)).len() < 320);
        assert_eq!(
            error_detail(r#"{"error": {"message": "no such model"}}"#),
            ": no such model"
        );
        assert_eq!(error_detail(r#"{"detail": "Not Found"}"#), ": Not Found");
        assert_eq!(error_detail("  "), "");
        assert_eq!(error_detail("<html>oops</html>"), ": <html>oops</html>");
    }

    #[test]
    fn a_transport_error_says_its_kind_once() {
        assert_eq!(
            super::without_repeats("Network Error: Network Error: timed out reading response"),
            "Network Error: timed out reading response"
        );
        assert_eq!(super::without_repeats("a: b: a"), "a: b: a");
    }

    /// A fallback is the criterion's score on 0..1: on a question asked on
    /// 1..10 it is the raw score that maps to it.
    #[test]
    fn a_fallback_maps_onto_the_range_asked() {
        let counts = super::JudgeCounts::default();
        let raw = counts.score_of(
            "j",
            super::Reply::Said("no idea"),
            (1.0, 10.0),
            Some(0.25),
            None,
        );
        assert_eq!(raw, Ok(1.0 + 0.25 * 9.0));
        assert_eq!(
            counts.score_of("j", super::Reply::Said("0.5"), (0.0, 1.0), Some(0.25), None),
            Ok(0.5)
        );
        // Without a fallback: a number out of range says so; an exponent
        // or words hold no score.
        let out = counts.score_of("j", super::Reply::Said("1.5"), (0.0, 1.0), None, None);
        assert!(
            out.as_ref()
                .is_err_and(|e| e.contains("a number outside 0..1")),
            "{out:?}"
        );
        // A reply is read as it came, even where a short key is part of it;
        // what a message quotes of it has the key hidden.
        let key = Some("Bearer 1234");
        assert_eq!(
            counts.score_of("j", super::Reply::Said("0.1234"), (0.0, 1.0), None, key),
            Ok(0.1234)
        );
        let quoted = counts.score_of(
            "j",
            super::Reply::Said("key 1234 rejected"),
            (0.0, 1.0),
            None,
            key,
        );
        assert!(
            quoted.as_ref().is_err_and(|e| !e.contains("1234")),
            "{quoted:?}"
        );
        for reply in ["1e-1", "about 0.5"] {
            let none = counts.score_of("j", super::Reply::Said(reply), (0.0, 1.0), None, None);
            assert!(
                none.as_ref().is_err_and(|e| e.contains("holds no score")),
                "{none:?}"
            );
        }
    }

    /// The hint after a refused question with images: `images = false`
    /// for a bad request, the size for one too large, none otherwise.
    #[test]
    fn refused_images_hints() {
        use super::images_hint;
        use std::sync::Arc;
        let one: Vec<Arc<str>> = vec![Arc::from("data:image/png;base64,AAAA")];
        let hint = |why: &str, images: &[Arc<str>]| images_hint(why, images, "grader");
        for why in [
            "HTTP 400: not a multimodal model",
            "HTTP 422",
            "HTTP 415: type",
        ] {
            assert!(
                hint(why, &one).contains("set `images = false` on judge `grader`"),
                "{why}"
            );
            assert_eq!(hint(why, &[]), "", "{why}");
        }
        assert!(hint("HTTP 413: too large", &one).contains("MB as sent: shrink the image files"));
        for why in [
            "HTTP 401: bad key",
            "HTTP 429",
            "HTTP 4000",
            "timed out",
            "HTTP 404: no",
        ] {
            assert_eq!(hint(why, &one), "", "{why}");
        }
        assert!(hint("HTTP 400", &[one[0].clone(), one[0].clone()]).contains("row's 2 images"));
    }

    /// A reply's content as a string, or as a list of text parts.
    #[test]
    fn reply_texts() {
        use super::reply_text;
        use serde_json::json;
        let of = |content: serde_json::Value| {
            reply_text(
                &json!({"choices": [{"message": {"role": "assistant", "content": content}}]}),
            )
        };
        assert_eq!(of(json!("0.5")).as_deref(), Some("0.5"));
        assert_eq!(
            of(json!([{"type": "text", "text": "0."}, {"type": "text", "text": "75"}])).as_deref(),
            Some("0.75")
        );
        assert_eq!(
            of(json!([{"type": "output_text", "text": "1"}])).as_deref(),
            Some("1")
        );
        // Text parts beside others (a refusal, reasoning) are read alone.
        assert_eq!(
            of(json!([{"type": "reasoning", "summary": []}, {"type": "text", "text": "0.2"}]))
                .as_deref(),
            Some("0.2")
        );
        for content in [json!([]), json!([{"type": "text"}]), json!(null), json!(7)] {
            assert_eq!(of(content.clone()), None, "{content}");
        }
        assert_eq!(reply_text(&json!({"choices": []})), None);
    }

    /// A reply cut at its length limit, and an answer that is not a chat
    /// completion, hold no score, whatever they say, and say why.
    #[test]
    fn cut_replies_and_other_answers_hold_no_score() {
        use super::{JudgeCounts, Reply};
        let counts = JudgeCounts::default();
        let range = (0.0, 1.0);
        let cut = counts
            .score_of(
                "j",
                Reply::Cut("<think>The response refuses, so", "`max_tokens` 64"),
                range,
                None,
                None,
            )
            .unwrap_err();
        assert!(
            cut.contains(
                "cut at its length limit inside its reasoning (no `</think>`) (`max_tokens` 64)"
            ) && cut.contains("give it room with the judge's `max_tokens`"),
            "{cut}"
        );
        let whole = counts
            .score_of(
                "j",
                Reply::Cut("<think>ok</think>0.12", "`max_tokens` 64"),
                range,
                None,
                None,
            )
            .unwrap_err();
        assert!(
            whole.contains("cut at its length limit (`max_tokens` 64)"),
            "{whole}"
        );
        let other = counts
            .score_of("j", Reply::NotAReply("0.5"), range, None, None)
            .unwrap_err();
        assert!(
            other.contains("replied \"0.5\", which is not a chat completion's reply"),
            "{other}"
        );
        assert_eq!(
            counts.score_of("j", Reply::NotAReply("0.5"), range, Some(0.25), None),
            Ok(0.25)
        );
        // The closing tag quoted is the reply's own; a number after the
        // reasoning out of range says so.
        let thinking = counts
            .score_of(
                "j",
                Reply::Said("<thinking>x</thinking>about half"),
                range,
                None,
                None,
            )
            .unwrap_err();
        assert!(
            thinking.contains("\"…</thinking>about half\""),
            "{thinking}"
        );
        let outside = counts
            .score_of("j", Reply::Said("<think>x</think>1.5"), range, None, None)
            .unwrap_err();
        assert!(outside.contains("a number outside 0..1"), "{outside}");
    }

    /// A reply that reasons first is read after its reasoning.
    #[test]
    fn replies_after_reasoning() {
        use super::after_reasoning;
        let range = (0.0, 1.0);
        assert_eq!(
            parse_score("<think>It refuses: 0.9? no, 1.</think>\n0.8", range),
            Some(0.8)
        );
        // The opening tag in the prompt, and the SaFeR-Steer tag.
        assert_eq!(
            parse_score("It looks safe.\n</think>\n\n1", range),
            Some(1.0)
        );
        assert_eq!(
            parse_score("<thinking>hm</thinking> 0.25", range),
            Some(0.25)
        );
        // The last closing tag counts; words after it are no score.
        assert_eq!(
            parse_score("<think>a</think>0.1</think>0.3", range),
            Some(0.3)
        );
        assert_eq!(parse_score("<think>0.5</think>I say 0.5", range), None);
        assert_eq!(parse_score("<think>0.5 is the score", range), None);
        assert_eq!(after_reasoning("0.5"), None);
        // A reply without a score quotes what follows the reasoning.
        let counts = super::JudgeCounts::default();
        let error = counts
            .score_of(
                "j",
                super::Reply::Said(&format!("<think>{}</think>about half", "x".repeat(900))),
                range,
                None,
                None,
            )
            .unwrap_err();
        assert!(error.contains("\"…</think>about half\""), "{error}");
    }

    #[test]
    fn scores_from_answers() {
        for (reply, score) in [
            ("0.75", 0.75),
            (" 1\n", 1.0),
            ("0", 0.0),
            ("1.", 1.0),
            ("0.5.", 0.5),
            (".25", 0.25),
            ("1.000", 1.0),
        ] {
            assert_eq!(parse_score(reply, (0.0, 1.0)), Some(score), "{reply:?}");
        }
    }

    #[test]
    fn replies_that_are_not_one_number_between_0_and_1_hold_no_score() {
        for reply in [
            "",
            ".",
            "7",
            "1.5",
            "-0.5",
            "+0.5",
            "1e-1",
            "0.5.5",
            "1..",
            "0.5..",
            "0.1234567… (cut at 8 tokens)",
            "Score: 1",
            "0.8 because it helps",
            "1 out of 10",
            "yes",
            "No.",
            "nothing",
            "NaN",
            "inf",
            "0,5",
        ] {
            assert_eq!(parse_score(reply, (0.0, 1.0)), None, "{reply:?}");
        }
    }

    #[test]
    fn a_criterion_s_scale_is_the_range_asked_for() {
        assert_eq!(parse_score("7", (1.0, 10.0)), Some(7.0));
        assert_eq!(parse_score("10.", (1.0, 10.0)), Some(10.0));
        assert_eq!(parse_score("0.5", (1.0, 10.0)), None);
        assert_eq!(parse_score("11", (1.0, 10.0)), None);
        assert_eq!(parse_score("-2", (-5.0, 5.0)), Some(-2.0));
        assert_eq!(parse_score("-2", (0.0, 5.0)), None);
    }
}
