//! JSON-RPC framing: `Content-Length` headers and a JSON body. Unlike
//! `lsp_server::Message::read`, a malformed body is not an I/O error: it
//! becomes a JSON-RPC error (-32700 parse error, -32600 invalid request) and
//! the server goes on.

use lsp_server::Message;
use std::io::{BufRead, Write};

/// A protocol error to answer with.
pub struct ProtocolError {
    /// The JSON-RPC error code.
    pub code: i32,
    /// What was wrong.
    pub message: String,
    /// The id of the request it answers (`null` when the message could
    /// not be read that far).
    pub id: serde_json::Value,
}

/// Reads one message. `Ok(None)` at end of input; `Err` only for I/O.
pub fn read(input: &mut impl BufRead) -> std::io::Result<Option<Result<Message, ProtocolError>>> {
    let mut length: Option<usize> = None;
    let mut saw_header = false;
    loop {
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end();
        if line.is_empty() {
            if saw_header {
                break;
            }
            continue;
        }
        saw_header = true;
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            }
        }
    }
    let Some(length) = length.filter(|l| *l <= 64 * 1024 * 1024) else {
        return Ok(Some(Err(ProtocolError {
            code: -32700,
            message: "missing or invalid Content-Length header".into(),
            id: serde_json::Value::Null,
        })));
    };
    let mut body = vec![0u8; length];
    input.read_exact(&mut body)?;
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Ok(Some(Err(ProtocolError {
                code: -32700,
                message: format!("parse error: {e}"),
                id: serde_json::Value::Null,
            })))
        }
    };
    // A request's id is an integer or a string (the protocol's
    // `integer | string`): another (`7.5`, `null`, one past 32 bits) made
    // `lsp_server` read the request as a notification, and the client
    // waited for an answer that never came.
    if let Some(id) = value.get("id").filter(|_| value.get("method").is_some()) {
        let readable = id.is_string() || id.as_i64().is_some_and(|n| i32::try_from(n).is_ok());
        if !readable {
            return Ok(Some(Err(ProtocolError {
                code: -32600,
                message: format!(
                    "invalid request: its `id` ({id}) must be a string or an integer of 32 bits"
                ),
                id: id.clone(),
            })));
        }
    }
    match serde_json::from_value::<Message>(value) {
        Ok(m) => Ok(Some(Ok(m))),
        Err(e) => Ok(Some(Err(ProtocolError {
            code: -32600,
            message: format!("invalid request: {e}"),
            id: serde_json::Value::Null,
        }))),
    }
}

/// Writes one message (write errors end the session silently: the client
/// is gone).
pub fn write(out: &mut impl Write, message: &Message) {
    let _ = message.write(out);
    let _ = out.flush();
}

/// Writes an error response to the request of `id` (`null` for a message
/// that could not be read that far).
pub fn write_error(out: &mut impl Write, error: &ProtocolError) {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": error.id,
        "error": { "code": error.code, "message": error.message },
    })
    .to_string();
    let _ = write!(out, "Content-Length: {}\r\n\r\n{body}", body.len());
    let _ = out.flush();
}
