//! Load benchmark of the real `keda-metrics-apiserver` binary: an open-loop 1,000 requests/s
//! over 10,000 distinct metrics for 60 s, on one HTTP/2 connection as the aggregation layer
//! uses, with an in-memory operator stand-in behind it. Prints latency percentiles, the
//! server's RSS and CPU, and how many connections it opened to the operator. It asserts
//! nothing: it measures.
//!
//! `cargo bench -p keda-metrics-server --bench load`; `KEDA_RS_BENCH_SECONDS` and
//! `KEDA_RS_BENCH_RATE` change the duration and rate, `KEDA_RS_BENCH_SERVER_CPUS` pins the
//! server to CPUs (with taskset) and `KEDA_RS_BENCH_SERVER_ARGS` adds flags to the server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails by panicking"
)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use keda_proto::metrics::metric_service_server::{MetricService, MetricServiceServer};
use keda_proto::metrics::{GetMetricRequest, GetMetricResponse, MetricSample};
use tokio::io::AsyncBufReadExt;

/// An in-memory stand-in for the operator: answers any metric at once.
#[derive(Default)]
struct StandIn {
    calls: AtomicUsize,
    peers: Mutex<HashSet<SocketAddr>>,
}

struct StandInService(Arc<StandIn>);

#[tonic::async_trait]
impl MetricService for StandInService {
    async fn get_metric(
        &self,
        request: tonic::Request<GetMetricRequest>,
    ) -> Result<tonic::Response<GetMetricResponse>, tonic::Status> {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(peer) = request.remote_addr() {
            self.0.peers.lock().unwrap().insert(peer);
        }
        let r = request.into_inner();
        let milli = i64::try_from(r.metric_name.len() * 1000).unwrap_or(0);
        Ok(tonic::Response::new(GetMetricResponse {
            samples: vec![MetricSample {
                metric_name: r.metric_name,
                milli_value: milli,
                timestamp_unix_millis: 1_767_225_600_000,
                source: 1,
            }],
        }))
    }
}

fn proc_field(pid: u32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default()
}

fn rss_mib(pid: u32) -> f64 {
    let kb: f64 = proc_field(pid, "status")
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = proc_field(pid, "stat");
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a bounded vector"
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
#[allow(clippy::too_many_lines, reason = "one measurement, read top to bottom")]
async fn main() {
    let seconds: u64 = std::env::var("KEDA_RS_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let rate: u64 = std::env::var("KEDA_RS_BENCH_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let metrics = 10_000_usize;

    let stand_in = Arc::new(StandIn::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let operator = listener.local_addr().unwrap();
    let service = MetricServiceServer::new(StandInService(stand_in.clone()));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await
            .unwrap();
    });

    // KEDA_RS_BENCH_SERVER_CPUS (e.g. "0") pins the server with taskset, so that it does not
    // compete with the load generator (run the benchmark itself with `taskset -c 1`).
    let binary = env!("CARGO_BIN_EXE_keda-metrics-apiserver");
    let mut command = match std::env::var("KEDA_RS_BENCH_SERVER_CPUS") {
        Ok(cpus) => {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", &cpus, binary]);
            c
        }
        Err(_) => tokio::process::Command::new(binary),
    };
    let mut child = command
        .args([
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            "0",
            "--insecure-skip-auth",
            "--metrics-bind-address",
            "0",
        ])
        .args(["--metrics-service-address", &operator.to_string()])
        .args(
            std::env::var("KEDA_RS_BENCH_SERVER_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let addr: SocketAddr = line.rsplit("https://").next().unwrap().parse().unwrap();

    // One HTTP/2 connection, as kube-apiserver's aggregator keeps to an aggregated server.
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(kube_sim::upstream::AcceptAny::default()))
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);

    let rss_before = rss_mib(pid);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(
        usize::try_from(rate * seconds).unwrap_or(0),
    )));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = rate * seconds;
    let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for i in 0..total {
        ticker.tick().await;
        let mut sender = sender.clone();
        let latencies = latencies.clone();
        let failures = failures.clone();
        let n = usize::try_from(i).unwrap_or(0) % metrics;
        tasks.push(tokio::spawn(async move {
            let uri = format!("https://{addr}/apis/external.metrics.k8s.io/v1beta1/namespaces/bench/s0-queue-{n}?labelSelector=scaledobject.keda.sh%2Fname%3Dso-{}", n % 1000);
            let request = hyper::Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
            let sent = Instant::now();
            match sender.send_request(request).await {
                Ok(response) if response.status().is_success() => {
                    let _ = response.into_body().collect().await;
                    latencies.lock().unwrap().push(sent.elapsed());
                }
                _ => {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = started.elapsed();
    let cpu = cpu_seconds(pid) - cpu_before;
    let rss_after = rss_mib(pid);
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let achieved = latencies.len() as f64 / wall.as_secs_f64();
    println!(
        "keda-metrics-apiserver load: {rate} req/s target over {metrics} distinct metrics for {seconds} s, one HTTP/2 connection"
    );
    println!("  requests ok        {}", latencies.len());
    println!("  requests failed    {}", failures.load(Ordering::Relaxed));
    println!("  achieved           {achieved:.0} req/s");
    println!(
        "  latency p50        {:.3} ms",
        ms(percentile(&latencies, 0.50))
    );
    println!(
        "  latency p99        {:.3} ms",
        ms(percentile(&latencies, 0.99))
    );
    println!(
        "  latency p999       {:.3} ms",
        ms(percentile(&latencies, 0.999))
    );
    println!(
        "  latency max        {:.3} ms",
        ms(latencies.last().copied().unwrap_or_default())
    );
    println!("  server RSS         {rss_before:.1} MiB before, {rss_after:.1} MiB after");
    println!(
        "  server CPU         {cpu:.2} s over {:.1} s wall ({:.1}% of one core)",
        wall.as_secs_f64(),
        100.0 * cpu / wall.as_secs_f64()
    );
    println!(
        "  operator calls     {}",
        stand_in.calls.load(Ordering::Relaxed)
    );
    println!(
        "  operator conns     {}",
        stand_in.peers.lock().unwrap().len()
    );
}
