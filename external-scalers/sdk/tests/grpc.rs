//! The SDK's server through a real tonic client on loopback: every RPC, error statuses, the
//! polling fallback of `StreamIsActive`, the health service, graceful shutdown, TLS and mTLS.

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

mod support;

use std::time::Duration;

use keda_external_scaler::Server;
use keda_external_scaler::proto::GetMetricsRequest;
use keda_external_scaler::proto::external_scaler_client::ExternalScalerClient;
use keda_external_scaler::testing::{
    client, is_active, metric_specs, metric_value, next_activity, within,
};
use support::{METRIC, TestScaler, scaled_object, start};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn every_rpc_answers_with_the_scalers_values_in_float_and_integer_fields() {
    let (scaler, length) = TestScaler::new(true);
    let server = start(Server::new(scaler)).await;
    let mut client = client(server.addr()).await;
    let so = scaled_object("orders", "shop", &[("target", "2.5"), ("second", "lag")]);

    assert!(!is_active(&mut client, &so).await);
    length.send_replace(41.5);
    assert!(is_active(&mut client, &so).await);

    assert_eq!(
        metric_specs(&mut client, &so).await,
        [(METRIC.to_owned(), 3, 2.5), ("lag".to_owned(), 1, 0.25)]
    );
    assert_eq!(metric_value(&mut client, &so, METRIC).await, (42, 41.5));

    // The pushed stream: the current state first, then each change as it happens.
    let mut stream = client.stream_is_active(so).await.unwrap().into_inner();
    assert_eq!(
        next_activity(&mut stream, "the first message").await,
        Some(true)
    );
    length.send_replace(0.0);
    assert_eq!(
        next_activity(&mut stream, "the second message").await,
        Some(false)
    );
    length.send_replace(1.0);
    assert_eq!(
        next_activity(&mut stream, "the third message").await,
        Some(true)
    );

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn errors_become_the_grpc_status_of_their_kind() {
    let (scaler, _length) = TestScaler::new(true);
    let server = start(Server::new(scaler)).await;
    let mut client = client(server.addr()).await;

    let bad_target = scaled_object("w", "ns", &[("target", "five")]);
    let status = client.get_metric_spec(bad_target).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("`target`"), "{status:?}");

    let down = scaled_object("w", "ns", &[("fail", "unavailable")]);
    for status in [
        client.is_active(down.clone()).await.unwrap_err(),
        client.get_metric_spec(down.clone()).await.unwrap_err(),
        client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(down.clone()),
                metric_name: METRIC.to_owned(),
            })
            .await
            .unwrap_err(),
        client.stream_is_active(down).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(status.message(), "the test source is down");
    }

    let broken = scaled_object("w", "ns", &[("fail", "internal")]);
    let status = client.is_active(broken).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");

    let status = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(scaled_object("w", "ns", &[])),
            metric_name: "unknown".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let status = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: None,
            metric_name: METRIC.to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_a_push_stream_stream_is_active_polls_and_sends_changes() {
    let (scaler, length) = TestScaler::new(false);
    let server = start(Server::new(scaler).stream_poll_interval(Duration::from_millis(20))).await;
    let mut client = client(server.addr()).await;
    let mut stream = client
        .stream_is_active(scaled_object("w", "ns", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_activity(&mut stream, "the first poll").await,
        Some(false)
    );
    length.send_replace(3.0);
    assert_eq!(next_activity(&mut stream, "the change").await, Some(true));
    length.send_replace(0.0);
    assert_eq!(
        next_activity(&mut stream, "the change back").await,
        Some(false)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_is_serving_for_the_server_and_the_scaler_service() {
    let (scaler, _length) = TestScaler::new(true);
    let mut server = start(Server::new(scaler)).await;
    let channel = Channel::from_shared(format!("http://{}", server.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "externalscaler.ExternalScaler"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
    let status = health
        .check(HealthCheckRequest {
            service: "no.such.Service".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // A watcher sees the status turn NOT_SERVING when shutdown begins.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "externalscaler.ExternalScaler".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = within("the first health message", watch.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    server.begin_shutdown();
    let next = within("the NOT_SERVING message", watch.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    drop(health);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_the_server_returns() {
    let (scaler, _length) = TestScaler::new(true);
    // A long grace: the server must return because the streams ended, not because it expired.
    let mut server = start(Server::new(scaler).shutdown_grace(Duration::from_secs(3600))).await;
    let mut pushed_client = client(server.addr()).await;
    let mut pushed = pushed_client
        .stream_is_active(scaled_object("a", "ns", &[]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        next_activity(&mut pushed, "a pushed message")
            .await
            .is_some()
    );

    let (poll_scaler, _poll_length) = TestScaler::new(false);
    let mut polling_server =
        start(Server::new(poll_scaler).shutdown_grace(Duration::from_secs(3600))).await;
    let mut polled_client = client(polling_server.addr()).await;
    let mut polled = polled_client
        .stream_is_active(scaled_object("b", "ns", &[]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        next_activity(&mut polled, "a polled message")
            .await
            .is_some()
    );

    server.begin_shutdown();
    // The stream ends cleanly (end of stream, status OK), and the server returns.
    assert_eq!(
        next_activity(&mut pushed, "the pushed stream to end").await,
        None
    );
    server.shutdown().await.unwrap();

    polling_server.begin_shutdown();
    assert_eq!(
        next_activity(&mut polled, "the polled stream to end").await,
        None
    );
    polling_server.shutdown().await.unwrap();
}

/// A CA and a certificate for `names` signed by it, as PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki(names: &[&str]) -> (Pki, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let (cert, key) = leaf(names, &issuer);
    (
        Pki {
            ca: ca_cert.pem(),
            cert,
            key,
        },
        issuer,
    )
}

fn leaf(names: &[&str], issuer: &rcgen::Issuer<'static, rcgen::KeyPair>) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn tls_client(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<ExternalScalerClient<Channel>, tonic::Status> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
    Ok(ExternalScalerClient::new(channel))
}

async fn is_active_over(
    client: Result<ExternalScalerClient<Channel>, tonic::Status>,
) -> Result<bool, tonic::Status> {
    let mut client = client?;
    let answer = client.is_active(scaled_object("w", "ns", &[])).await?;
    Ok(answer.into_inner().result)
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_ca_and_refuses_plaintext() {
    let (server_pki, _issuer) = pki(&["localhost"]);
    let (scaler, length) = TestScaler::new(true);
    length.send_replace(1.0);
    let server =
        start(Server::new(scaler).tls(server_pki.cert.clone(), server_pki.key.clone())).await;

    let over_tls = is_active_over(tls_client(server.addr(), &server_pki.ca, None).await).await;
    assert!(over_tls.unwrap(), "the scaler's answer over TLS");

    // Plaintext fails at the HTTP/2 handshake or at the first call.
    let plaintext = within(
        "the plaintext connection",
        Channel::from_shared(format!("http://{}", server.addr()))
            .unwrap()
            .connect(),
    )
    .await;
    if let Ok(channel) = plaintext {
        let refused = within(
            "the plaintext call",
            ExternalScalerClient::new(channel).is_active(scaled_object("w", "ns", &[])),
        )
        .await;
        assert!(
            refused.is_err(),
            "a plaintext call was answered: {refused:?}"
        );
    }

    let (other, _other_issuer) = pki(&["localhost"]);
    let untrusted = is_active_over(tls_client(server.addr(), &other.ca, None).await).await;
    assert!(
        untrusted.is_err(),
        "a client trusting another CA got through"
    );

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_client_ca() {
    let (server_pki, _server_issuer) = pki(&["localhost"]);
    let (client_pki, client_issuer) = pki(&["keda-operator"]);
    let (scaler, _length) = TestScaler::new(true);
    let server = start(
        Server::new(scaler)
            .tls(server_pki.cert.clone(), server_pki.key.clone())
            .client_ca(client_pki.ca.clone()),
    )
    .await;

    let with_cert = is_active_over(
        tls_client(
            server.addr(),
            &server_pki.ca,
            Some((&client_pki.cert, &client_pki.key)),
        )
        .await,
    )
    .await;
    assert!(!with_cert.unwrap(), "the scaler's answer over mTLS");

    let without_cert = is_active_over(tls_client(server.addr(), &server_pki.ca, None).await).await;
    assert!(
        without_cert.is_err(),
        "a client without a certificate got through"
    );

    // A certificate from another CA is refused too.
    let (stranger, _stranger_issuer) = pki(&["keda-operator"]);
    let foreign = is_active_over(
        tls_client(
            server.addr(),
            &server_pki.ca,
            Some((&stranger.cert, &stranger.key)),
        )
        .await,
    )
    .await;
    assert!(
        foreign.is_err(),
        "a client certificate from another CA got through"
    );

    // A second certificate from the trusted client CA works.
    let (cert, key) = leaf(&["another-client"], &client_issuer);
    let second =
        is_active_over(tls_client(server.addr(), &server_pki.ca, Some((&cert, &key))).await).await;
    assert!(second.is_ok(), "{second:?}");

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_ca_without_tls_is_refused_at_start() {
    let (scaler, _length) = TestScaler::new(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = Server::new(scaler)
        .client_ca("-----BEGIN CERTIFICATE-----\n")
        .serve_on(listener, std::future::pending())
        .await;
    assert!(
        matches!(
            result,
            Err(keda_external_scaler::ServeError::ClientCaWithoutTls)
        ),
        "{result:?}"
    );
}
