//! The demo edge's network link to NATS: a TCP relay on loopback that can be cut and restored,
//! so the edge really loses its connection (its sockets are closed, new ones refused) while
//! the central services keep theirs.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug)]
pub struct Link {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Relays 127.0.0.1:<free port> to `upstream` (`host:port`). While cut, the port is
    /// closed: a connection attempt is refused, as with a server that went away.
    pub async fn open(upstream: String) -> Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("opening the demo edge's link")?;
        let addr = listener.local_addr()?;
        let (up, mut watching) = watch::channel(true);
        let task = tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                let Some(open) = &listener else {
                    if watching.wait_for(|up| *up).await.is_err() {
                        return;
                    }
                    listener = TcpListener::bind(addr).await.ok();
                    if listener.is_none() {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    continue;
                };
                let accepted = tokio::select! {
                    accepted = open.accept() => accepted,
                    _ = watching.wait_for(|up| !*up) => {
                        listener = None;
                        continue;
                    }
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let upstream = upstream.clone();
                let mut cut = watching.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Link { addr, up, task })
    }

    /// Closes every connection through the link and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_cut_link_closes_its_connections_and_refuses_new_ones_until_restored() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let link = Link::open(echo_addr.to_string()).await.unwrap();
        let round_trip = |mut socket: TcpStream| async move {
            socket.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            socket.read_exact(&mut buf).await.ok()?;
            Some((socket, buf))
        };
        let socket = TcpStream::connect(link.addr).await.unwrap();
        let (mut socket, buf) = round_trip(socket).await.expect("relayed while up");
        assert_eq!(&buf, b"ping");

        link.cut();
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut buf))
            .await
            .expect("the cut closes the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            TcpStream::connect(link.addr).await.is_err(),
            "refused while cut"
        );

        link.restore();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let socket = TcpStream::connect(link.addr).await.unwrap();
        assert!(
            round_trip(socket).await.is_some(),
            "relayed again once restored"
        );
    }
}
