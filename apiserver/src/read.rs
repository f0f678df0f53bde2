//! Reads: get, list (from the watch cache, paged with `limit`/`continue`), and watch
//! (newline-delimited JSON events over a chunked response), with label and field selectors.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use berth_api::fields::FieldSelector;
use berth_api::labels::Selector;
use berth_api::registry::ResourceInfo;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::cache::{Event, EventType};
use crate::error::{ApiError, ApiResult};
use crate::request::{Format, Query, Target};
use crate::server::{encode, ApiServer};

/// Label and field selectors of a list or watch.
pub struct Filter {
    kind: &'static str,
    labels: Selector,
    fields: FieldSelector,
}

impl Filter {
    pub fn from_query(info: &'static ResourceInfo, q: &Query) -> ApiResult<Self> {
        let labels = Selector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        fields
            .check_supported(info.kind)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Self {
            kind: info.kind,
            labels,
            fields,
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if !self.labels.is_empty() {
            let labels = obj
                .pointer("/metadata/labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok());
            if !self.labels.matches_opt(labels.as_ref()) {
                return false;
            }
        }
        self.fields.is_empty() || self.fields.matches(self.kind, obj)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

/// A token resuming a list at revision `rv` from key `start` (inclusive).
fn continue_token(rv: i64, start: String) -> String {
    let token = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start,
    };
    base64::engine::general_purpose::URL_SAFE
        .encode(serde_json::to_vec(&token).expect("token serializes"))
}

/// A token resuming a list after `last_key`.
fn encode_continue(rv: i64, last_key: &str) -> String {
    continue_token(rv, format!("{last_key}\0"))
}

fn decode_continue(token: &str, prefix: &str) -> ApiResult<ContinueToken> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if t.v != "meta.k8s.io/v1" || !t.start.starts_with(prefix) || t.rv <= 0 {
        return Err(bad());
    }
    Ok(t)
}

/// What a list produced.
pub struct ListResult {
    pub items: Vec<Arc<Value>>,
    pub revision: i64,
    pub continue_token: Option<String>,
}

impl ApiServer {
    pub async fn get(&self, target: &Target, q: &Query) -> ApiResult<Value> {
        let key = target.key()?;
        // resourceVersion=0 (or any) may be served from the cache; otherwise read through.
        if q.get("resourceVersion") == Some("0") {
            if let Some(c) = self.cache.get(&key) {
                return Ok((*c.object).clone());
            }
            return Err(ApiError::not_found(target.info, target.name()));
        }
        match self.current(target).await? {
            Some((_, v)) => Ok(v),
            None => Err(ApiError::not_found(target.info, target.name())),
        }
    }

    pub async fn list(&self, target: &Target, q: &Query) -> ApiResult<ListResult> {
        let prefix = target.prefix()?;
        let filter = Filter::from_query(target.info, q)?;
        let limit = q.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
        if let Some(token) = q.get("continue").filter(|t| !t.is_empty()) {
            let t = decode_continue(token, &prefix)?;
            return self
                .list_from_store(&prefix, &filter, t.rv, &t.start, limit)
                .await;
        }
        let rv = q.get("resourceVersion").unwrap_or("");
        let exact = q.get("resourceVersionMatch") == Some("Exact");
        match rv {
            "" => {
                let rev = self
                    .storage
                    .linearizable_revision()
                    .await
                    .map_err(|e| ApiError::unavailable(e.to_string()))?;
                self.cache.wait_for(rev).await?;
            }
            "0" => {}
            n => {
                let rev: i64 = n
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {n:?}")))?;
                if exact {
                    return self
                        .list_from_store(&prefix, &filter, rev, &prefix, limit)
                        .await;
                }
                self.cache.wait_for(rev).await?;
            }
        }
        let (cached, revision) = self.cache.list(&prefix, None);
        let mut items = Vec::new();
        let mut continue_token = None;
        for (i, c) in cached.iter().enumerate() {
            if !filter.matches(&c.object) {
                continue;
            }
            if limit.is_some_and(|l| items.len() == l) {
                // More matches may follow: hand back a token for the rest, read from the
                // store at this revision.
                if cached[i..].iter().any(|c| filter.matches(&c.object)) {
                    let last = &cached[..i]
                        .iter()
                        .rev()
                        .find(|c| filter.matches(&c.object))
                        .map(|c| c.key.clone())
                        .unwrap_or_default();
                    continue_token = Some(encode_continue(revision, last));
                }
                break;
            }
            items.push(c.object.clone());
        }
        Ok(ListResult {
            items,
            revision,
            continue_token,
        })
    }

    async fn list_from_store(
        &self,
        prefix: &str,
        filter: &Filter,
        rev: i64,
        start: &str,
        limit: Option<usize>,
    ) -> ApiResult<ListResult> {
        let end = crate::storage::prefix_end(prefix);
        let mut items = Vec::new();
        let mut from = start.to_string();
        loop {
            let page = self
                .storage
                .range(&from, &end, rev, 500)
                .await
                .map_err(|e| match e {
                    crate::storage::Error::Compacted { .. } => ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ),
                    other => ApiError::from_storage(other, berth_api::registry::all().first().expect("registry"), ""),
                })?;
            let n = page.items.len();
            for it in page.items {
                from = format!("{}\0", it.key);
                let Some(obj) = crate::cache::decode(&it.value, it.mod_revision) else {
                    continue;
                };
                if !filter.matches(&obj) {
                    continue;
                }
                if limit.is_some_and(|l| items.len() == l) {
                    // The next page starts at this item.
                    return Ok(ListResult {
                        items,
                        revision: rev,
                        continue_token: Some(continue_token(rev, it.key.clone())),
                    });
                }
                items.push(Arc::new(obj));
            }
            if !page.more || n == 0 {
                break;
            }
        }
        Ok(ListResult {
            items,
            revision: rev,
            continue_token: None,
        })
    }

    /// A watch: events after the requested revision (or the current state as ADDED events,
    /// then changes), filtered by selectors, until `timeoutSeconds` or the receiver goes.
    pub fn watch_events(&self, target: &Target, q: &Query) -> ApiResult<mpsc::Receiver<WatchItem>> {
        let info = target.info;
        let prefix = target.prefix()?;
        let filter = Filter::from_query(info, q)?;
        let bookmarks = q.flag("allowWatchBookmarks");
        let timeout = q
            .int("timeoutSeconds")?
            .filter(|t| *t > 0)
            .unwrap_or(1800)
            .min(3600);
        let rv = q.get("resourceVersion").unwrap_or("");
        let send_initial = q.flag("sendInitialEvents");
        let (tx, rx) = mpsc::channel::<WatchItem>(64);
        let (initial, backlog, mut live, start_rev) = if rv.is_empty() || rv == "0" || send_initial
        {
            let (objs, rev, live) = self.cache.snapshot_and_watch(&prefix);
            (objs, Vec::new(), live, rev)
        } else {
            let rev: i64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            match self.cache.watch_from(&prefix, rev) {
                Ok((backlog, live)) => (Vec::new(), backlog, live, rev),
                Err(e) => {
                    // Kubernetes answers 200 and an ERROR event carrying 410 Gone.
                    let err: ApiError = e.into();
                    let _ = tx.try_send(WatchItem {
                        kind: "ERROR",
                        object: err.status(),
                    });
                    return Ok(rx);
                }
            }
        };
        let bookmark = move |rev: i64, initial_end: bool| {
            let mut meta = json!({"resourceVersion": rev.to_string()});
            if initial_end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            WatchItem {
                kind: "BOOKMARK",
                object: json!({"kind": info.kind, "apiVersion": info.api_version(),
                    "metadata": meta}),
            }
        };
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout as u64);
            let mut last_rev = start_rev;
            let send = |kind: EventType, obj: &Value| WatchItem {
                kind: kind.as_str(),
                object: obj.clone(),
            };
            for c in &initial {
                if filter.matches(&c.object)
                    && tx.send(send(EventType::Added, &c.object)).await.is_err()
                {
                    return;
                }
            }
            if send_initial && bookmarks && tx.send(bookmark(last_rev, true)).await.is_err() {
                return;
            }
            for ev in &backlog {
                last_rev = ev.revision;
                if let Some((kind, obj)) = transition(&filter, ev) {
                    if tx.send(send(kind, obj)).await.is_err() {
                        return;
                    }
                }
            }
            let mut tick = tokio::time::interval(Duration::from_secs(20));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = tx.closed() => return,
                    _ = tick.tick(), if bookmarks => {
                        if tx.send(bookmark(last_rev, false)).await.is_err() {
                            return;
                        }
                    }
                    ev = live.recv() => match ev {
                        Ok(ev) => {
                            if ev.revision <= last_rev || !ev.key.starts_with(&prefix) {
                                continue;
                            }
                            last_rev = ev.revision;
                            if let Some((kind, obj)) = transition(&filter, &ev) {
                                if tx.send(send(kind, obj)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        // Too slow to follow: end the watch; the client resumes from the last
                        // revision it saw.
                        Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                    }
                }
            }
        });
        Ok(rx)
    }

    /// A watch over HTTP: one JSON event per line, objects as Tables when asked.
    pub fn watch(&self, target: &Target, q: &Query, format: Format) -> ApiResult<Response> {
        let info = target.info;
        let rx = self.watch_events(target, q)?;
        let mut first = true;
        let lines = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |item| {
            let object = match (format, item.kind) {
                (Format::Table, "ADDED" | "MODIFIED" | "DELETED") => {
                    let t = crate::table::table_event(
                        info,
                        &item.object,
                        first,
                        jiff::Timestamp::now(),
                        crate::table::IncludeObject::Metadata,
                    );
                    first = false;
                    t
                }
                _ => item.object,
            };
            let mut out = serde_json::to_vec(&json!({"type": item.kind, "object": object}))
                .expect("event serializes");
            out.push(b'\n');
            Ok::<_, std::io::Error>(out)
        });
        Ok(stream_response(format, lines))
    }
}

