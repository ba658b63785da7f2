//! One Kafka connection: one task owns the socket, reads size-prefixed requests, and writes
//! responses strictly in request order. A request that waits (a produce for its fsync, a
//! long-polling fetch, a join for its rebalance) becomes a future in an ordered queue, so the
//! client can pipeline; at most [`MAX_IN_FLIGHT`] wait at once before reading pauses.

use crate::codec::{Decoded, Produced};
use crate::groups::{code as gcode, JoinRequest};
use crate::mapping::event_to_record;
use crate::offsets::Committed;
use crate::producers::Check;
use crate::versions::ADVERTISED;
use crate::Endpoint;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use ehub_broker_core::{covers, ConnectionSlot, Grant, Hub, TokenType};
use ehub_partition_log::{Partition, StartPosition};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Requests waiting for their answer, per connection, before reading pauses.
const MAX_IN_FLIGHT: usize = 32;

/// Kafka error codes.
mod err {
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    pub const ILLEGAL_SASL_STATE: i16 = 34;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    pub const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
}

/// The service's limit on offset-commit metadata.
const MAX_COMMIT_METADATA: usize = 1024;

type Reply = BoxFuture<'static, Option<Bytes>>;

struct Conn {
    ep: Arc<Endpoint>,
    peer: SocketAddr,
    /// Where this client reached us: advertised unless configured otherwise.
    local: SocketAddr,
    /// Whether it came through the TLS listener (SASL_SSL), which has its own advertised address.
    tls: bool,
    slot: ConnectionSlot,
    grant: Option<Grant>,
    /// A v0 SaslHandshake: the next frame is a bare PLAIN token.
    raw_sasl_next: bool,
    handshake_done: bool,
    /// Close after the replies queued so far (a failed authentication).
    closing: bool,
}

/// Serves one connection until the client leaves, breaks the protocol, or `stop`; over TLS
/// (SASL_SSL) when `tls` is given, after the handshake.
pub(crate) async fn run(
    ep: Arc<Endpoint>,
    sock: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
    stop: CancellationToken,
    tls: Option<TlsAcceptor>,
) {
    let local = sock.local_addr().unwrap_or(peer);
    let deadline = tokio::time::Instant::now() + ep.broker.config().handshake_timeout;
    let c = Conn {
        ep: Arc::clone(&ep),
        peer,
        local,
        tls: tls.is_some(),
        slot,
        grant: None,
        raw_sasl_next: false,
        handshake_done: false,
        closing: false,
    };
    ep.metrics.connections.inc();
    let reason = match tls {
        None => {
            let (rd, wr) = sock.into_split();
            pump(c, rd, wr, deadline, &stop).await
        }
        Some(acceptor) => {
            // The TLS handshake counts against the same deadline as authentication.
            let accepted = tokio::select! {
                _ = stop.cancelled() => Err("broker stopping"),
                r = tokio::time::timeout_at(deadline, acceptor.accept(sock)) => match r {
                    Ok(Ok(stream)) => Ok(stream),
                    Ok(Err(e)) => {
                        tracing::info!(peer = %peer, error = %e, "Kafka: TLS handshake failed");
                        ep.metrics.refuse("tls-handshake");
                        Err("TLS handshake failed")
                    }
                    Err(_) => {
                        ep.metrics.refuse("handshake-timeout");
                        Err("no TLS handshake within the handshake timeout")
                    }
                },
            };
            match accepted {
                Ok(stream) => {
                    let (rd, wr) = tokio::io::split(stream);
                    pump(c, rd, wr, deadline, &stop).await
                }
                Err(why) => why,
            }
        }
    };
    tracing::debug!(peer = %peer, reason, "Kafka connection ended");
    ep.metrics.connections.dec();
}

/// Reads requests and writes their replies, in order, until the connection ends; returns why.
async fn pump<R, W>(
    mut c: Conn,
    mut rd: R,
    mut wr: W,
    deadline: tokio::time::Instant,
    stop: &CancellationToken,
) -> &'static str
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let ep = Arc::clone(&c.ep);
    let peer = c.peer;
    let mut buf = BytesMut::with_capacity(4096);
    let mut pending: FuturesOrdered<Reply> = FuturesOrdered::new();
    let max = ep.config.max_request_size;
    loop {
        // Take every whole request already read.
        while pending.len() < MAX_IN_FLIGHT && !c.closing {
            let Some(len) = frame_len(&buf) else { break };
            if len > max {
                tracing::warn!(peer = %peer, len, max, "Kafka: request larger than the limit; closing the connection");
                ep.metrics.refuse("request-too-large");
                c.closing = true;
                break;
            }
            if buf.len() < 4 + len {
                buf.reserve(4 + len - buf.len());
                break;
            }
            buf.advance(4);
            let frame = buf.split_to(len).freeze();
            match c.handle(frame) {
                Ok(Some(reply)) => pending.push_back(reply),
                Ok(None) => {}
                Err(why) => {
                    tracing::warn!(peer = %peer, reason = why, "Kafka: closing the connection");
                    ep.metrics.refuse("protocol");
                    c.closing = true;
                }
            }
        }
        if c.closing && pending.is_empty() {
            return "closed by the broker";
        }
        let can_read = pending.len() < MAX_IN_FLIGHT && !c.closing;
        // Within a large request, read only up to its end: bytes of the next request read
        // into the same allocation would be copied out of it once this one is split off.
        let rest = frame_len(&buf).map_or(0, |len| (4 + len).saturating_sub(buf.len()));
        if buf.capacity() == buf.len() && rest == 0 {
            buf.reserve(4096);
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return "broker stopping",
            _ = tokio::time::sleep_until(deadline), if c.grant.is_none() => {
                ep.metrics.refuse("handshake-timeout");
                return "no authentication within the handshake timeout";
            }
            Some(reply) = pending.next(), if !pending.is_empty() => {
                if let Some(bytes) = reply {
                    // flush: TLS may hold the tail of a record back (a no-op on plain TCP).
                    let written = async {
                        wr.write_all(&bytes).await?;
                        wr.flush().await
                    };
                    if let Err(e) = written.await {
                        tracing::debug!(peer = %peer, error = %e, "Kafka: write failed");
                        return "write failed";
                    }
                }
            }
            r = async {
                if rest > 64 * 1024 {
                    (&mut rd).take(rest as u64).read_buf(&mut buf).await
                } else {
                    rd.read_buf(&mut buf).await
                }
            }, if can_read => match r {
                Ok(0) => return "closed by the client",
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "Kafka: read failed");
                    return "read failed";
                }
            },
        }
    }
}

