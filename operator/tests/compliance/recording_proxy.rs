//! A TCP proxy on loopback in front of a real server that records what clients send. Once told
//! to refuse, it closes every connection and answers new ones as the server would answer wrong
//! credentials, in the protocol its [`Refusal`] names.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How a server of each protocol refuses a client's credentials.
#[derive(Clone, Copy)]
pub(crate) enum Refusal {
    /// PostgreSQL: a cleartext password request, then `FATAL 28P01` to the client's answer.
    Postgres,
    /// Redis: `-WRONGPASS` to the client's first command.
    Redis,
    /// MySQL and MariaDB: a handshake, then `ERROR 1045 (28000)` to the client's login.
    Mysql,
    /// AMQP 0-9-1: `connection.start`, then, after the client's `start-ok`,
    /// `connection.close` 403.
    Amqp,
}

#[derive(Default)]
struct State {
    refusing: bool,
    seen: Vec<u8>,
    tasks: Vec<JoinHandle<()>>,
}

type Shared = Arc<Mutex<State>>;

pub(crate) struct RecordingProxy {
    addr: SocketAddr,
    state: Shared,
    accept: JoinHandle<()>,
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.state.lock().unwrap().tasks.drain(..) {
            task.abort();
        }
    }
}

impl RecordingProxy {
    /// A proxy on a free loopback port to `upstream`, refusing (once told to) as `refusal` says.
    pub(crate) async fn start(upstream: SocketAddr, refusal: Refusal) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Shared = Arc::default();
        let accept = {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let refusing = state.lock().unwrap().refusing;
                    let task = if refusing {
                        tokio::spawn(refuse(client, refusal, state.clone()))
                    } else {
                        tokio::spawn(forward(client, upstream, state.clone()))
                    };
                    state.lock().unwrap().tasks.push(task);
                }
            })
        };
        Self {
            addr,
            state,
            accept,
        }
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection; new ones are refused as a wrong credential would be.
    pub(crate) fn refuse(&self) {
        let mut state = self.state.lock().unwrap();
        state.refusing = true;
        for task in state.tasks.drain(..) {
            task.abort();
        }
    }

    /// Everything clients sent so far, forwarded or refused.
    pub(crate) fn seen(&self) -> String {
        String::from_utf8_lossy(&self.state.lock().unwrap().seen).into_owned()
    }
}

/// Passes bytes both ways, recording what the client sends.
async fn forward(client: TcpStream, upstream: SocketAddr, state: Shared) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(n) = client_read.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            state.lock().unwrap().seen.extend_from_slice(&buffer[..n]);
            if server_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    tokio::join!(up, down);
}

/// Answers as a server that refuses the client's credentials, recording what it sent.
async fn refuse(client: TcpStream, refusal: Refusal, state: Shared) {
    match refusal {
        Refusal::Postgres => refuse_postgres(client, state).await,
        Refusal::Redis => refuse_redis(client, state).await,
        Refusal::Mysql => refuse_mysql(client, state).await,
        Refusal::Amqp => refuse_amqp(client, state).await,
    }
}

/// Reads what the client sends next into `buffer`, records it, and returns its length (0 at
/// the end or on an error).
async fn read(client: &mut TcpStream, buffer: &mut [u8], state: &Shared) -> usize {
    let n = client.read(buffer).await.unwrap_or(0);
    state.lock().unwrap().seen.extend_from_slice(&buffer[..n]);
    n
}

async fn refuse_redis(mut client: TcpStream, state: Shared) {
    let mut buffer = vec![0u8; 16 * 1024];
    if read(&mut client, &mut buffer, &state).await > 0 {
        let _ = client
            .write_all(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
            .await;
    }
    let _ = client.shutdown().await;
}

async fn refuse_postgres(mut client: TcpStream, state: Shared) {
    let mut buffer = vec![0u8; 16 * 1024];
    // Startup message, then a cleartext password request and the client's answer.
    if read(&mut client, &mut buffer, &state).await == 0 {
        return;
    }
    let _ = client.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await;
    if read(&mut client, &mut buffer, &state).await == 0 {
        return;
    }
    let mut fields = Vec::new();
    for (code, text) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "28P01"),
        (b'M', "password authentication failed"),
    ] {
        fields.push(code);
        fields.extend_from_slice(text.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&u32::try_from(fields.len() + 4).unwrap().to_be_bytes());
    message.extend_from_slice(&fields);
    let _ = client.write_all(&message).await;
    let _ = client.shutdown().await;
}