/// One watch event: its type (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`) and object.
#[derive(Debug, Clone)]
pub struct WatchItem {
    pub kind: &'static str,
    pub object: Value,
}

/// What a watcher with a filter sees of one change: objects entering the filter are ADDED,
/// objects leaving it DELETED.
fn transition<'a>(filter: &Filter, ev: &'a Event) -> Option<(EventType, &'a Value)> {
    let now = ev.kind != EventType::Deleted && filter.matches(&ev.object);
    let before = ev.prev.as_ref().is_some_and(|p| filter.matches(p));
    match (ev.kind, before, now) {
        (EventType::Deleted, true, _) => Some((EventType::Deleted, &ev.object)),
        (EventType::Deleted, false, _) => None,
        (_, true, true) => Some((EventType::Modified, &ev.object)),
        (_, false, true) => Some((EventType::Added, &ev.object)),
        (_, true, false) => Some((EventType::Deleted, &ev.object)),
        (_, false, false) => None,
    }
}

fn stream_response<S>(format: Format, stream: S) -> Response
where
    S: futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static,
{
    let ct = match format {
        Format::Table => "application/json;as=Table;v=v1;g=meta.k8s.io",
        _ => "application/json",
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ct)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .expect("valid response")
}

/// The JSON of a list response.
pub fn list_body(info: &ResourceInfo, result: &ListResult) -> Value {
    let mut meta = json!({"resourceVersion": result.revision.to_string()});
    if let Some(t) = &result.continue_token {
        meta["continue"] = Value::String(t.clone());
    }
    let items: Vec<&Value> = result.items.iter().map(|v| v.as_ref()).collect();
    json!({
        "kind": info.list_kind(),
        "apiVersion": info.api_version(),
        "metadata": meta,
        "items": items,
    })
}