/// The length a request frame's prefix announces, once its 4 bytes are there.
fn frame_len(buf: &[u8]) -> Option<usize> {
    buf.get(..4).map(|h| u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize)
}

/// A topic's partition by Kafka index, or the topic's error.
fn partition_of(hub: &Result<Arc<Hub>, i16>, index: i32) -> Result<Arc<Partition>, i16> {
    let hub = hub.as_ref().map_err(|c| *c)?;
    usize::try_from(index).ok().and_then(|i| hub.partitions.get(i).cloned()).ok_or(err::UNKNOWN_TOPIC_OR_PARTITION)
}

fn ready(b: Option<Bytes>) -> Reply {
    Box::pin(std::future::ready(b))
}

/// A whole response frame: size, header, body.
fn frame(api: ApiKey, version: i16, correlation_id: i32, body: ResponseKind) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(256);
    out.put_u32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    if let Err(e) = header.encode(&mut out, api.response_header_version(version)) {
        tracing::error!(api = ?api, version, error = %e, "Kafka: encoding a response header failed");
        return None;
    }
    if let Err(e) = body.encode(&mut out, version) {
        tracing::error!(api = ?api, version, error = %e, "Kafka: encoding a response failed");
        return None;
    }
    let len = (out.len() - 4) as u32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    Some(out.freeze())
}

fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "produce",
        ApiKey::Fetch => "fetch",
        ApiKey::ListOffsets => "list_offsets",
        ApiKey::Metadata => "metadata",
        ApiKey::OffsetCommit => "offset_commit",
        ApiKey::OffsetFetch => "offset_fetch",
        ApiKey::FindCoordinator => "find_coordinator",
        ApiKey::JoinGroup => "join_group",
        ApiKey::Heartbeat => "heartbeat",
        ApiKey::LeaveGroup => "leave_group",
        ApiKey::SyncGroup => "sync_group",
        ApiKey::DescribeGroups => "describe_groups",
        ApiKey::ListGroups => "list_groups",
        ApiKey::SaslHandshake => "sasl_handshake",
        ApiKey::ApiVersions => "api_versions",
        ApiKey::InitProducerId => "init_producer_id",
        ApiKey::SaslAuthenticate => "sasl_authenticate",
        _ => "other",
    }
}

fn name(s: &StrBytes) -> String {
    s.as_str().to_owned()
}

