//! The `Judge` op: who answers for criteria without a scorer and for
//! `judge.score("...")` / `judge.flag("...")` calls.
//!
//! - `rules`: only the built-in scorers; asking it is an error that says
//!   which criterion needs a scorer.
//! - `http`: an OpenAI-compatible `/chat/completions` endpoint (a
//!   vLLM-served reward model, a hosted API). Each question is one request
//!   asking for a score between 0 and 1; 429, 5xx and timeouts are retried
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
use std::time::Duration;

use safer_ir::plan::{EvalError, JudgeSpec};
use serde_json::{json, Value};

use super::data::Row;

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
    /// The chat messages every judge is asked with: the system prompt and
    /// [`Question::text`].
    pub fn messages(&self) -> Value {
        json!([
            {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
            {"role": "user", "content": self.text()},
        ])
    }

    /// The question: the criterion and its description, the prompt, the
    /// response and the range of the score.
    pub fn text(&self) -> String {
        let (lo, hi) = self.range;
        format!(
            "Criterion `{}`: {}\n\nPrompt:\n{}\n\nResponse:\n{}\n\nScore ({lo} to {hi}):",
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

/// What a judge did, for `summary.json`: questions asked, replies without
/// a score that took the fallback, and retried requests.
#[derive(Default)]
pub struct JudgeCounts {
    asked: AtomicU64,
    fallbacks: AtomicU64,
    retries: AtomicU64,
    warned: AtomicBool,
}

impl JudgeCounts {
    /// The counts as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "asked": self.asked.load(Ordering::Relaxed),
            "fallbacks": self.fallbacks.load(Ordering::Relaxed),
            "retries": self.retries.load(Ordering::Relaxed),
        })
    }

    /// Counts a question, when it is asked (a question whose request then
    /// fails is counted too).
    pub fn asking(&self) {
        self.asked.fetch_add(1, Ordering::Relaxed);
    }

    /// The score in judge `judge`'s reply `said` to a question asking for
    /// `range`, or its `fallback` (counted, and printed the first time), or
    /// an error naming the reply.
    pub fn score_of(
        &self,
        judge: &str,
        said: &str,
        range: (f64, f64),
        fallback: Option<f64>,
    ) -> Result<f64, String> {
        let (lo, hi) = range;
        match (parse_score(said, range), fallback) {
            (Some(v), _) => Ok(v),
            (None, Some(f)) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                if !self.warned.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "warning: judge `{judge}` replied {said:?}, not one number from {lo} to {hi}; using its fallback {f} (every fallback is counted in summary.json's `judges`)"
                    );
                }
                Ok(f)
            }
            (None, None) => Err(format!(
                "judge `{judge}` replied {said:?}, which holds no score (one number from {lo} to {hi} was asked for); declare `fallback = ...` on the judge to use a fixed score instead"
            )),
        }
    }
}

/// Something that scores a completion on a named criterion, 0..1.
pub trait Judge: Sync {
    /// The threads to ask from, for a judge that waits on something other
    /// than this machine's CPUs (an HTTP endpoint: `concurrency` threads);
    /// `None` for judges that compute here, which share the CPU-sized pool.
    fn pool(&self) -> Option<&rayon::ThreadPool> {
        None
    }

