//! Routing, auth and the JSON shapes of the management API.

use crate::server::{AdminAuth, Endpoint};
use bytes::Bytes;
use ehub_broker_core::{
    ActiveFault, ConsumerGroup, CoreError, CoreErrorKind, DetachCondition, Disruption, Hub, HubConfig, Origin,
    TokenType,
};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

type Response = http::Response<Full<Bytes>>;

/// Largest request body (a hub definition is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

fn respond(status: StatusCode, body: Value) -> Response {
    let mut r = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

/// A refusal: status, code and message.
struct Refusal(StatusCode, &'static str, String);

impl Refusal {
    fn into_response(self) -> Response {
        respond(self.0, json!({ "error": { "code": self.1, "message": self.2 } }))
    }
}

impl From<CoreError> for Refusal {
    fn from(e: CoreError) -> Self {
        let (status, code) = match e.kind() {
            CoreErrorKind::AlreadyExists => (StatusCode::CONFLICT, "AlreadyExists"),
            CoreErrorKind::NotFound => (StatusCode::NOT_FOUND, "NotFound"),
            CoreErrorKind::Invalid => (StatusCode::BAD_REQUEST, "InvalidName"),
            CoreErrorKind::Declared => (StatusCode::CONFLICT, "DeclaredInConfiguration"),
            CoreErrorKind::LimitExceeded => (StatusCode::BAD_REQUEST, "QuotaExceeded"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "management request failed");
        }
        Refusal(status, code, e.to_string())
    }
}

fn origin(o: Origin) -> &'static str {
    match o {
        Origin::Config => "config",
        Origin::Runtime => "runtime",
    }
}

fn group_json(g: &ConsumerGroup, o: Origin) -> Value {
    json!({
        "name": g.name,
        "origin": origin(o),
        "created_at": g.created_at,
        "receivers_per_partition": g.receiver_counts(),
    })
}

fn hub_json(h: &Hub) -> Value {
    let groups: Vec<String> = h.consumer_groups().iter().map(|(g, _)| g.name.clone()).collect();
    json!({
        "name": h.name,
        "partition_count": h.partitions.len(),
        "partition_ids": h.partition_ids,
        "retention_hours": h.retention.map(|r| r.as_secs_f64() / 3600.0),
        "created_at": h.created_at,
        "origin": origin(h.origin),
        "consumer_groups": groups,
    })
}

/// `PATCH /hubs/{hub}`: what may change on a hub.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UpdateHub {
    partition_count: Option<u32>,
}

/// `POST /faults`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InjectFault {
    kind: String,
    hub: Option<String>,
    partition: Option<String>,
    condition: Option<String>,
    seconds: Option<f64>,
    millis: Option<u64>,
    link_idle_seconds: Option<f64>,
    connection_idle_seconds: Option<f64>,
}

fn fault_json(f: &ActiveFault) -> Value {
    json!({ "id": f.id, "kind": f.kind, "until": f.until, "description": f.description })
}

