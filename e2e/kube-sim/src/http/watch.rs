//! Watch streams: one JSON event per line, resumable from a resourceVersion, with bookmarks,
//! `sendInitialEvents`, selectors (objects leaving a selector are sent as DELETED) and
//! `410 Gone` when the requested version is older than the history kept.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::query::Query;
use crate::api_error::ApiError;
use crate::cluster::Cluster;
use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::EventType;

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, object: &Value) -> bool {
        let in_namespace = self
            .namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns));
        in_namespace && self.labels.matches_object(object) && self.fields.matches(object)
    }

    /// The event to send for a change, if any: an object entering the selector is ADDED, one
    /// leaving it DELETED, as the apiserver decides by comparing with the previous object.
    fn translate(
        &self,
        type_: EventType,
        object: &Value,
        previous: Option<&Value>,
    ) -> Option<EventType> {
        let now = self.matches(object);
        match type_ {
            EventType::Added => now.then_some(EventType::Added),
            EventType::Deleted => now.then_some(EventType::Deleted),
            EventType::Modified => {
                let was = previous.is_some_and(|p| self.matches(p));
                match (was, now) {
                    (false, true) => Some(EventType::Added),
                    (true, true) => Some(EventType::Modified),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
        }
    }
}

fn line(type_: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": type_, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// An event line whose object is rendered as a one-row Table when the client asked for tables.
fn event_line(rt: &ResourceType, table: bool, type_: &str, object: &Value) -> Bytes {
    if !table {
        return line(type_, object);
    }
    let rv = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
    let rendered = crate::http::table::render(rt, std::slice::from_ref(object), rv);
    line(type_, &rendered)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata}),
    )
}

/// Starts a watch and returns the streaming response.
#[allow(
    clippy::too_many_lines,
    reason = "one state machine, clearer in one place"
)]
pub fn watch(
    cluster: &Cluster,
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    query: &Query,
    table: bool,
) -> Result<Response, ApiError> {
    let filter = Filter {
        namespace,
        labels: query.label_selector()?,
        fields: query.field_selector()?,
    };
    filter
        .fields
        .check_supported(&rt.kind)
        .map_err(ApiError::bad_request)?;
    let bookmarks = query.flag("allowWatchBookmarks");
    let send_initial = query.flag("sendInitialEvents");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let requested: Option<u64> = match query.get("resourceVersion") {
        None | Some("0") => None,
        Some(rv) => Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    if send_initial && !bookmarks {
        return Err(ApiError::invalid("", "ListOptions", "", &[(
            "allowWatchBookmarks".into(),
            "Required value: allowWatchBookmarks must be set to true when sendInitialEvents is set".into(),
        )]));
    }

    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    let key = rt.key();
    let mut initial = Vec::new();
    let since = if let (Some(rv), false) = (requested, send_initial) {
        rv
    } else {
        {
            let (items, rv) = cluster.store.list(&key, filter.namespace.as_deref());
            for item in items {
                if filter.matches(&item) {
                    initial.push(event_line(&rt, table, "ADDED", &item));
                }
            }
            if send_initial {
                initial.push(bookmark(&rt, rv, true));
            }
            rv
        }
    };
    let replay = cluster.store.watch_from(&key, since);
    tokio::spawn(async move {
        let Ok((replay, mut events)) = replay else {
            let gone = ApiError::gone(format!("too old resource version: {since}"));
            let _ = tx.send(line("ERROR", &gone.to_status())).await;
            return;
        };
        for bytes in initial {
            if tx.send(bytes).await.is_err() {
                return;
            }
        }
        let mut last = since;
        for event in replay {
            last = event.resource_version;
            if let Some(t) = filter.translate(event.type_, &event.object, event.previous.as_deref())
                && tx
                    .send(event_line(&rt, table, t.as_str(), &event.object))
                    .await
                    .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            tokio::select! {
                () = &mut deadline => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(bookmark(&rt, last, false)).await.is_err() {
                        return;
                    }
                }
                event = events.recv() => match event {
                    Ok(event) if event.resource == key && event.resource_version > last => {
                        last = event.resource_version;
                        if let Some(t) = filter.translate(event.type_, &event.object, event.previous.as_deref())
                            && tx.send(event_line(&rt, table, t.as_str(), &event.object)).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // A watcher that fell behind is closed; its client re-watches from the last
                    // version it saw, as after any dropped watch.
                    Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|o| o.map(Ok::<_, std::convert::Infallible>))
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(e.to_string()))
}
