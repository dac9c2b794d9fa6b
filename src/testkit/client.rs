//! The test's end of a client connection: write bytes, read replies with a deadline of paused
//! time (a reply that never comes fails the test at once, in wall-clock terms: the clock jumps
//! when every task is idle).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::resp::{encode_command, parse_value, ReplyScanner, Value};

/// How long a test waits for replies (paused time: costs no wall-clock time).
pub const REPLY_DEADLINE: Duration = Duration::from_secs(30);

/// A client connected to a session under test.
pub struct TestClient {
    io: DuplexStream,
    buf: BytesMut,
    scanner: ReplyScanner,
}

impl TestClient {
    /// Wraps the client end of a session's pipe.
    pub fn new(io: DuplexStream) -> TestClient {
        TestClient {
            io,
            buf: BytesMut::new(),
            scanner: ReplyScanner::new(64),
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("the session's pipe");
    }

    /// Writes each command, RESP-encoded, back to back (one pipeline).
    pub async fn pipeline(&mut self, commands: &[&[&str]]) {
        self.send(&encode(commands)).await;
    }

    /// The next `n` reply frames, raw; panics if they do not all come within [`REPLY_DEADLINE`].
    pub async fn frames(&mut self, n: usize) -> Vec<Bytes> {
        match tokio::time::timeout(REPLY_DEADLINE, self.read_frames(n)).await {
            Ok(Ok(frames)) => frames,
            Ok(Err(got)) => panic!(
                "the session closed after {} of {n} replies: {:?}",
                got.len(),
                render_all(&got)
            ),
            Err(_) => panic!("fewer than {n} replies within {REPLY_DEADLINE:?}"),
        }
    }

    /// The next `n` replies, rendered by [`render`].
    pub async fn replies(&mut self, n: usize) -> Vec<String> {
        render_all(&self.frames(n).await)
    }

    /// One command, then its reply, rendered.
    pub async fn call(&mut self, command: &[&str]) -> String {
        self.pipeline(&[command]).await;
        self.replies(1).await.remove(0)
    }

    /// Asserts that no byte arrives within `window` (paused time).
    pub async fn assert_silent(&mut self, window: Duration) {
        let read = tokio::time::timeout(window, self.io.read_buf(&mut self.buf)).await;
        assert!(
            read.is_err() && self.buf.is_empty(),
            "expected no reply within {window:?}, got {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// Frames until `n` or the end of the stream (`Err` with what came).
    async fn read_frames(&mut self, n: usize) -> Result<Vec<Bytes>, Vec<Bytes>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if let Some(frame) = self
                .scanner
                .next(&mut self.buf)
                .expect("RESP from the proxy")
            {
                out.push(frame);
                continue;
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Err(out),
                Ok(_) => {}
            }
        }
        Ok(out)
    }
}

/// Commands RESP-encoded back to back.
pub fn encode(commands: &[&[&str]]) -> Vec<u8> {
    commands
        .iter()
        .flat_map(|c| encode_command(c).to_vec())
        .collect()
}

/// A reply as one readable string: a bulk string as its text, `+OK` and `-ERR ...` with their
/// prefixes, `:1`, `nil`, and arrays as `[a, b]`.
pub fn render(frame: &Bytes) -> String {
    match parse_value(frame.clone()) {
        Ok(v) => render_value(&v),
        Err(e) => format!("<bad frame {:?}: {e}>", String::from_utf8_lossy(frame)),
    }
}

fn render_all(frames: &[Bytes]) -> Vec<String> {
    frames.iter().map(render).collect()
}

fn render_value(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Status(s) => format!("+{}", String::from_utf8_lossy(s)),
        Value::Error(e) => format!("-{}", String::from_utf8_lossy(e)),
        Value::Int(n) => format!(":{n}"),
        Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(render_value).collect();
            format!("[{}]", items.join(", "))
        }
    }
}