fn inject(ep: &Endpoint, req: InjectFault) -> Result<Value, Refusal> {
    let bad = |m: String| Refusal(StatusCode::BAD_REQUEST, "InvalidFault", m);
    let faults = ep.broker.faults();
    let period = || match req.seconds {
        Some(s) if s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(bad("`seconds` (how long the fault lasts, up to a day) is required".into())),
    };
    let delay = || match req.millis {
        Some(m) if m <= 60_000 => Ok(Duration::from_millis(m)),
        _ => Err(bad("`millis` (the delay to add, up to a minute) is required".into())),
    };
    if let Some(h) = &req.hub {
        if ep.broker.hub(h).is_none() {
            return Err(Refusal(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("The messaging entity '{h}' could not be found."),
            ));
        }
    }
    Ok(match req.kind.as_str() {
        "detach" => {
            let c = req.condition.as_deref().unwrap_or("detach-forced");
            let condition = DetachCondition::parse(c)
                .ok_or_else(|| bad(format!("condition '{c}' is not link-stolen, detach-forced or server-busy")))?;
            let d = Disruption::Detach {
                hub: req.hub.map(|h| h.to_ascii_lowercase()),
                partition: req.partition,
                condition,
            };
            json!({ "kind": "detach", "connections": faults.disrupt("detach", d) })
        }
        "close-connections" => json!({ "kind": req.kind, "connections": faults.disrupt("close-connections", Disruption::Close) }),
        "expire-tokens" => json!({ "kind": req.kind, "connections": faults.disrupt("expire-tokens", Disruption::ExpireTokens) }),
        "server-busy" => fault_json(&faults.server_busy(req.hub.as_deref(), period()?)),
        "fsync-latency" => fault_json(&faults.fsync_latency(delay()?, period()?)),
        "frame-latency" => fault_json(&faults.frame_latency(delay()?, period()?)),
        "idle-timeouts" => {
            let secs = |v: Option<f64>, name: &str| match v {
                Some(s) if s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
                _ => Err(bad(format!("`{name}` (seconds, up to a day) is required"))),
            };
            let link = secs(req.link_idle_seconds, "link_idle_seconds")?;
            let connection = secs(req.connection_idle_seconds, "connection_idle_seconds")?;
            fault_json(&faults.idle_timeouts_for(link, connection, period()?))
        }
        other => {
            return Err(bad(format!(
                "'{other}' is not a fault: detach, close-connections, expire-tokens, server-busy, fsync-latency, frame-latency or idle-timeouts"
            )))
        }
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateHub {
    partition_count: Option<u32>,
    #[serde(default)]
    consumer_groups: Vec<String>,
    /// Retention by age in hours (fractions allowed); the broker's without it.
    retention_hours: Option<f64>,
}

/// The path's segments, percent-decoded (`$Default` may arrive as `%24Default`).
fn segments(path: &str) -> Option<Vec<String>> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned()))
        .collect()
}

pub(crate) async fn handle(ep: &Arc<Endpoint>, req: http::Request<Incoming>) -> Response {
    let (parts, body) = req.into_parts();
    let Some(path) = segments(parts.uri.path()) else {
        return Refusal(StatusCode::BAD_REQUEST, "InvalidUri", "the path is not UTF-8".into()).into_response();
    };
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    if path == ["health"] {
        return match parts.method {
            Method::GET | Method::HEAD => health(ep).await,
            _ => method_not_allowed(),
        };
    }
    // Like the health probe, no token: the figures carry no secret, and scrapers rarely sign.
    if path == ["metrics"] {
        return match (&parts.method, &ep.metrics) {
            (&Method::GET, Some(registry)) => metrics(ep, registry),
            (&Method::GET, None) => {
                Refusal(StatusCode::NOT_FOUND, "NotFound", "metrics are not served here".into()).into_response()
            }
            _ => method_not_allowed(),
        };
    }
    // Namespace-wide operations need a namespace-wide token; a hub's, a token for the hub.
    let audience = match path.as_slice() {
        ["hubs", hub, ..] => format!("sb://ehub/{hub}"),
        _ => "sb://ehub/".to_owned(),
    };
    let peer = parts.extensions.get::<std::net::SocketAddr>().map(|a| a.ip());
    if let Err(r) = authorize(ep, &parts.headers, &audience, peer) {
        return r.into_response();
    }
    let result = route(ep, &parts.method, &path, body).await;
    let status = result.as_ref().map_or_else(|r| r.0, |r| r.status());
    tracing::debug!(method = %parts.method, path = %parts.uri.path(), status = status.as_u16(), "management request");
    result.unwrap_or_else(Refusal::into_response)
}

fn method_not_allowed() -> Response {
    Refusal(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "that method is not supported here".into())
        .into_response()
}

