//! What producers and consumers share: the connection (re-opened after a loss), CBS
//! authorization with refresh, management requests, and the retry loop.

use crate::amqp::AmqpConnection;
use crate::credential::{CbsToken, Credential};
use crate::error::{Error, ErrorKind, Result};
use crate::options::{ClientOptions, Endpoint};
use ehub_amqp_codec::{Body, Map, Message, Timestamp, Value};
use ehub_model::nodes;
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The option setters both client builders share (the official crate's builder shape).
macro_rules! builder_options {
    () => {
        /// Replaces all options.
        pub fn with_options(mut self, options: crate::ClientOptions) -> Self {
            self.options = options;
            self
        }

        /// Sets the retry policy.
        pub fn with_retry_options(mut self, retry: crate::RetryOptions) -> Self {
            self.options.retry = retry;
            self
        }

        /// Connects to this address instead of the namespace (see
        /// [`crate::ClientOptions::custom_endpoint`]).
        pub fn with_custom_endpoint(mut self, endpoint: impl Into<String>) -> Self {
            self.options.custom_endpoint = Some(endpoint.into());
            self
        }

        /// Sets the user-agent prefix (the official crate's `application_id`).
        pub fn with_application_id(mut self, id: impl Into<String>) -> Self {
            self.options.user_agent = Some(id.into());
            self
        }
    };
}
pub(crate) use builder_options;

/// A connection plus the audiences authorized on it.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub amqp: AmqpConnection,
    authorized: Arc<Mutex<HashSet<String>>>,
}

#[derive(Debug)]
pub(crate) struct ClientCore {
    pub endpoint: Endpoint,
    pub hub: String,
    pub credential: Credential,
    pub options: ClientOptions,
    conn: tokio::sync::Mutex<Option<Conn>>,
    closed: AtomicBool,
}

/// Parsed connection-string settings a builder needs.
pub(crate) struct FromConnectionString {
    pub namespace: String,
    pub port: Option<u16>,
    pub hub: String,
    pub credential: Credential,
    pub emulator: bool,
}

pub(crate) fn parse_connection_string(cs: &str, hub: Option<&str>) -> Result<FromConnectionString> {
    let parsed = ehub_model::ConnectionString::parse(cs)?;
    let hub = match (hub, parsed.entity_path.as_deref()) {
        (Some(h), Some(e)) if !h.eq_ignore_ascii_case(e) => {
            return Err(Error::invalid(format!("the hub '{h}' differs from the connection string's EntityPath '{e}'")))
        }
        (Some(h), _) => h.to_owned(),
        (None, Some(e)) => e.to_owned(),
        (None, None) => return Err(Error::invalid("no hub name: pass one or add EntityPath to the connection string")),
    };
    let credential = match (&parsed.shared_access_signature, &parsed.shared_access_key_name, &parsed.shared_access_key)
    {
        (Some(sig), _, _) => crate::SasTokenCredential::new(sig.clone())?.into(),
        (None, Some(name), Some(key)) => crate::SasKeyCredential::new(name.clone(), key.clone()).into(),
        _ => {
            return Err(Error::invalid(
                "the connection string needs SharedAccessKeyName and SharedAccessKey, or SharedAccessSignature",
            ))
        }
    };
    Ok(FromConnectionString {
        namespace: parsed.host,
        port: parsed.port,
        hub,
        credential,
        emulator: parsed.use_development_emulator,
    })
}

impl ClientCore {
    /// A core from a connection string: `UseDevelopmentEmulator=true` selects plain AMQP.
    pub(crate) fn from_connection_string(mut options: ClientOptions, cs: &str, hub: Option<&str>) -> Result<Self> {
        let cs = parse_connection_string(cs, hub)?;
        if cs.emulator {
            options.transport = crate::options::TransportType::Amqp;
        }
        ClientCore::new(&cs.namespace, cs.port, &cs.hub, cs.credential, options)
    }

    pub(crate) fn new(
        namespace: &str,
        port: Option<u16>,
        hub: &str,
        credential: Credential,
        options: ClientOptions,
    ) -> Result<Self> {
        if hub.is_empty() {
            return Err(Error::invalid("the hub name is empty"));
        }
        let endpoint = Endpoint::resolve(namespace, port, &options)?;
        Ok(ClientCore {
            endpoint,
            hub: hub.to_owned(),
            credential,
            options,
            conn: tokio::sync::Mutex::new(None),
            closed: AtomicBool::new(false),
        })
    }

