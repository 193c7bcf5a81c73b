//! A complete external scaler: scales on the length of an in-process queue and pushes activation
//! as soon as the queue becomes non-empty. A stand-in for a real source: replace the `watch`
//! channel with your queue's client.
//!
//! Run: `cargo run -p keda-external-scaler --example in_memory_queue`, then point a ScaledObject's
//! `external-push` trigger at `scalerAddress: <service>:9090`.

use std::time::Duration;

use keda_external_scaler::{
    BoxStream, Error, MetricSpec, MetricValue, Result, Scaler, ScalerRequest, Server,
    activity_changes, shutdown_signal,
};
use tokio::sync::watch;

const METRIC: &str = "queue-length";

/// Scales on the length of a queue; `length` is updated by whoever fills and drains it.
struct QueueScaler {
    length: watch::Sender<u32>,
}

impl QueueScaler {
    /// The per-replica target from the trigger metadata (`targetLength`, default 10).
    fn target(request: &ScalerRequest) -> Result<f64> {
        let target: f64 = request.parse_or("targetLength", 10.0)?;
        if target > 0.0 {
            Ok(target)
        } else {
            Err(Error::invalid_metadata(
                "targetLength must be greater than 0",
            ))
        }
    }
}

impl Scaler for QueueScaler {
    async fn is_active(&self, _request: &ScalerRequest) -> Result<bool> {
        Ok(*self.length.borrow() > 0)
    }

    async fn metric_specs(&self, request: &ScalerRequest) -> Result<Vec<MetricSpec>> {
        Ok(vec![MetricSpec::new(METRIC, Self::target(request)?)])
    }

    async fn metric_values(
        &self,
        _request: &ScalerRequest,
        metric_name: &str,
    ) -> Result<Vec<MetricValue>> {
        if metric_name != METRIC {
            return Err(Error::not_found(format!("no metric {metric_name:?}")));
        }
        Ok(vec![MetricValue::new(
            METRIC,
            f64::from(*self.length.borrow()),
        )])
    }

    /// Pushes the current activity at once, then every change.
    async fn activity_stream(
        &self,
        _request: &ScalerRequest,
    ) -> Result<Option<BoxStream<Result<bool>>>> {
        let mut changes = self.length.subscribe();
        changes.mark_changed();
        // `activity_changes` sends the first answer, then only the answers that differ.
        Ok(Some(activity_changes(changes, |mut changes| async move {
            changes.changed().await.ok()?;
            let active = *changes.borrow_and_update() > 0;
            Some((Ok(active), changes))
        })))
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_target(false).init();
    let (length, _) = watch::channel(0_u32);
    // Stand-in producer and consumer: 5 jobs arrive every 30 s, one is done per second.
    let producer = length.clone();
    tokio::spawn(async move {
        loop {
            producer.send_modify(|n| *n += 5);
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    });
    let consumer = length.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            consumer.send_if_modified(|n| {
                let busy = *n > 0;
                *n = n.saturating_sub(1);
                busy
            });
        }
    });
    Server::new(QueueScaler { length })
        .serve("0.0.0.0:9090".parse()?, shutdown_signal())
        .await?;
    Ok(())
}