fn authorize(ep: &Endpoint, headers: &http::HeaderMap, audience: &str, peer: Option<IpAddr>) -> Result<(), Refusal> {
    if ep.config.auth == AdminAuth::None {
        return Ok(());
    }
    let unauthorized = |m: String| Refusal(StatusCode::UNAUTHORIZED, "Unauthorized", m);
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(unauthorized("An Authorization header with a SAS token with Manage rights is required.".into()));
    };
    let value = value.to_str().map_err(|_| unauthorized("The Authorization header is not text.".into()))?;
    let (kind, token) = match value.strip_prefix("Bearer ") {
        Some(t) => (TokenType::Jwt, t),
        None => (TokenType::Sas, value),
    };
    let grant = match peer {
        Some(ip) => ep.broker.authorize_from(ip, kind, token, audience),
        None => ep.broker.authorize(kind, token, audience),
    }
    .map_err(unauthorized)?;
    if !grant.rights.manage {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Unauthorized access. 'Manage' claim(s) are required to perform this operation.".into(),
        ));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, CoreError> + Send + 'static) -> Result<T, Refusal> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Refusal::from),
        Err(e) => Err(Refusal(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string())),
    }
}

async fn read_json<T: serde::de::DeserializeOwned + Default>(body: Incoming) -> Result<T, Refusal> {
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, "InvalidBody", format!("reading the body: {e}")))?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| Refusal(StatusCode::BAD_REQUEST, "InvalidBody", e.to_string()))
}

fn hub_or_404(ep: &Endpoint, name: &str) -> Result<Arc<Hub>, Refusal> {
    ep.broker.hub(name).ok_or_else(|| {
        Refusal(StatusCode::NOT_FOUND, "NotFound", format!("The messaging entity '{name}' could not be found."))
    })
}

async fn route(ep: &Arc<Endpoint>, method: &Method, path: &[&str], body: Incoming) -> Result<Response, Refusal> {
    let broker = Arc::clone(&ep.broker);
    match (method, path) {
        (&Method::GET, ["hubs"]) => {
            let hubs: Vec<Value> = broker.hubs().iter().map(|h| hub_json(h)).collect();
            Ok(respond(StatusCode::OK, Value::Array(hubs)))
        }
        (&Method::GET, ["hubs", hub]) => Ok(respond(StatusCode::OK, hub_json(&*hub_or_404(ep, hub)?))),
        (&Method::PUT, ["hubs", hub]) => {
            let req: CreateHub = read_json(body).await?;
            let config = HubConfig {
                name: (*hub).to_owned(),
                partitions: req.partition_count.unwrap_or(4),
                consumer_groups: req.consumer_groups,
                retention: match req.retention_hours {
                    None => None,
                    Some(h) if h > 0.0 && h <= 24.0 * 3650.0 => Some(Duration::from_secs_f64(h * 3600.0)),
                    Some(h) => {
                        return Err(Refusal(
                            StatusCode::BAD_REQUEST,
                            "InvalidBody",
                            format!("`retention_hours` {h} is not in (0, 87600]"),
                        ))
                    }
                },
            };
            let created = blocking(move || broker.create_hub(config)).await?;
            Ok(respond(StatusCode::CREATED, hub_json(&created)))
        }
        (&Method::PATCH, ["hubs", hub]) => {
            let req: UpdateHub = read_json(body).await?;
            let Some(partitions) = req.partition_count else {
                return Err(Refusal(
                    StatusCode::BAD_REQUEST,
                    "InvalidBody",
                    "`partition_count` (the new, larger count) is required".into(),
                ));
            };
            let name = (*hub).to_owned();
            let grown = blocking(move || broker.grow_partitions(&name, partitions)).await?;
            Ok(respond(StatusCode::OK, hub_json(&grown)))
        }
        (&Method::DELETE, ["hubs", hub]) => {
            let name = (*hub).to_owned();
            blocking(move || broker.delete_hub(&name)).await?;
            Ok(respond(StatusCode::OK, json!({ "deleted": hub })))
        }
        (&Method::GET, ["hubs", hub, "consumergroups"]) => {
            let h = hub_or_404(ep, hub)?;
            let groups: Vec<Value> = h.consumer_groups().iter().map(|(g, o)| group_json(g, *o)).collect();
            Ok(respond(StatusCode::OK, Value::Array(groups)))
        }
        (&Method::GET, ["hubs", hub, "consumergroups", name]) => {
            let h = hub_or_404(ep, hub)?;
            let found = h.consumer_groups().into_iter().find(|(g, _)| g.name.eq_ignore_ascii_case(name));
            match found {
                Some((g, o)) => Ok(respond(StatusCode::OK, group_json(&g, o))),
                None => Err(Refusal(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("Consumer group '{name}' does not exist in Event Hub '{}'.", h.name),
                )),
            }
        }
        (&Method::PUT, ["hubs", hub, "consumergroups", name]) => {
            let _: serde_json::Map<String, Value> = read_json(body).await?;
            let (hub, name) = ((*hub).to_owned(), (*name).to_owned());
            let created = blocking(move || broker.create_consumer_group(&hub, &name)).await?;
            Ok(respond(StatusCode::CREATED, group_json(&created, Origin::Runtime)))
        }
        (&Method::DELETE, ["hubs", hub, "consumergroups", name]) => {
            let (hub, name) = ((*hub).to_owned(), (*name).to_owned());
            let deleted = name.clone();
            blocking(move || broker.delete_consumer_group(&hub, &name)).await?;
            Ok(respond(StatusCode::OK, json!({ "deleted": deleted })))
        }
        (&Method::GET, ["faults"]) => {
            let active: Vec<Value> = ep.broker.faults().active().iter().map(fault_json).collect();
            Ok(respond(StatusCode::OK, json!({ "active": active })))
        }
        (&Method::POST, ["faults"]) => {
            let req: InjectFault = read_json(body).await?;
            Ok(respond(StatusCode::CREATED, inject(ep, req)?))
        }
        (&Method::DELETE, ["faults"]) => {
            ep.broker.faults().end(None);
            Ok(respond(StatusCode::OK, json!({ "ended": "all" })))
        }
        (&Method::DELETE, ["faults", id]) => {
            let id: u64 = id
                .parse()
                .map_err(|_| Refusal(StatusCode::BAD_REQUEST, "InvalidFault", format!("'{id}' is not a fault id")))?;
            if ep.broker.faults().end(Some(id)) {
                Ok(respond(StatusCode::OK, json!({ "ended": id })))
            } else {
                Err(Refusal(StatusCode::NOT_FOUND, "NotFound", format!("no fault {id} is in force")))
            }
        }
        (_, ["faults"] | ["faults", _]) => Ok(method_not_allowed()),
        (_, ["hubs"] | ["hubs", _] | ["hubs", _, "consumergroups"] | ["hubs", _, "consumergroups", _]) => {
            Ok(method_not_allowed())
        }
        _ => Err(Refusal(StatusCode::NOT_FOUND, "NotFound", "no such resource".into())),
    }
}

