//! A minimal NATS client over the text protocol, for tests: connect, publish with an
//! acknowledgement, and JetStream API requests (create a stream and a durable pull consumer,
//! fetch messages, acknowledge them).

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// One message delivered to the client's inbox.
pub(crate) struct Message {
    /// The status of a message with headers and no payload (`503`: no responders).
    pub(crate) status: Option<u16>,
    /// The subject to reply to (for JetStream messages, the acknowledgement subject).
    pub(crate) reply: Option<String>,
    pub(crate) payload: Vec<u8>,
}

/// A connection with one inbox subscription; requests are answered one at a time.
pub(crate) struct NatsText {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    inbox: String,
}

impl NatsText {
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, writer) = stream.into_split();
        let mut client = Self {
            reader: BufReader::new(read),
            writer,
            inbox: format!("_INBOX.keda-rs-test.{}", std::process::id()),
        };
        let info = client.line().await;
        assert!(info.starts_with("INFO "), "not a NATS server: {info}");
        let connect = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}}\r\nSUB {}.* 1\r\nPING\r\n",
            client.inbox
        );
        client.writer.write_all(connect.as_bytes()).await.unwrap();
        loop {
            let line = client.line().await;
            if line == "PONG" {
                break;
            }
            assert!(!line.starts_with("-ERR"), "{line}");
        }
        client
    }

    /// The next protocol line; a server silent for 20 s fails the test.
    async fn line(&mut self) -> String {
        let mut line = String::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            self.reader.read_line(&mut line),
        )
        .await
        .expect("the NATS server sent nothing for 20 s")
        .unwrap();
        assert!(read > 0, "the NATS server closed the connection");
        line.trim_end().to_owned()
    }

    /// The next message on the inbox (answering the server's pings meanwhile).
    pub(crate) async fn next(&mut self) -> Message {
        loop {
            let line = self.line().await;
            if line == "PING" {
                self.writer.write_all(b"PONG\r\n").await.unwrap();
                continue;
            }
            assert!(!line.starts_with("-ERR"), "{line}");
            // MSG <subject> <sid> [reply] <size>, HMSG <subject> <sid> [reply] <hdr> <size>
            let (words, with_headers) = if let Some(rest) = line.strip_prefix("MSG ") {
                (rest.split(' ').collect::<Vec<_>>(), false)
            } else if let Some(rest) = line.strip_prefix("HMSG ") {
                (rest.split(' ').collect::<Vec<_>>(), true)
            } else {
                continue;
            };
            let size: usize = words.last().unwrap().parse().unwrap();
            let header_size: usize = if with_headers {
                words[words.len() - 2].parse().unwrap()
            } else {
                0
            };
            let fixed = if with_headers { 4 } else { 3 };
            let reply = (words.len() == fixed + 1).then(|| words[2].to_owned());
            let mut payload = vec![0; size + 2];
            self.reader.read_exact(&mut payload).await.unwrap();
            payload.truncate(size);
            let headers = String::from_utf8_lossy(&payload[..header_size]).into_owned();
            let status = headers
                .lines()
                .next()
                .and_then(|first| first.strip_prefix("NATS/1.0 "))
                .and_then(|rest| rest.get(..3))
                .and_then(|code| code.parse().ok());
            let payload = payload.split_off(header_size);
            return Message {
                status,
                reply,
                payload,
            };
        }
    }

    async fn send(&mut self, subject: &str, reply: Option<&str>, payload: &[u8]) {
        let mut frame = match reply {
            Some(reply) => format!("PUB {subject} {reply} {}\r\n", payload.len()),
            None => format!("PUB {subject} {}\r\n", payload.len()),
        }
        .into_bytes();
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        self.writer.write_all(&frame).await.unwrap();
    }

    /// Sends `payload` to `subject` and returns the answer.
    pub(crate) async fn request(&mut self, subject: &str, payload: &[u8]) -> Message {
        let reply = format!("{}.r", self.inbox);
        self.send(subject, Some(&reply), payload).await;
        self.next().await
    }

    /// A JetStream API request whose answer must not be an error.
    pub(crate) async fn api(&mut self, subject: &str, body: &Value) -> Value {
        let mut tries = 0;
        let answer = loop {
            let answer = self.request(subject, body.to_string().as_bytes()).await;
            if answer.status == Some(503) && tries < 100 {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            break answer.payload;
        };
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert!(answer.get("error").is_none(), "{subject}: {answer}");
        answer
    }

    /// Creates a stream over `subjects` and a durable pull consumer with explicit acks.
    pub(crate) async fn stream_and_consumer(
        &mut self,
        stream: &str,
        subjects: &[&str],
        consumer: &str,
    ) {
        self.api(
            &format!("$JS.API.STREAM.CREATE.{stream}"),
            &json!({"name": stream, "subjects": subjects, "storage": "memory"}),
        )
        .await;
        self.api(
            &format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}"),
            &json!({"stream_name": stream, "config": {
                "durable_name": consumer, "ack_policy": "explicit", "ack_wait": 600_000_000_000_u64
            }}),
        )
        .await;
    }

    /// Publishes `count` messages to `subject`, each acknowledged by JetStream. A subject
    /// that has no responders yet (a stream just created elsewhere in a cluster) is tried
    /// again for up to 10 s.
    pub(crate) async fn publish(&mut self, subject: &str, count: usize) {
        for i in 0..count {
            let mut tries = 0;
            let ack = loop {
                let ack = self.request(subject, format!("job {i}").as_bytes()).await;
                if ack.status == Some(503) && tries < 100 {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
                break ack;
            };
            let ack: Value = serde_json::from_slice(&ack.payload).unwrap();
            assert!(ack.get("seq").is_some(), "not stored: {ack}");
        }
    }

    /// Fetches `count` messages of a pull consumer (without acknowledging them); returns
    /// their acknowledgement subjects.
    pub(crate) async fn fetch(
        &mut self,
        stream: &str,
        consumer: &str,
        count: usize,
    ) -> Vec<String> {
        let reply = format!("{}.r", self.inbox);
        self.send(
            &format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            Some(&reply),
            json!({"batch": count, "no_wait": true})
                .to_string()
                .as_bytes(),
        )
        .await;
        let mut acks = Vec::new();
        while acks.len() < count {
            let message = self.next().await;
            acks.push(
                message
                    .reply
                    .expect("a JetStream message has an ack subject"),
            );
        }
        acks
    }

    /// Acknowledges messages by their acknowledgement subjects and waits for the server to
    /// have read them.
    pub(crate) async fn ack(&mut self, acks: &[String]) {
        for ack in acks {
            self.send(ack, None, b"+ACK").await;
        }
        self.writer.write_all(b"PING\r\n").await.unwrap();
        loop {
            let line = self.line().await;
            if line == "PONG" {
                return;
            }
        }
    }
}