/// A MySQL packet: 3-byte little-endian length, sequence number, payload.
fn mysql_packet(sequence: u8, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_le_bytes();
    let mut out = vec![length[0], length[1], length[2], sequence];
    out.extend_from_slice(payload);
    out
}

/// Records the login the client sent (user name, scrambled password, database).
async fn refuse_mysql(mut client: TcpStream, state: Shared) {
    // Protocol 10 handshake offering mysql_native_password, without TLS.
    let mut handshake = vec![10];
    handshake.extend_from_slice(b"10.11.0-refusing\0");
    handshake.extend_from_slice(&7u32.to_le_bytes());
    handshake.extend_from_slice(b"abcdefgh\0");
    // PROTOCOL_41, SECURE_CONNECTION, LONG_PASSWORD, FOUND_ROWS, LONG_FLAG, CONNECT_WITH_DB,
    // TRANSACTIONS; then MULTI_RESULTS and PLUGIN_AUTH in the upper half.
    handshake.extend_from_slice(&0xA20Fu16.to_le_bytes());
    handshake.push(0x21);
    handshake.extend_from_slice(&2u16.to_le_bytes());
    handshake.extend_from_slice(&0x000Au16.to_le_bytes());
    handshake.push(21);
    handshake.extend_from_slice(&[0; 10]);
    handshake.extend_from_slice(b"ijklmnopqrst\0");
    handshake.extend_from_slice(b"mysql_native_password\0");
    if client
        .write_all(&mysql_packet(0, &handshake))
        .await
        .is_err()
    {
        return;
    }
    let mut buffer = vec![0u8; 16 * 1024];
    if read(&mut client, &mut buffer, &state).await > 0 {
        let mut error = vec![0xff];
        error.extend_from_slice(&1045u16.to_le_bytes());
        error.extend_from_slice(b"#28000Access denied");
        let _ = client
            .write_all(&mysql_packet(buffer[3].wrapping_add(1), &error))
            .await;
    }
    let _ = client.shutdown().await;
}

/// An AMQP method frame on channel 0.
fn amqp_method_frame(class: u16, method: u16, arguments: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&class.to_be_bytes());
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(arguments);
    let mut frame = vec![1, 0, 0];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    frame
}

fn amqp_long_string(text: &str) -> Vec<u8> {
    let mut bytes = u32::try_from(text.len()).unwrap().to_be_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

async fn refuse_amqp(mut client: TcpStream, state: Shared) {
    let mut buffer = vec![0u8; 16 * 1024];
    // The protocol header, then connection.start (0-9, no properties, PLAIN, en_US).
    if read(&mut client, &mut buffer, &state).await == 0 {
        return;
    }
    let mut start = vec![0, 9, 0, 0, 0, 0];
    start.extend(amqp_long_string("PLAIN AMQPLAIN"));
    start.extend(amqp_long_string("en_US"));
    if client
        .write_all(&amqp_method_frame(10, 10, &start))
        .await
        .is_err()
    {
        return;
    }
    // connection.start-ok with the credentials, then connection.close 403.
    if read(&mut client, &mut buffer, &state).await == 0 {
        return;
    }
    let text = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN";
    let mut close = 403u16.to_be_bytes().to_vec();
    close.push(u8::try_from(text.len()).unwrap());
    close.extend_from_slice(text.as_bytes());
    close.extend_from_slice(&[0, 0, 0, 0]);
    let _ = client.write_all(&amqp_method_frame(10, 50, &close)).await;
    let _ = client.shutdown().await;
}