fn metrics(ep: &Endpoint, registry: &ehub_broker_core::prometheus_client::registry::Registry) -> Response {
    ep.broker.refresh_metrics();
    let mut text = String::with_capacity(16 * 1024);
    if let Err(e) = ehub_broker_core::prometheus_client::encoding::text::encode(&mut text, registry) {
        return Refusal(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()).into_response();
    }
    let mut r = http::Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

/// The emulator's shape: `{"status":"healthy","message":"Service is healthy."}` or 503 with
/// `"unhealthy"`; plus each check's outcome.
async fn health(ep: &Arc<Endpoint>) -> Response {
    if ep.stopping.is_cancelled() {
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unhealthy", "message": "The broker is stopping." }),
        );
    }
    let broker = Arc::clone(&ep.broker);
    let storage =
        tokio::task::spawn_blocking(move || broker.storage_writable()).await.unwrap_or_else(|e| Err(e.to_string()));
    let checks = [("storage".to_owned(), storage)];
    let failed: Vec<String> =
        checks.iter().filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}"))).collect();
    let detail: serde_json::Map<String, Value> = checks
        .iter()
        .map(|(n, r)| (n.clone(), Value::String(r.as_ref().map_or_else(|e| e.clone(), |_| "ok".to_owned()))))
        .collect();
    if failed.is_empty() {
        respond(StatusCode::OK, json!({ "status": "healthy", "message": "Service is healthy.", "checks": detail }))
    } else {
        tracing::warn!(problems = %failed.join("; "), "health check failed");
        respond(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unhealthy", "message": failed.join("; "), "checks": detail }),
        )
    }
}
