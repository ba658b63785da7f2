//! The API versions the front advertises: only versions it handles and the `kafka-protocol`
//! crate decodes (its `Message::VERSIONS`, not `ApiKey::valid_versions()`, which over-claims).
//!
//! Capped below topic IDs (Fetch 13, Metadata topic ids used by librdkafka only when non-null)
//! and never advertising transactions or the new consumer-group protocol, so clients stay on
//! the classic group protocol.

use kafka_protocol::messages::ApiKey;

/// (API, min, max) advertised in ApiVersions.
///
/// Produce is advertised from 0 though only 3 and later (record batches v2) are taken:
/// librdkafka before 2.11.1 (Debian's kcat) silently stops compressing unless the broker's
/// Produce range starts at 0 (KAFKA-18659); Kafka 4 does the same. Clients pick the highest
/// common version, so none sends 0–2; one that did would have its connection closed.
pub const ADVERTISED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// The range of `api` that is served, if any (Produce from 3; see [`ADVERTISED`]).
pub fn range(api: ApiKey) -> Option<(i16, i16)> {
    ADVERTISED
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|&(k, lo, hi)| if k == ApiKey::Produce { (lo.max(3), hi) } else { (lo, hi) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;

    /// Every advertised version is one the crate decodes.
    #[test]
    fn advertised_versions_are_decodable() {
        let decodable = |k: ApiKey| match k {
            ApiKey::Produce => ProduceRequest::VERSIONS,
            ApiKey::Fetch => FetchRequest::VERSIONS,
            ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
            ApiKey::Metadata => MetadataRequest::VERSIONS,
            ApiKey::OffsetCommit => OffsetCommitRequest::VERSIONS,
            ApiKey::OffsetFetch => OffsetFetchRequest::VERSIONS,
            ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
            ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
            ApiKey::Heartbeat => HeartbeatRequest::VERSIONS,
            ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
            ApiKey::SyncGroup => SyncGroupRequest::VERSIONS,
            ApiKey::DescribeGroups => DescribeGroupsRequest::VERSIONS,
            ApiKey::ListGroups => ListGroupsRequest::VERSIONS,
            ApiKey::SaslHandshake => SaslHandshakeRequest::VERSIONS,
            ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
            ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS,
            ApiKey::SaslAuthenticate => SaslAuthenticateRequest::VERSIONS,
            other => panic!("{other:?} advertised but not checked"),
        };
        for &(k, _, hi) in ADVERTISED {
            let (lo, hi) = (range(k).unwrap().0, hi);
            let v = decodable(k);
            assert!(v.min <= lo && hi <= v.max, "{k:?} {lo}-{hi} outside {}-{}", v.min, v.max);
        }
    }
}
