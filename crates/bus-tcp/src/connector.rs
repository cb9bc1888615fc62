//! Dialing TCP connections.

use std::net::SocketAddr;

use compio::{net::TcpStream, runtime::time};

use crate::{TcpConnection, TcpConnectorConfig, TcpError};

/// Dials `addr` within `config.connect_timeout`. The result is a
/// [`TcpConnection`] to hand to a bus (`install_replica`) or to drive
/// directly as a client (`Connection::establish`).
pub async fn connect(
    addr: SocketAddr,
    config: &TcpConnectorConfig,
) -> Result<TcpConnection, TcpError> {
    let timeout = config.connect_timeout;
    let stream = match time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(TcpError::Connect { addr, source }),
        Err(_) => return Err(TcpError::ConnectTimeout { addr, timeout }),
    };
    if config.nodelay {
        stream
            .set_nodelay(true)
            .map_err(|source| TcpError::Connect { addr, source })?;
    }
    Ok(TcpConnection::new(stream, addr))
}
