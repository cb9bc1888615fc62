//! The upgrade's I/O: read one HTTP head (bounded), answer or check it.
//!
//! The head is read through the connection's own byte layer (`io.rs`) into
//! one pooled buffer of `WS_MAX_UPGRADE_HEAD_BYTES`. Bytes that arrive after
//! the head (a client may send its first frames without waiting for the
//! `101`, a server may send frames right after it) are handed to the
//! WebSocket reader first, so nothing is lost.

use std::io;

use async_tungstenite::tungstenite::handshake::client::generate_key;
use bus_core::{
    ByteBuf,
    limits::{WS_MAX_UPGRADE_HEAD_BYTES, WS_MAX_UPGRADE_HEADERS},
};

use crate::{
    io::{Sink, Source},
    upgrade::{self, ClientRequest, Refusal, ResponseError, UpgradePolicy},
};

/// Why an upgrade failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The server refused the client's request with this status.
    #[error("upgrade refused with HTTP {status}")]
    Refused {
        /// The status sent.
        status: u16,
    },
    /// The server's response is not acceptable.
    #[error(transparent)]
    Response(#[from] ResponseError),
    /// The head was longer than the limit.
    #[error("the HTTP head exceeds {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The server's response is not HTTP.
    #[error("the server's answer is not an HTTP/1.1 response")]
    NotHttp,
    /// The peer closed before the head was complete.
    #[error("the peer closed during the upgrade")]
    Closed,
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads until the end of an HTTP head into `buf` (at most its capacity);
/// returns where the head ends (bytes after it belong to the WebSocket
/// stream).
async fn read_head(source: &mut Source, buf: &mut ByteBuf) -> Result<usize, HandshakeError> {
    // Where the search resumes: the end may straddle two reads.
    let mut from = 0;
    loop {
        let filled = buf.as_slice();
        if let Some(at) = filled[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(from + at + 4);
        }
        if buf.spare() == 0 {
            return Err(HandshakeError::TooLarge {
                max: WS_MAX_UPGRADE_HEAD_BYTES,
            });
        }
        let before = buf.len();
        let n = source.read_into(buf).await?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        from = before.saturating_sub(3);
    }
}

/// Sends a refusal; the socket closes when the connection is dropped.
async fn refuse(sink: &mut Sink, refusal: &Refusal) -> HandshakeError {
    let sent = async {
        sink.write(refusal.response().as_bytes()).await?;
        sink.flush().await
    }
    .await;
    match sent {
        Ok(()) => HandshakeError::Refused {
            status: refusal.status,
        },
        Err(err) => HandshakeError::Io(err),
    }
}

/// The server side: reads the request, answers `101` or a refusal. Returns
/// the bytes received after the request.
pub(crate) async fn accept(
    source: &mut Source,
    sink: &mut Sink,
    policy: &UpgradePolicy,
) -> Result<ByteBuf, HandshakeError> {
    let mut buf = ByteBuf::with_capacity(WS_MAX_UPGRADE_HEAD_BYTES);
    let end = match read_head(source, &mut buf).await {
        Ok(end) => end,
        Err(HandshakeError::TooLarge { .. }) => {
            return Err(refuse(sink, &upgrade::too_large()).await);
        }
        Err(other) => return Err(other),
    };
    let mut headers = [httparse::EMPTY_HEADER; WS_MAX_UPGRADE_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let checked = match request.parse(&buf.as_slice()[..end]) {
        Ok(httparse::Status::Complete(_)) => policy.check(&request).map(upgrade::accepted),
        // The head ends in CRLF CRLF, so it is complete or broken.
        Ok(httparse::Status::Partial) => Err(upgrade::unparsable(httparse::Error::Token)),
        Err(err) => Err(upgrade::unparsable(err)),
    };
    match checked {
        Ok(answer) => {
            sink.write(answer.as_bytes()).await?;
            sink.flush().await?;
            buf.consume(end);
            Ok(buf)
        }
        Err(refusal) => Err(refuse(sink, &refusal).await),
    }
}

/// The client side: sends the request, checks the `101`. Returns the bytes
/// received after the response.
pub(crate) async fn connect(
    source: &mut Source,
    sink: &mut Sink,
    request: &ClientRequest,
) -> Result<ByteBuf, HandshakeError> {
    let key = generate_key();
    sink.write(request.head(&key).as_bytes()).await?;
    sink.flush().await?;
    let mut buf = ByteBuf::with_capacity(WS_MAX_UPGRADE_HEAD_BYTES);
    let end = read_head(source, &mut buf).await?;
    let mut headers = [httparse::EMPTY_HEADER; WS_MAX_UPGRADE_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&buf.as_slice()[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(HandshakeError::NotHttp),
    }
    upgrade::check_response(&response, &key)?;
    buf.consume(end);
    Ok(buf)
}
