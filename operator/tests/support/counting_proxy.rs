//! A TCP proxy between a scaler and its real server that counts the connections it accepted
//! and how often a marker (a command name, a query) went from client to server; it can be
//! stopped, closing every connection, to take the source away.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub(crate) struct CountingProxy {
    pub(crate) addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    hits: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl CountingProxy {
    /// A proxy on loopback to `upstream`, counting occurrences of `marker` sent upstream.
    pub(crate) async fn start(upstream: SocketAddr, marker: &[u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let hits = Arc::new(AtomicUsize::new(0));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let marker = marker.to_vec();
        let accept = {
            let (connections, hits, tasks) = (connections.clone(), hits.clone(), tasks.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let server = TcpStream::connect(upstream).await.unwrap();
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = tokio::spawn(pipe(
                        client_read,
                        server_write,
                        Some((marker.clone(), hits.clone())),
                    ));
                    let down = tokio::spawn(pipe(server_read, client_write, None));
                    tasks.lock().unwrap().extend([up, down]);
                }
            })
        };
        tasks.lock().unwrap().push(accept);
        Self {
            addr,
            connections,
            hits,
            tasks,
        }
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Times the marker was sent upstream so far.
    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops listening and closes every connection.
    pub(crate) fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Option<(Vec<u8>, Arc<AtomicUsize>)>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    // The end of the previous chunk, so a marker split across two reads is still seen.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((marker, hits)) = &count {
            let mut window = std::mem::take(&mut tail);
            window.extend_from_slice(&buffer[..n]);
            let found = window
                .windows(marker.len())
                .filter(|w| *w == marker.as_slice())
                .count();
            hits.fetch_add(found, Ordering::SeqCst);
            let keep = marker.len().saturating_sub(1).min(window.len());
            tail = window[window.len() - keep..].to_vec();
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
}
