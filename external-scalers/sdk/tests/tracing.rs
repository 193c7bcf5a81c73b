//! Every RPC runs in a span named `rpc` that carries the RPC and the ScaledObject's name and
//! namespace.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod support;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use keda_external_scaler::Server;
use keda_external_scaler::proto::GetMetricsRequest;
use keda_external_scaler::testing::{client, next_activity};
use support::{METRIC, TestScaler, scaled_object, start};
use tracing::field::{Field, Visit};
use tracing::span::Attributes;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

type Spans = Arc<Mutex<Vec<BTreeMap<String, String>>>>;

/// Records the fields of every new span named `rpc`.
struct Capture(Spans);

struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &tracing::span::Id, _ctx: Context<'_, S>) {
        if attrs.metadata().name() == "rpc" {
            let mut fields = Fields(BTreeMap::new());
            attrs.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rpc_has_a_span_with_the_scaled_objects_name_and_namespace() {
    let spans: Spans = Arc::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(Capture(Arc::clone(&spans))),
    )
    .unwrap();

    let (scaler, _length) = TestScaler::new(true);
    let server = start(Server::new(scaler)).await;
    let mut client = client(server.addr()).await;
    let so = scaled_object("orders-consumer", "shop", &[]);
    client.is_active(so.clone()).await.unwrap();
    client.get_metric_spec(so.clone()).await.unwrap();
    client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(so.clone()),
            metric_name: METRIC.to_owned(),
        })
        .await
        .unwrap();
    let mut stream = client.stream_is_active(so).await.unwrap().into_inner();
    next_activity(&mut stream, "the first message").await;
    drop(stream);
    server.shutdown().await.unwrap();

    let spans = spans.lock().unwrap().clone();
    for rpc in ["IsActive", "GetMetricSpec", "GetMetrics", "StreamIsActive"] {
        let span = spans
            .iter()
            .find(|s| s.get("rpc").map(String::as_str) == Some(rpc))
            .unwrap_or_else(|| panic!("no span for {rpc}: {spans:#?}"));
        assert_eq!(span["scaledobject"], "orders-consumer", "{rpc}");
        assert_eq!(span["namespace"], "shop", "{rpc}");
    }
}
