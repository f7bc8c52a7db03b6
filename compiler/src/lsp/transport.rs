//! JSON-RPC framing: `Content-Length` headers and a JSON body. Unlike
//! `lsp_server::Message::read`, a malformed body is not an I/O error: it
//! becomes a JSON-RPC error (-32700 parse error, -32600 invalid request) and
//! the server goes on.

use lsp_server::{Message, Response};
use std::io::{BufRead, Write};

/// A protocol error to answer with.
pub struct ProtocolError {
    /// The JSON-RPC error code.
    pub code: i32,
    /// What was wrong.
    pub message: String,
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
            })))
        }
    };
    match serde_json::from_value::<Message>(value) {
        Ok(m) => Ok(Some(Ok(m))),
        Err(e) => Ok(Some(Err(ProtocolError {
            code: -32600,
            message: format!("invalid request: {e}"),
        }))),
    }
}

/// Writes one message (write errors end the session silently: the client
/// is gone).
pub fn write(out: &mut impl Write, message: &Message) {
    let _ = message.write(out);
    let _ = out.flush();
}

/// Writes an error response whose id is `null` (for messages that could not
/// be parsed).
pub fn write_null_id(out: &mut impl Write, response: &Response) {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": response.error.as_ref().map(|e| serde_json::json!({ "code": e.code, "message": e.message })),
    })
    .to_string();
    let _ = write!(out, "Content-Length: {}\r\n\r\n{body}", body.len());
    let _ = out.flush();
}