    /// What the judge did so far (`summary.json`'s `judges`); `None` for
    /// judges that never ask anyone.
    fn counts(&self) -> Option<Value> {
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

/// An OpenAI-compatible HTTP judge.
pub struct HttpJudge {
    name: String,
    url: String,
    model: String,
    api_key: Option<String>,
    retries: u32,
    temperature: f64,
    fallback: Option<f64>,
    agent: ureq::Agent,
    /// `concurrency` threads: every question is asked from them
    /// ([`Judge::pool`]), so at most that many requests are in flight.
    pool: rayon::ThreadPool,
    /// First backoff; doubled per retry.
    backoff: Duration,
    counts: JudgeCounts,
}

impl HttpJudge {
    /// A judge for `spec` (`kind = http`).
    ///
    /// # Errors
    /// No endpoint, an API-key variable that is not set, or a `ca_file`
    /// that holds no usable certificate.
    pub fn new(name: &str, spec: &JudgeSpec) -> Result<Self, String> {
        let endpoint = spec
            .endpoint
            .as_deref()
            .ok_or_else(|| format!("judge `{name}` is `kind = http` but has no `endpoint`"))?;
        let api_key = match &spec.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                format!("judge `{name}` reads its API key from ${var}, which is not set")
            })?),
            None => None,
        };
        // A day bounds any request (and keeps `1e300` or `inf` a Duration).
        let timeout = Duration::from_secs_f64(if spec.timeout_s.is_finite() {
            spec.timeout_s.clamp(0.001, 86_400.0)
        } else {
            86_400.0
        });
        let mut agent = ureq::AgentBuilder::new().timeout(timeout);
        if let Some(ca_file) = &spec.ca_file {
            let config = super::judge_tls::trusting(std::path::Path::new(ca_file))
                .map_err(|e| format!("judge `{name}`: {e}"))?;
            agent = agent.tls_config(config);
        }
        Ok(HttpJudge {
            name: name.to_string(),
            url: format!("{}/chat/completions", endpoint.trim_end_matches('/')),
            model: spec.model_name.clone().unwrap_or_else(|| "default".into()),
            api_key,
            retries: spec.retries,
            temperature: spec.temperature,
            fallback: spec.fallback,
            agent: agent.build(),
            pool: rayon::ThreadPoolBuilder::new()
                .num_threads(spec.concurrency.max(1))
                .thread_name(|i| format!("judge-{i}"))
                .build()
                .map_err(|e| format!("judge `{name}`: cannot start its threads: {e}"))?,
            counts: JudgeCounts::default(),
            backoff: Duration::from_millis(
                std::env::var("SAFERC_JUDGE_BACKOFF_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(500),
            ),
        })
    }

    fn request(&self, body: &Value) -> Result<Value, (bool, String, Option<u64>)> {
        let mut req = self.agent.post(&self.url);
        if let Some(key) = &self.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        match req.send_json(body.clone()) {
            Ok(resp) => resp
                .into_json::<Value>()
                .map_err(|e| (false, format!("the answer is not JSON: {e}"), None)),
            Err(ureq::Error::Status(code, resp)) => {
                let retry_after = resp
                    .header("Retry-After")
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let retryable = code == 429 || code >= 500;
                Err((retryable, format!("HTTP {code}"), retry_after))
            }
            Err(ureq::Error::Transport(t)) => {
                let why = t.to_string();
                // A certificate that is refused will be refused again.
                match certificate_hint(&why) {
                    Some(hint) => Err((false, format!("{why}; {hint}"), None)),
                    None => Err((true, why, None)),
                }
            }
        }
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

/// The score in a judge's reply to a question asking for `range`, parsed
/// strictly: after trimming white space (and one closing full stop), the
/// reply must be one decimal number (`0`, `7`, `0.75`, `.5`, `1.0`; a
/// minus sign only where the range has negative numbers) within the range.
/// Anything else (an exponent, a number out of range, words around the
/// number, a verdict word) holds no score.
pub fn parse_score(text: &str, range: (f64, f64)) -> Option<f64> {
    let (lo, hi) = range;
    let t = text.trim();
    let t = t
        .strip_suffix('.')
        .filter(|r| r.contains(|c: char| c.is_ascii_digit()))
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

    fn counts(&self) -> Option<Value> {
        Some(self.counts.to_json())
    }

    fn ask(&self, question: &Question<'_>) -> Result<f64, EvalError> {
        let body = json!({
            "model": self.model,
            "temperature": self.temperature,
            "messages": question.messages(),
        });
        self.counts.asking();
        let mut attempt = 0u32;
        loop {
            match self.request(&body) {
                Ok(answer) => {
                    // A reply in another shape than chat completions' is
                    // a reply without a score (its JSON is shown).
                    let content = match answer
                        .pointer("/choices/0/message/content")
                        .and_then(Value::as_str)
                    {
                        Some(text) => text.to_string(),
                        None => answer.to_string(),
                    };
                    break self
                        .counts
                        .score_of(&self.name, &content, question.range, self.fallback)
                        .map_err(|e| EvalError::Call(format!("{e} (from {})", self.url)));
                }
                Err((true, why, retry_after)) if attempt < self.retries => {
                    let wait = retry_after
                        .map(Duration::from_secs)
                        .unwrap_or(self.backoff.saturating_mul(2u32.saturating_pow(attempt)))
                        .min(MAX_RETRY_AFTER);
                    self.counts.retries.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "warning: judge {} failed ({why}); retry {} of {} in {:.1}s",
                        self.url,
                        attempt + 1,
                        self.retries,
                        wait.as_secs_f64()
                    );
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err((_, why, _)) => {
                    let attempts = attempt + 1;
                    break Err(EvalError::Call(format!(
                        "the judge at {} failed after {attempts} attempt{}: {why}",
                        self.url,
                        if attempts == 1 { "" } else { "s" }
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_score;

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