    /// `amqps://<namespace>/<path>`: addresses and audiences, as the official SDKs send them.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("amqps://{}/{}", self.endpoint.namespace, path)
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::client_closed());
        }
        Ok(())
    }

    /// The live connection, opening a new one when there is none or the last one failed.
    pub(crate) async fn connection(&self) -> Result<Conn> {
        self.check_open()?;
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.amqp.is_closed() {
                return Ok(c.clone());
            }
        }
        let amqp = AmqpConnection::connect(&self.endpoint, &self.options).await?;
        let c = Conn { amqp, authorized: Arc::default() };
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Forgets `conn` if it is still the current connection (after a failure on it).
    pub(crate) async fn discard(&self, conn: &Conn) {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_some_and(|c| c.amqp.id == conn.amqp.id) {
            if let Some(c) = guard.take() {
                c.amqp.close().await;
            }
        }
    }

    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(c) = self.conn.lock().await.take() {
            c.amqp.close().await;
        }
    }

    /// Runs `attach` after authorizing `audience`. When the token was already in place and the
    /// service still refuses the link as unauthorized (its copy of the token lapsed: a token
    /// revoked, a broker that forgot it), the token is put again and `attach` tried once more.
    pub(crate) async fn attach_authorized<T, F, Fut>(&self, conn: &Conn, audience: &str, attach: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let cached = conn.authorized.lock().expect("poisoned").contains(audience);
        self.authorize(conn, audience).await?;
        match attach().await {
            Err(e) if cached && e.kind() == crate::ErrorKind::Authentication => {
                tracing::debug!(connection_id = conn.amqp.id, audience, error = %e, "refused with a token in place: putting it again");
                conn.authorized.lock().expect("poisoned").remove(audience);
                self.authorize(conn, audience).await?;
                attach().await
            }
            other => other,
        }
    }

    /// Puts a token for `audience` on `conn` unless one is in place, and keeps it fresh.
    pub(crate) async fn authorize(&self, conn: &Conn, audience: &str) -> Result<()> {
        if conn.authorized.lock().expect("poisoned").contains(audience) {
            return Ok(());
        }
        let token = self.token(audience).await?;
        put_token(&conn.amqp, audience, &token, self.options.auth_timeout).await?;
        conn.authorized.lock().expect("poisoned").insert(audience.to_owned());
        tracing::debug!(connection_id = conn.amqp.id, audience, expires_at = token.expires_at, "token put");
        if token.refreshable {
            tokio::spawn(refresh(
                conn.amqp.clone(),
                self.credential.clone(),
                audience.to_owned(),
                token.expires_at,
                self.options.auth_timeout,
            ));
        }
        Ok(())
    }

    async fn token(&self, audience: &str) -> Result<CbsToken> {
        tokio::time::timeout(self.options.auth_timeout, self.credential.token(audience))
            .await
            .map_err(|_| Error::timeout("getting a token", self.options.auth_timeout))?
    }

    /// Hub properties, for both clients.
    pub(crate) async fn eventhub_properties(&self) -> Result<crate::EventHubProperties> {
        crate::EventHubProperties::from_map(&self.management_read(None).await?)
    }

    /// Properties of one partition, for both clients.
    pub(crate) async fn partition_properties(&self, partition_id: &str) -> Result<crate::PartitionProperties> {
        crate::PartitionProperties::from_map(&self.management_read(Some(partition_id)).await?)
    }

    /// A management READ of the hub or of one partition (reference §8). Returns the body map.
    async fn management_read(&self, partition: Option<&str>) -> Result<Map> {
        self.retry("management request", || async {
            let conn = self.connection().await?;
            let audience = self.url(&format!("{}/$management", self.hub));
            let r = async {
                self.authorize(&conn, &audience).await?;
                let token = self.token(&audience).await?;
                let mut app: Map = vec![
                    (Value::from("operation"), Value::from("READ")),
                    (Value::from("name"), Value::from(self.hub.as_str())),
                    (
                        Value::from("type"),
                        Value::from(if partition.is_some() { nodes::PARTITION_TYPE } else { nodes::EVENTHUB_TYPE }),
                    ),
                    (Value::from("security_token"), Value::String(token.token)),
                ];
                if let Some(p) = partition {
                    app.push((Value::from("partition"), Value::from(p)));
                }
                let mut m = Message::with_value(Value::Null);
                m.application_properties = Some(app);
                let resp = self.with_timeout("management request", conn.amqp.request(nodes::MANAGEMENT, m)).await?;
                let (status, desc, cond) = status_of(&resp);
                if status == 401 {
                    // The service no longer holds our token (it lapsed there, or was revoked):
                    // the next attempt puts it again instead of trusting the cache.
                    conn.authorized.lock().expect("poisoned").remove(&audience);
                }
                if !(200..300).contains(&status) {
                    return Err(Error::from_status(status, desc, cond, "management request"));
                }
                match resp.body {
                    Body::Value(Value::Map(m)) => Ok(m),
                    other => {
                        Err(Error::new(ErrorKind::EventHub, format!("unexpected management response body: {other:?}")))
                    }
                }
            }
            .await;
            self.settle_failure(&conn, r).await
        })
        .await
    }

    /// Bounds one attempt of an operation by the operation timeout.
    pub(crate) async fn with_timeout<T>(&self, what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.options.operation_timeout, f)
            .await
            .map_err(|_| Error::timeout(what, self.options.operation_timeout))?
    }

    /// After a failed attempt: drop the connection when the failure means it is gone.
    pub(crate) async fn settle_failure<T>(&self, conn: &Conn, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if matches!(e.kind(), ErrorKind::ConnectionLost | ErrorKind::OperationTimeout) || conn.amqp.is_closed() {
                tracing::debug!(connection_id = conn.amqp.id, error = %e, "dropping the connection after a failure");
                self.discard(conn).await;
            }
        }
        r
    }

    /// Runs `op` until it succeeds, fails for good, or the retries are used up.
    pub(crate) async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut retried = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                // ClientClosed while the client is open: another operation dropped the shared
                // connection after a failure; this one gets a new connection on the next try.
                Err(e)
                    if (e.is_transient() || e.kind() == ErrorKind::ClientClosed)
                        && retried < self.options.retry.max_retries
                        && !self.closed.load(Ordering::Acquire) =>
                {
                    let delay = self.options.retry.delay(retried);
                    tracing::info!(operation = what, attempt = retried + 1, delay_ms = delay.as_millis() as u64, error = %e, "retrying");
                    tokio::time::sleep(delay).await;
                    retried += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads `status-code`, `status-description` and `error-condition` of a response.
pub(crate) fn status_of(m: &Message) -> (i32, Option<String>, Option<String>) {
    let app = m.application_properties.as_deref().unwrap_or(&[]);
    let get = |a: &str, b: &str| ehub_amqp_codec::map_get(app, a).or_else(|| ehub_amqp_codec::map_get(app, b));
    let status = get("status-code", "statusCode").and_then(|v| v.as_i64()).unwrap_or(0) as i32;
    let desc = get("status-description", "statusDescription").and_then(|v| v.as_text()).map(str::to_owned);
    let cond = get("error-condition", "errorCondition").and_then(|v| v.as_text()).map(str::to_owned);
    (status, desc, cond)
}

async fn put_token(conn: &AmqpConnection, audience: &str, token: &CbsToken, timeout: Duration) -> Result<()> {
    let mut m = Message::with_value(Value::String(token.token.clone()));
    m.application_properties = Some(vec![
        (Value::from("operation"), Value::from("put-token")),
        (Value::from("type"), Value::from(token.token_type)),
        (Value::from("name"), Value::from(audience)),
        (Value::from("expiration"), Value::Timestamp(Timestamp(token.expires_at as i64 * 1000))),
    ]);
    let resp = tokio::time::timeout(timeout, conn.request(nodes::CBS, m))
        .await
        .map_err(|_| Error::timeout("put-token", timeout))??;
    let (status, desc, cond) = status_of(&resp);
    if (200..300).contains(&status) {
        Ok(())
    } else {
        let mut e = Error::from_status(status, desc, cond, &format!("put-token for {audience}"));
        if e.kind() == ErrorKind::EventHub {
            e = Error::new(ErrorKind::Authentication, e.to_string()).with_source(e);
        }
        Err(e)
    }
}

/// Re-puts the token for `audience` when a tenth of its lifetime is left, until the
/// connection ends.
async fn refresh(
    conn: AmqpConnection,
    credential: Credential,
    audience: String,
    mut expires_at: u64,
    timeout: Duration,
) {
    let now_ms = || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    };
    let mut put_at_ms = now_ms();
    loop {
        // Token expiries are whole seconds; measure the lifetime left in milliseconds so
        // short tokens are renewed before they lapse.
        let lifetime_ms = (expires_at * 1000).saturating_sub(put_at_ms).max(100);
        let wait = Duration::from_millis(lifetime_ms * 9 / 10);
        tokio::select! {
            _ = conn.closed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let attempt = async {
            let token = tokio::time::timeout(timeout, credential.token(&audience))
                .await
                .map_err(|_| Error::timeout("getting a token", timeout))??;
            put_token(&conn, &audience, &token, timeout).await?;
            Ok::<_, Error>(token.expires_at)
        };
        match attempt.await {
            Ok(exp) => {
                tracing::debug!(connection_id = conn.id, audience = %audience, expires_at = exp, "token refreshed");
                put_at_ms = now_ms();
                expires_at = exp;
            }
            Err(e) if conn.is_closed() => {
                tracing::debug!(connection_id = conn.id, error = %e, "token refresh stopped: connection closed");
                return;
            }
            Err(e) => {
                tracing::warn!(connection_id = conn.id, audience = %audience, error = %e, "token refresh failed; retrying");
                // Try again in about ten seconds.
                put_at_ms = now_ms();
                expires_at = put_at_ms / 1000 + 11;
            }
        }
    }
}
