//! The upgrade's I/O: read one HTTP head (bounded), answer or check it.
//!
//! Bytes that arrive after the head (a client may send its first frames
//! without waiting for the `101`, a server may send frames right after it)
//! are handed to the WebSocket reader as they are, so nothing is lost.

use std::io;

use async_tungstenite::tungstenite::handshake::client::generate_key;
use bus_core::limits::{WS_MAX_UPGRADE_HEAD_BYTES, WS_MAX_UPGRADE_HEADERS};
use futures_util::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{
    io::Io,
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

/// Reads until the end of an HTTP head; returns the buffer and where the
/// head ends (bytes after it belong to the WebSocket stream).
async fn read_head(io: &mut Io) -> Result<(Vec<u8>, usize), HandshakeError> {
    let mut buf = vec![0; WS_MAX_UPGRADE_HEAD_BYTES];
    let mut filled: usize = 0;
    // Where the search resumes: the end may straddle two reads.
    let mut from = 0;
    loop {
        if let Some(at) = buf[from..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(filled);
            return Ok((buf, from + at + 4));
        }
        if filled == buf.len() {
            return Err(HandshakeError::TooLarge {
                max: WS_MAX_UPGRADE_HEAD_BYTES,
            });
        }
        let n = io.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        from = filled.saturating_sub(3);
        filled += n;
    }
}

/// Sends a refusal; the socket closes when the connection is dropped.
async fn refuse(io: &mut Io, refusal: &Refusal) -> HandshakeError {
    let sent = async {
        io.write_all(refusal.response().as_bytes()).await?;
        io.flush().await
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
pub(crate) async fn accept(io: &mut Io, policy: &UpgradePolicy) -> Result<Vec<u8>, HandshakeError> {
    let (buf, end) = match read_head(io).await {
        Ok(head) => head,
        Err(HandshakeError::TooLarge { .. }) => return Err(refuse(io, &upgrade::too_large()).await),
        Err(other) => return Err(other),
    };
    let mut headers = [httparse::EMPTY_HEADER; WS_MAX_UPGRADE_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let checked = match request.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(_)) => policy.check(&request).map(upgrade::accepted),
        // The head ends in CRLF CRLF, so it is complete or broken.
        Ok(httparse::Status::Partial) => Err(upgrade::unparsable(httparse::Error::Token)),
        Err(err) => Err(upgrade::unparsable(err)),
    };
    match checked {
        Ok(answer) => {
            io.write_all(answer.as_bytes()).await?;
            io.flush().await?;
            Ok(buf[end..].to_vec())
        }
        Err(refusal) => Err(refuse(io, &refusal).await),
    }
}

/// The client side: sends the request, checks the `101`. Returns the bytes
/// received after the response.
pub(crate) async fn connect(
    io: &mut Io,
    request: &ClientRequest,
) -> Result<Vec<u8>, HandshakeError> {
    let key = generate_key();
    io.write_all(request.head(&key).as_bytes()).await?;
    io.flush().await?;
    let (buf, end) = read_head(io).await?;
    let mut headers = [httparse::EMPTY_HEADER; WS_MAX_UPGRADE_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(HandshakeError::NotHttp),
    }
    upgrade::check_response(&response, &key)?;
    Ok(buf[end..].to_vec())
}