fn topic(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// A topic as this connection may use it.
enum Access {
    Ok(Arc<Hub>),
    Unknown,
    Denied,
}

impl Conn {
    fn hub(&self, name: &str, send: bool) -> Access {
        let Some(g) = &self.grant else { return Access::Denied };
        let Some(hub) = self.ep.broker.hub(name).filter(|h| !h.is_deleted()) else { return Access::Unknown };
        let allowed = if send { g.rights.can_send() } else { g.rights.can_listen() };
        if !covers(&g.path, &hub.name) || !allowed {
            return Access::Denied;
        }
        Access::Ok(hub)
    }

    /// [`Conn::hub`] with Kafka's error codes for an unknown or forbidden topic.
    fn hub_or_error(&self, name: &str, send: bool) -> Result<Arc<Hub>, i16> {
        match self.hub(name, send) {
            Access::Ok(h) => Ok(h),
            Access::Unknown => Err(err::UNKNOWN_TOPIC_OR_PARTITION),
            Access::Denied => Err(err::TOPIC_AUTHORIZATION_FAILED),
        }
    }

    fn advertised(&self) -> (String, i32) {
        let configured = if self.tls { &self.ep.config.advertised_tls } else { &self.ep.config.advertised };
        match configured {
            Some((h, p)) => (h.clone(), i32::from(*p)),
            None => (self.local.ip().to_string(), i32::from(self.local.port())),
        }
    }

    /// Handles one request frame: `Ok(None)` when no response is due (acks=0), `Err` to close.
    fn handle(&mut self, frame: Bytes) -> Result<Option<Reply>, &'static str> {
        if self.raw_sasl_next {
            // After a v0 handshake the token comes bare, and success is an empty frame.
            self.raw_sasl_next = false;
            return match self.authenticate(&frame) {
                Ok(()) => Ok(Some(ready(Some(Bytes::from_static(&[0, 0, 0, 0]))))),
                Err(_) => Err("SASL authentication failed"),
            };
        }
        // Before authentication only the handshake is even decoded.
        if self.grant.is_none() && frame.len() >= 2 {
            let key = i16::from_be_bytes([frame[0], frame[1]]);
            let handshake = [ApiKey::ApiVersions, ApiKey::SaslHandshake, ApiKey::SaslAuthenticate];
            if !handshake.iter().any(|k| *k as i16 == key) {
                return Err("a request before SASL authentication");
            }
        }
        let (api, version, header, request) = match crate::codec::decode_request(frame) {
            Ok(Decoded::ApiVersions { version, correlation_id }) => {
                self.ep.metrics.request("api_versions");
                return Ok(Some(ready(self.api_versions(version, correlation_id))));
            }
            Ok(Decoded::Request { api, version, header, request }) => (api, version, header, *request),
            Err(why) => {
                tracing::warn!(peer = %self.peer, reason = why, "Kafka: a request this broker cannot take");
                return Err(why);
            }
        };
        self.ep.metrics.request(api_name(api));
        let correlation_id = header.correlation_id;
        let respond = move |body: ResponseKind| frame_of(api, version, correlation_id, body);
        let client_id = header.client_id.as_ref().map(name).unwrap_or_default();
        Ok(match request {
            RequestKind::SaslHandshake(r) => {
                let plain = r.mechanism.as_str() == "PLAIN";
                let mut resp = SaslHandshakeResponse::default().with_mechanisms(vec![text("PLAIN")]);
                if !plain {
                    resp.error_code = err::UNSUPPORTED_SASL_MECHANISM;
                    self.closing = true;
                } else if self.grant.is_some() || self.handshake_done {
                    resp.error_code = err::ILLEGAL_SASL_STATE;
                    self.closing = true;
                } else {
                    self.handshake_done = true;
                    self.raw_sasl_next = version == 0;
                }
                Some(ready(respond(ResponseKind::SaslHandshake(resp))))
            }
            RequestKind::SaslAuthenticate(r) => {
                let mut resp = SaslAuthenticateResponse::default();
                if !self.handshake_done || self.grant.is_some() {
                    resp.error_code = err::ILLEGAL_SASL_STATE;
                    resp.error_message = Some(text("SaslAuthenticate without a SaslHandshake"));
                    self.closing = true;
                } else if let Err(why) = self.authenticate(&r.auth_bytes) {
                    resp.error_code = err::SASL_AUTHENTICATION_FAILED;
                    resp.error_message = Some(StrBytes::from_string(why));
                    self.closing = true;
                }
                Some(ready(respond(ResponseKind::SaslAuthenticate(resp))))
            }
            RequestKind::Metadata(r) => Some(ready(respond(ResponseKind::Metadata(self.metadata(r, version))))),
            RequestKind::Produce(r) => self.produce(r, respond),
            RequestKind::Fetch(r) => Some(self.fetch(r, respond)),
            RequestKind::ListOffsets(r) => Some(self.list_offsets(r, respond)),
            RequestKind::FindCoordinator(r) => {
                Some(ready(respond(ResponseKind::FindCoordinator(self.find_coordinator(r, version)))))
            }
            RequestKind::OffsetCommit(r) => Some(self.offset_commit(r, respond)),
            RequestKind::OffsetFetch(r) => {
                Some(ready(respond(ResponseKind::OffsetFetch(self.offset_fetch(r, version)))))
            }
            RequestKind::InitProducerId(r) => Some(self.init_producer_id(r, respond)),
            RequestKind::JoinGroup(r) => Some(self.join_group(r, version, client_id, respond)),
            RequestKind::SyncGroup(r) => Some(self.sync_group(r, respond)),
            RequestKind::Heartbeat(r) => {
                let code = self.ep.groups.heartbeat(r.group_id.as_str(), r.generation_id, r.member_id.as_str());
                Some(ready(respond(ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code)))))
            }
            RequestKind::LeaveGroup(r) => Some(ready(respond(ResponseKind::LeaveGroup(self.leave_group(r, version))))),
            RequestKind::DescribeGroups(r) => {
                Some(ready(respond(ResponseKind::DescribeGroups(self.describe_groups(r)))))
            }
            RequestKind::ListGroups(_) => {
                // Groups with members, and those known only by their committed offsets.
                let mut listed = self.ep.groups.list();
                for g in self.ep.offsets.groups() {
                    if !listed.iter().any(|(n, _, _)| *n == g) {
                        listed.push((g, "consumer".to_owned(), "Empty"));
                    }
                }
                listed.sort();
                let groups = listed
                    .into_iter()
                    .map(|(g, pt, state)| {
                        ListedGroup::default()
                            .with_group_id(GroupId(text(&g)))
                            .with_protocol_type(text(&pt))
                            .with_group_state(text(state))
                    })
                    .collect();
                Some(ready(respond(ResponseKind::ListGroups(ListGroupsResponse::default().with_groups(groups)))))
            }
            _ => return Err("an API this broker does not serve"),
        })
    }

    /// Checks a SASL PLAIN token: `[authzid] NUL $ConnectionString NUL <connection string>`.
    fn authenticate(&mut self, token: &[u8]) -> Result<(), String> {
        const REFUSED: &str = "Invalid SASL credentials: the user must be $ConnectionString and the password a connection string with SharedAccessKeyName and SharedAccessKey (or SharedAccessSignature)";
        let mut parts = token.split(|b| *b == 0);
        let (_authz, user, password) = (parts.next(), parts.next(), parts.next());
        let (Some(user), Some(password)) = (user, password) else { return Err(REFUSED.into()) };
        if user != b"$ConnectionString" {
            return Err(REFUSED.into());
        }
        let password = std::str::from_utf8(password).map_err(|_| REFUSED.to_string())?;
        let cs = ehub_model::ConnectionString::parse(password).map_err(|_| REFUSED.to_string())?;
        let resource = format!("sb://{}/{}", cs.host, cs.entity_path.as_deref().unwrap_or(""));
        let token = match (&cs.shared_access_key_name, &cs.shared_access_key, &cs.shared_access_signature) {
            (Some(name), Some(key), _) => {
                ehub_model::generate_sas_token(&resource, name, key, ehub_broker_core::now_secs() + 3600)
            }
            (_, _, Some(sas)) => sas.clone(),
            _ => return Err(REFUSED.into()),
        };
        match self.ep.broker.authorize_from(self.peer.ip(), TokenType::Sas, &token, &resource) {
            Ok(grant) => {
                tracing::debug!(peer = %self.peer, entity = %grant.path, "Kafka client authenticated");
                self.grant = Some(grant);
                self.slot.opened();
                Ok(())
            }
            Err(why) => {
                tracing::info!(peer = %self.peer, reason = %why, "Kafka: SASL authentication refused");
                self.ep.metrics.refuse("authentication");
                Err(format!("Authentication failed: {why}"))
            }
        }
    }

    fn api_versions(&self, version: i16, correlation_id: i32) -> Option<Bytes> {
        let keys = ADVERTISED
            .iter()
            .map(|&(k, lo, hi)| ApiVersion::default().with_api_key(k as i16).with_min_version(lo).with_max_version(hi))
            .collect();
        let mut resp = ApiVersionsResponse::default().with_api_keys(keys);
        // An unknown version is answered in the v0 form with our range (KIP-511), so the
        // client retries with one it has in common.
        let version = if !(0..=4).contains(&version) {
            resp.error_code = err::UNSUPPORTED_VERSION;
            0
        } else {
            version
        };
        frame(ApiKey::ApiVersions, version, correlation_id, ResponseKind::ApiVersions(resp))
    }

    fn metadata(&self, r: MetadataRequest, version: i16) -> MetadataResponse {
        let (host, port) = self.advertised();
        let names: Vec<String> = match r.topics {
            Some(t) if !t.is_empty() || version > 0 => {
                t.iter().filter_map(|t| t.name.as_ref().map(|n| name(n))).collect()
            }
            _ => self
                .ep
                .broker
                .hubs()
                .iter()
                .filter(|h| {
                    matches!(self.hub(&h.name, false), Access::Ok(_))
                        || matches!(self.hub(&h.name, true), Access::Ok(_))
                })
                .map(|h| h.name.clone())
                .collect(),
        };
        let topics = names
            .iter()
            .map(|n| {
                let access = match self.hub(n, false) {
                    Access::Denied => self.hub(n, true),
                    a => a,
                };
                let t = MetadataResponseTopic::default().with_name(Some(topic(n)));
                match access {
                    Access::Unknown => t.with_error_code(err::UNKNOWN_TOPIC_OR_PARTITION),
                    Access::Denied => t.with_error_code(err::TOPIC_AUTHORIZATION_FAILED),
                    Access::Ok(hub) => t.with_partitions(
                        (0..hub.partitions.len() as i32)
                            .map(|i| {
                                MetadataResponsePartition::default()
                                    .with_partition_index(i)
                                    .with_leader_id(BrokerId(0))
                                    .with_leader_epoch(-1)
                                    .with_replica_nodes(vec![BrokerId(0)])
                                    .with_isr_nodes(vec![BrokerId(0)])
                            })
                            .collect(),
                    ),
                }
            })
            .collect();
        MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(0))
                .with_host(text(&host))
                .with_port(port)])
            .with_cluster_id(Some(text("ehub")))
            .with_controller_id(BrokerId(0))
            .with_topics(topics)
    }

    fn produce(
        &mut self,
        r: ProduceRequest,
        respond: impl FnOnce(ResponseKind) -> Option<Bytes> + Send + 'static,
    ) -> Option<Reply> {
        type Pending = (i32, Result<PendingAppend, i16>);
        let max_size = self.ep.broker.config().max_message_size as usize;
        let acks = r.acks;
        let timeout = Duration::from_millis(r.timeout_ms.max(0) as u64);
        let mut topics: Vec<(TopicName, Vec<Pending>)> = Vec::new();
        for t in r.topic_data {
            let hub = self.hub_or_error(t.name.as_str(), true);
            let parts = t
                .partition_data
                .into_iter()
                .map(|p| {
                    let outcome = hub.clone().and_then(|hub| self.append(&hub, p.index, p.records, max_size));
                    (p.index, outcome)
                })
                .collect();
            topics.push((t.name, parts));
        }
        if acks == 0 {
            return None;
        }
        Some(Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout.max(Duration::from_millis(1));
            let mut responses = Vec::with_capacity(topics.len());
            for (name, parts) in topics {
                let mut out = Vec::with_capacity(parts.len());
                for (index, p) in parts {
                    let mut resp = PartitionProduceResponse::default().with_index(index);
                    match p {
                        Err(code) => resp.error_code = code,
                        Ok(pending) => match tokio::time::timeout_at(deadline, pending.wait()).await {
                            Ok(Ok((base, start))) => {
                                resp.base_offset = base;
                                resp.log_start_offset = start;
                            }
                            Ok(Err(code)) => resp.error_code = code,
                            Err(_) => resp.error_code = err::REQUEST_TIMED_OUT,
                        },
                    }
                    out.push(resp);
                }
                responses.push(TopicProduceResponse::default().with_name(name).with_partition_responses(out));
            }
            respond(ResponseKind::Produce(ProduceResponse::default().with_responses(responses)))
        }))
    }

    /// Decodes a partition's record batches and appends their records as events.
    fn append(
        &self,
        hub: &Arc<Hub>,
        index: i32,
        records: Option<Bytes>,
        max_size: usize,
    ) -> Result<PendingAppend, i16> {
        let i =
            usize::try_from(index).ok().filter(|i| *i < hub.partitions.len()).ok_or(err::UNKNOWN_TOPIC_OR_PARTITION)?;
        let Produced { events, bytes: size, producer } =
            crate::codec::decode_records(records, &|p| self.ep.producers.mark(&hub.name, index, p)).inspect_err(
                |_| {
                    tracing::info!(peer = %self.peer, entity = %hub.name, "Kafka: a produce with undecodable records");
                },
            )?;
        if size > max_size {
            return Err(err::MESSAGE_TOO_LARGE);
        }
        if events.is_empty() {
            let p = &hub.partitions[i];
            let next = p.committed_seq();
            return Ok(PendingAppend::Done(Ok((next, p.info().begin_sequence_number))));
        }
        if self.ep.broker.faults().is_server_busy(&hub.name) {
            return Err(err::THROTTLING_QUOTA_EXCEEDED);
        }
        let hub_name: Arc<str> = Arc::from(hub.name.as_str());
        let outcome = match producer {
            Some((pid, epoch, first, last)) => match self.ep.producers.check(pid, epoch, &hub_name, index, first, last)
            {
                Check::Refuse(code) => return Err(code),
                Check::Duplicate(rx) => {
                    let p = Arc::clone(&hub.partitions[i]);
                    return Ok(PendingAppend::Duplicate(rx, p));
                }
                Check::Append(tx) => Some((tx, pid, first, last)),
            },
            None => None,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (ep, partition) = (Arc::clone(&self.ep), Arc::clone(&hub.partitions[i]));
        self.ep.broker.append_to(
            hub,
            i,
            events,
            Box::new(move |r| {
                let r = match r {
                    Ok(a) => Ok(a.first_sequence_number),
                    Err(e) => {
                        tracing::warn!(error = %e, "Kafka: append failed");
                        Err(err::KAFKA_STORAGE_ERROR)
                    }
                };
                if let Some((watch, pid, first, last)) = outcome {
                    if r.is_err() {
                        ep.producers.failed(pid, &hub_name, index, first, last);
                    }
                    watch.send_replace(Some(r));
                }
                let _ = tx.send(r);
            }),
        );
        Ok(PendingAppend::Appending(rx, partition))
    }

    fn fetch(&self, r: FetchRequest, respond: impl FnOnce(ResponseKind) -> Option<Bytes> + Send + 'static) -> Reply {
        let mut wanted = Vec::new();
        for t in r.topics {
            let hub = self.hub_or_error(t.topic.as_str(), false);
            let parts: Vec<FetchPart> = t
                .partitions
                .iter()
                .map(|p| FetchPart {
                    index: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes.max(0) as usize,
                    partition: partition_of(&hub, p.partition),
                    counters: hub.as_ref().ok().and_then(|h| h.counters.get(p.partition.max(0) as usize).cloned()),
                })
                .collect();
            wanted.push((t.topic, parts));
        }
        let max_wait = Duration::from_millis(r.max_wait_ms.clamp(0, 30_000) as u64);
        let min_bytes = r.min_bytes.max(0) as usize;
        let max_bytes = if r.max_bytes <= 0 { usize::MAX } else { r.max_bytes as usize };
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + max_wait;
            let mut watches: Vec<_> = wanted
                .iter()
                .flat_map(|(_, ps)| ps.iter())
                .filter_map(|p| p.partition.as_ref().ok().map(|p| p.subscribe()))
                .collect();
            loop {
                let (responses, bytes, any_error) = read_all(&wanted, max_bytes).await;
                let enough = min_bytes == 0 || (bytes > 0 && bytes >= min_bytes);
                if enough || any_error || watches.is_empty() || tokio::time::Instant::now() >= deadline {
                    return respond(ResponseKind::Fetch(FetchResponse::default().with_responses(responses)));
                }
                // Wait for any partition to commit more, or the deadline (then answer with
                // what there is).
                let changed = futures_util::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
                let _ = tokio::time::timeout_at(deadline, changed).await;
            }
        })
    }

    fn list_offsets(
        &self,
        r: ListOffsetsRequest,
        respond: impl FnOnce(ResponseKind) -> Option<Bytes> + Send + 'static,
    ) -> Reply {
        let mut asks = Vec::new();
        for t in r.topics {
            let hub = self.hub_or_error(t.name.as_str(), false);
            let parts: Vec<_> = t
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.timestamp, partition_of(&hub, p.partition_index)))
                .collect();
            asks.push((t.name, parts));
        }
        Box::pin(async move {
            let topics = tokio::task::spawn_blocking(move || {
                asks.into_iter()
                    .map(|(name, parts)| {
                        let partitions = parts
                            .into_iter()
                            .map(|(index, ts, part)| {
                                let resp = ListOffsetsPartitionResponse::default()
                                    .with_partition_index(index)
                                    .with_leader_epoch(-1);
                                match part {
                                    Err(code) => resp.with_error_code(code),
                                    Ok(p) => {
                                        let (offset, time) = lookup(&p, ts);
                                        resp.with_offset(offset).with_timestamp(time)
                                    }
                                }
                            })
                            .collect();
                        ListOffsetsTopicResponse::default().with_name(name).with_partitions(partitions)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            respond(ResponseKind::ListOffsets(ListOffsetsResponse::default().with_topics(topics)))
        })
    }

    fn find_coordinator(&self, r: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
        let (host, port) = self.advertised();
        let error = if r.key_type != 0 { err::COORDINATOR_NOT_AVAILABLE } else { 0 };
        if version >= 4 {
            let coordinators = r
                .coordinator_keys
                .iter()
                .map(|k| {
                    Coordinator::default()
                        .with_key(k.clone())
                        .with_node_id(BrokerId(0))
                        .with_host(text(&host))
                        .with_port(port)
                        .with_error_code(error)
                })
                .collect();
            FindCoordinatorResponse::default().with_coordinators(coordinators)
        } else {
            FindCoordinatorResponse::default()
                .with_error_code(error)
                .with_node_id(BrokerId(0))
                .with_host(text(&host))
                .with_port(port)
        }
    }

    fn offset_commit(
        &self,
        r: OffsetCommitRequest,
        respond: impl FnOnce(ResponseKind) -> Option<Bytes> + Send + 'static,
    ) -> Reply {
        let group = r.group_id.as_str().to_owned();
        let member_error = self.ep.groups.check_commit(&group, r.generation_id_or_member_epoch, r.member_id.as_str());
        let now = ehub_broker_core::now_millis();
        let mut entries = Vec::new();
        let mut topics: Vec<(TopicName, Vec<(i32, i16)>)> = Vec::new();
        for t in r.topics {
            let access = self.hub(t.name.as_str(), false);
            let mut parts = Vec::new();
            for p in t.partitions {
                let code = match &access {
                    _ if member_error != 0 => member_error,
                    Access::Unknown => err::UNKNOWN_TOPIC_OR_PARTITION,
                    Access::Denied => err::TOPIC_AUTHORIZATION_FAILED,
                    Access::Ok(h) if p.partition_index < 0 || p.partition_index as usize >= h.partitions.len() => {
                        err::UNKNOWN_TOPIC_OR_PARTITION
                    }
                    _ if p.committed_metadata.as_ref().is_some_and(|m| m.len() > MAX_COMMIT_METADATA) => {
                        err::OFFSET_METADATA_TOO_LARGE
                    }
                    Access::Ok(h) => {
                        entries.push((
                            (group.clone(), h.name.clone(), p.partition_index),
                            Committed {
                                offset: p.committed_offset,
                                leader_epoch: p.committed_leader_epoch,
                                metadata: p.committed_metadata.as_ref().map(name),
                                commit_time: now,
                            },
                        ));
                        0
                    }
                };
                parts.push((p.partition_index, code));
            }
            topics.push((t.name, parts));
        }
        let store = Arc::clone(&self.ep.offsets);
        Box::pin(async move {
            let stored = tokio::task::spawn_blocking(move || store.commit(entries)).await;
            let failed = !matches!(stored, Ok(Ok(())));
            if failed {
                tracing::error!(group = %group, "Kafka: storing committed offsets failed");
            }
            let topics = topics
                .into_iter()
                .map(|(name, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|(i, code)| {
                            let code = if code == 0 && failed { err::UNKNOWN_SERVER_ERROR } else { code };
                            OffsetCommitResponsePartition::default().with_partition_index(i).with_error_code(code)
                        })
                        .collect();
                    OffsetCommitResponseTopic::default().with_name(name).with_partitions(partitions)
                })
                .collect();
            respond(ResponseKind::OffsetCommit(OffsetCommitResponse::default().with_topics(topics)))
        })
    }

    /// The committed offsets asked for, or every one of the group's when `topics` is null.
    fn committed(
        &self,
        group: &str,
        topics: Option<Vec<(TopicName, Vec<i32>)>>,
    ) -> Vec<(TopicName, Vec<(i32, Committed)>)> {
        let none = || Committed { offset: -1, leader_epoch: -1, metadata: Some(String::new()), commit_time: 0 };
        match topics {
            Some(ts) => ts
                .into_iter()
                .map(|(t, parts)| {
                    let found = parts
                        .into_iter()
                        .map(|p| (p, self.ep.offsets.get(group, t.as_str(), p).unwrap_or_else(none)))
                        .collect();
                    (t, found)
                })
                .collect(),
            None => {
                let mut by_topic: Vec<(TopicName, Vec<(i32, Committed)>)> = Vec::new();
                for (t, p, c) in self.ep.offsets.of_group(group) {
                    match by_topic.last_mut() {
                        Some((name, v)) if name.as_str() == t => v.push((p, c)),
                        _ => by_topic.push((topic(&t), vec![(p, c)])),
                    }
                }
                by_topic
            }
        }
    }

    fn offset_fetch(&self, r: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        if version >= 8 {
            let groups = r
                .groups
                .into_iter()
                .map(|g| {
                    let asked = g.topics.map(|ts| ts.into_iter().map(|t| (t.name, t.partition_indexes)).collect());
                    let topics = self
                        .committed(g.group_id.as_str(), asked)
                        .into_iter()
                        .map(|(name, parts)| {
                            let partitions = parts
                                .into_iter()
                                .map(|(i, c)| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(i)
                                        .with_committed_offset(c.offset)
                                        .with_committed_leader_epoch(c.leader_epoch)
                                        .with_metadata(c.metadata.as_deref().map(text))
                                })
                                .collect();
                            OffsetFetchResponseTopics::default().with_name(name).with_partitions(partitions)
                        })
                        .collect();
                    OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_topics(topics)
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let asked = r.topics.map(|ts| ts.into_iter().map(|t| (t.name, t.partition_indexes)).collect());
        let topics = self
            .committed(r.group_id.as_str(), asked)
            .into_iter()
            .map(|(name, parts)| {
                let partitions = parts
                    .into_iter()
                    .map(|(i, c)| {
                        let p = OffsetFetchResponsePartition::default()
                            .with_partition_index(i)
                            .with_committed_offset(c.offset)
                            .with_metadata(c.metadata.as_deref().map(text));
                        if version >= 5 {
                            p.with_committed_leader_epoch(c.leader_epoch)
                        } else {
                            p
                        }
                    })
                    .collect();
                OffsetFetchResponseTopic::default().with_name(name).with_partitions(partitions)
            })
            .collect();
        OffsetFetchResponse::default().with_topics(topics)
    }

    fn init_producer_id(
        &self,
        r: InitProducerIdRequest,
        respond: impl FnOnce(ResponseKind) -> Option<Bytes> + Send + 'static,
    ) -> Reply {
        if r.transactional_id.is_some() {
            tracing::info!(peer = %self.peer, "Kafka: a transactional producer; transactions are not supported");
            let resp = InitProducerIdResponse::default().with_error_code(err::UNSUPPORTED_VERSION);
            return ready(respond(ResponseKind::InitProducerId(resp)));
        }
        if r.producer_id.0 >= 0 && r.producer_epoch >= 0 {
            // A producer bumping its epoch after an error keeps its id.
            let resp = InitProducerIdResponse::default()
                .with_producer_id(r.producer_id)
                .with_producer_epoch(r.producer_epoch.saturating_add(1));
            return ready(respond(ResponseKind::InitProducerId(resp)));
        }
        let store = Arc::clone(&self.ep.offsets);
        Box::pin(async move {
            let resp = match tokio::task::spawn_blocking(move || store.next_producer_id()).await {
                Ok(Ok(id)) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
                _ => InitProducerIdResponse::default().with_error_code(err::KAFKA_STORAGE_ERROR),
            };
            respond(ResponseKind::InitProducerId(resp))
        })
    }

    fn join_group(
        &self,
        r: JoinGroupRequest,
        version: i16,
        client_id: String,
        respond: impl FnOnce(ResponseKind) -> Option<Bytes> + Send + 'static,
    ) -> Reply {
        let session = Duration::from_millis(r.session_timeout_ms.max(0) as u64);
        let rebalance =
            if version >= 1 { Duration::from_millis(r.rebalance_timeout_ms.max(0) as u64) } else { session };
        let rx = self.ep.groups.join(JoinRequest {
            group: r.group_id.as_str().to_owned(),
            member_id: name(&r.member_id),
            instance_id: r.group_instance_id.as_ref().map(name),
            client_id,
            client_host: format!("/{}", self.peer.ip()),
            session_timeout: session,
            rebalance_timeout: rebalance,
            protocol_type: name(&r.protocol_type),
            protocols: r.protocols.into_iter().map(|p| (name(&p.name), p.metadata)).collect(),
            version,
        });
        Box::pin(async move {
            let j = rx.await.unwrap_or_default();
            let members = j
                .members
                .into_iter()
                .map(|(id, instance, meta)| {
                    let m = JoinGroupResponseMember::default().with_member_id(text(&id)).with_metadata(meta);
                    if version >= 5 {
                        m.with_group_instance_id(instance.as_deref().map(text))
                    } else {
                        m
                    }
                })
                .collect();
            let mut resp = JoinGroupResponse::default()
                .with_error_code(j.error)
                .with_generation_id(if j.error == 0 { j.generation } else { -1 })
                .with_protocol_name(j.protocol.as_deref().map(text))
                .with_leader(text(&j.leader))
                .with_member_id(text(&j.member_id))
                .with_members(members);
            if version >= 7 {
                resp.protocol_type = Some(text(&j.protocol_type)).filter(|_| j.error == 0);
            }
            respond(ResponseKind::JoinGroup(resp))
        })
    }

    fn sync_group(
        &self,
        r: SyncGroupRequest,
        respond: impl FnOnce(ResponseKind) -> Option<Bytes> + Send + 'static,
    ) -> Reply {
        let (protocol_type, protocol_name) = (r.protocol_type.clone(), r.protocol_name.clone());
        let rx = self.ep.groups.sync(
            r.group_id.as_str(),
            r.generation_id,
            r.member_id.as_str(),
            r.assignments.into_iter().map(|a| (name(&a.member_id), a.assignment)).collect(),
        );
        Box::pin(async move {
            let (code, assignment) = rx.await.unwrap_or((gcode::REBALANCE_IN_PROGRESS, Bytes::new()));
            let resp = SyncGroupResponse::default()
                .with_error_code(code)
                .with_assignment(assignment)
                .with_protocol_type(protocol_type)
                .with_protocol_name(protocol_name);
            respond(ResponseKind::SyncGroup(resp))
        })
    }

    fn leave_group(&self, r: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let group = r.group_id.as_str();
        if version < 3 {
            return LeaveGroupResponse::default().with_error_code(self.ep.groups.leave(group, r.member_id.as_str()));
        }
        let members = r
            .members
            .iter()
            .map(|m| {
                MemberResponse::default()
                    .with_member_id(m.member_id.clone())
                    .with_group_instance_id(m.group_instance_id.clone())
                    .with_error_code(self.ep.groups.leave(group, m.member_id.as_str()))
            })
            .collect();
        LeaveGroupResponse::default().with_members(members)
    }

    fn describe_groups(&self, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let groups = r
            .groups
            .into_iter()
            .map(|g| match self.ep.groups.describe(g.as_str()) {
                None => DescribedGroup::default().with_group_id(g).with_group_state(text("Dead")),
                Some(v) => DescribedGroup::default()
                    .with_group_id(g)
                    .with_group_state(text(v.state))
                    .with_protocol_type(text(&v.protocol_type))
                    .with_protocol_data(text(&v.protocol))
                    .with_members(
                        v.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(text(&m.id))
                                    .with_client_id(text(&m.client_id))
                                    .with_client_host(text(&m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }
}

fn frame_of(api: ApiKey, version: i16, correlation_id: i32, body: ResponseKind) -> Option<Bytes> {
    frame(api, version, correlation_id, body)
}

/// An append under way (or known already).
enum PendingAppend {
    Appending(tokio::sync::oneshot::Receiver<Result<i64, i16>>, Arc<ehub_partition_log::Partition>),
    Duplicate(tokio::sync::watch::Receiver<crate::producers::BatchOutcome>, Arc<ehub_partition_log::Partition>),
    Done(Result<(i64, i64), i16>),
}

impl PendingAppend {
    /// (base offset, log start offset) or an error code.
    async fn wait(self) -> Result<(i64, i64), i16> {
        match self {
            PendingAppend::Done(r) => r,
            PendingAppend::Appending(rx, p) => {
                let base = rx.await.unwrap_or(Err(err::UNKNOWN_SERVER_ERROR))?;
                Ok((base, p.info().begin_sequence_number))
            }
            PendingAppend::Duplicate(mut rx, p) => {
                let outcome = match rx.wait_for(|o| o.is_some()).await {
                    Ok(o) => o.unwrap_or(Err(err::UNKNOWN_SERVER_ERROR)),
                    Err(_) => Err(err::UNKNOWN_SERVER_ERROR),
                };
                Ok((outcome?, p.info().begin_sequence_number))
            }
        }
    }
}

struct FetchPart {
    index: i32,
    offset: i64,
    max_bytes: usize,
    partition: Result<Arc<Partition>, i16>,
    counters: Option<ehub_broker_core::PartitionCounters>,
}

/// Reads every asked partition from its offset: the topic responses, the record bytes, and
/// whether any partition answered with an error.
async fn read_all(
    wanted: &[(TopicName, Vec<FetchPart>)],
    max_bytes: usize,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let mut total = 0usize;
    let mut any_error = false;
    let mut topics = Vec::with_capacity(wanted.len());
    for (name, parts) in wanted {
        let mut out = Vec::with_capacity(parts.len());
        for fp in parts {
            let resp =
                PartitionData::default().with_partition_index(fp.index).with_aborted_transactions(Some(Vec::new()));
            let p = match &fp.partition {
                Err(code) => {
                    any_error = true;
                    out.push(resp.with_error_code(*code).with_records(Some(Bytes::new())));
                    continue;
                }
                Ok(p) => Arc::clone(p),
            };
            let info = p.info();
            let (start, hwm) = (info.begin_sequence_number, p.committed_seq());
            let resp = resp.with_high_watermark(hwm).with_last_stable_offset(hwm).with_log_start_offset(start);
            if fp.offset < start || fp.offset > hwm {
                any_error = true;
                out.push(resp.with_error_code(err::OFFSET_OUT_OF_RANGE).with_records(Some(Bytes::new())));
                continue;
            }
            // Always at least one event (KIP-74), then within both byte limits.
            let budget = fp.max_bytes.min(max_bytes.saturating_sub(total)).max(1);
            let (seq, part) = (fp.offset, Arc::clone(&p));
            let events = if fp.offset >= hwm {
                Ok(Vec::new())
            } else if p.is_cached(seq) {
                p.read(seq, 10_000, budget)
            } else {
                tokio::task::spawn_blocking(move || part.read(seq, 10_000, budget)).await.unwrap_or_else(|e| {
                    Err(ehub_partition_log::LogError::Io {
                        path: std::path::PathBuf::new(),
                        source: std::io::Error::other(e),
                    })
                })
            };
            let events = match events {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka: reading a partition failed");
                    any_error = true;
                    out.push(resp.with_error_code(err::KAFKA_STORAGE_ERROR).with_records(Some(Bytes::new())));
                    continue;
                }
            };
            if let Some(c) = fp.counters.as_ref().filter(|_| !events.is_empty()) {
                c.events_out.inc_by(events.len() as u64);
                c.bytes_out.inc_by(events.iter().map(|e| e.payload.len() as u64).sum());
            }
            let records: Vec<_> = events.into_iter().map(event_to_record).collect();
            // Sized up front: grown while encoding, it re-copied the batch at each doubling.
            let mut buf = BytesMut::with_capacity(encoded_size(&records));
            if !records.is_empty() {
                let options = RecordEncodeOptions { version: 2, compression: Compression::None };
                if let Err(e) = RecordBatchEncoder::encode(&mut buf, records.iter(), &options) {
                    tracing::error!(error = %e, "Kafka: encoding a record batch failed");
                }
            }
            total += buf.len();
            out.push(resp.with_records(Some(buf.freeze())));
        }
        topics.push(FetchableTopicResponse::default().with_topic(name.clone()).with_partitions(out));
    }
    (topics, total, any_error)
}

/// Room for these records encoded as one uncompressed batch, which is how a fetch encodes
/// them: the batch header, then each record's fields at their widest varints, its key, value
/// and headers.
fn encoded_size(records: &[Record]) -> usize {
    const BATCH_HEADER: usize = 61;
    // Length, attributes, timestamp delta, offset delta, key and value lengths, header count.
    const RECORD_FIELDS: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;
    let len = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
    BATCH_HEADER
        + records
            .iter()
            .map(|r| {
                RECORD_FIELDS
                    + len(&r.key)
                    + len(&r.value)
                    + r.headers.iter().map(|(k, v)| 10 + k.len() + len(v)).sum::<usize>()
            })
            .sum::<usize>()
}

/// ListOffsets of a partition: -2 earliest, -1 latest (the high watermark), -3 the last event,
/// otherwise the first event enqueued at or after the time. (offset, timestamp); -1 when none.
fn lookup(p: &ehub_partition_log::Partition, ts: i64) -> (i64, i64) {
    let info = p.info();
    match ts {
        -2 => (info.begin_sequence_number, -1),
        -1 => (p.committed_seq(), -1),
        -3 => match info.last_enqueued_time {
            Some(t) if !info.is_empty => (info.last_sequence_number, t),
            _ => (-1, -1),
        },
        t if t >= 0 => match p.resolve(&StartPosition::Time { millis: t, inclusive: true }) {
            Ok(seq) if seq < p.committed_seq() => match p.read(seq, 1, usize::MAX) {
                Ok(ev) if !ev.is_empty() => (ev[0].sequence_number, ev[0].enqueued_time),
                _ => (-1, -1),
            },
            _ => (-1, -1),
        },
        _ => (-1, -1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::event_to_record;
    use ehub_partition_log::StoredEvent;

    /// The fetch buffer's size is never short of what the encoder writes, whatever the keys,
    /// headers, value sizes, offsets and times.
    #[test]
    fn a_fetch_buffer_has_room_for_its_batch() {
        let mut records = Vec::new();
        for (i, len) in [0usize, 1, 100, 127, 128, 300, 70_000].into_iter().enumerate() {
            let e = StoredEvent {
                sequence_number: 1 << 40 | i as i64,
                offset: i as u64 * 1000,
                enqueued_time: i as i64 * (i64::MAX / 8),
                partition_key: (i % 2 == 0).then(|| Bytes::from_static(b"partition key")),
                payload: crate::mapping::record_to_event(
                    (i % 3 == 0).then(|| Bytes::from(vec![1u8; len / 2])).as_ref(),
                    Some(&Bytes::from(vec![2u8; len])),
                    &Default::default(),
                    None,
                ),
            };
            records.push(event_to_record(e));
            let mut buf = BytesMut::new();
            let options = RecordEncodeOptions { version: 2, compression: Compression::None };
            RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
            assert!(
                buf.len() <= encoded_size(&records),
                "{} records: {} > {}",
                i + 1,
                buf.len(),
                encoded_size(&records)
            );
        }
    }
}