/// Encodes a list result in the negotiated format.
pub fn list_response(info: &'static ResourceInfo, result: &ListResult, format: Format) -> Response {
    match format {
        Format::Table => {
            let objs: Vec<&Value> = result.items.iter().map(|v| v.as_ref()).collect();
            let mut t = crate::table::to_table(
                info,
                &objs,
                Some(&result.revision.to_string()),
                jiff::Timestamp::now(),
                crate::table::IncludeObject::Metadata,
            );
            if let Some(c) = &result.continue_token {
                t["metadata"]["continue"] = Value::String(c.clone());
            }
            encode(StatusCode::OK, &t, Format::Table)
        }
        Format::Json => {
            // Serialised straight from the cached objects: no deep copy of every item.
            #[derive(serde::Serialize)]
            struct Body<'a> {
                kind: String,
                #[serde(rename = "apiVersion")]
                api_version: String,
                metadata: Value,
                items: Vec<&'a Value>,
            }
            let mut metadata = json!({"resourceVersion": result.revision.to_string()});
            if let Some(t) = &result.continue_token {
                metadata["continue"] = Value::String(t.clone());
            }
            let body = Body {
                kind: info.list_kind(),
                api_version: info.api_version(),
                metadata,
                items: result.items.iter().map(|v| v.as_ref()).collect(),
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_vec(&body).unwrap_or_default(),
            )
                .into_response()
        }
        Format::Yaml => encode(StatusCode::OK, &list_body(info, result), Format::Yaml),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_stay_in_their_prefix() {
        let t = encode_continue(42, "/registry/core/pods/default/a");
        let d = decode_continue(&t, "/registry/core/pods/default/").unwrap();
        assert_eq!(d.rv, 42);
        assert_eq!(d.start, "/registry/core/pods/default/a\0");
        assert!(decode_continue(&t, "/registry/core/secrets/").is_err());
        assert!(decode_continue("garbage", "/").is_err());
    }
}
