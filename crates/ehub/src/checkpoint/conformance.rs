//! The behaviours every [`CheckpointStore`] must have, as test bodies that each store's tests run
//! against it (cargo feature `conformance`). Each body works in a namespace of its own, so one
//! store can serve them all; each panics with what went wrong.
//!
//! ```text
//! #[tokio::test]
//! async fn conformance() {
//!     let store = MyStore::open(...).await.unwrap();
//!     ehub::checkpoint::conformance::run_all(&store).await;
//! }
//! ```

use super::{Checkpoint, CheckpointStore, Ownership};

fn fresh_namespace(tag: &str) -> String {
    format!("{tag}-{}.servicebus.windows.net", uuid::Uuid::new_v4().simple())
}

fn claim(namespace: &str, partition: &str, owner: &str, etag: Option<String>) -> Ownership {
    Ownership {
        namespace: namespace.into(),
        event_hub: "hub".into(),
        consumer_group: "$default".into(),
        partition_id: partition.into(),
        owner_id: owner.into(),
        etag,
        last_modified: None,
    }
}

/// Runs every body below against `store`.
pub async fn run_all(store: &dyn CheckpointStore) {
    concurrent_first_claims_have_exactly_one_winner(store).await;
    a_stale_etag_is_refused_and_every_write_changes_the_etag(store).await;
    a_released_ownership_can_be_claimed_by_another(store).await;
    a_claim_of_several_partitions_returns_only_the_winners(store).await;
    checkpoints_round_trip_with_opaque_offsets_and_replace_each_other(store).await;
    names_are_lowercased_and_scoped(store).await;
}

/// Two processors claim a never-owned partition at once: exactly one wins.
pub async fn concurrent_first_claims_have_exactly_one_winner(store: &dyn CheckpointStore) {
    let ns = fresh_namespace("race");
    for round in 0..20 {
        let partition = round.to_string();
        let a = [claim(&ns, &partition, "a", None)];
        let b = [claim(&ns, &partition, "b", None)];
        let (wa, wb) = futures_util::future::join(store.claim_ownerships(&a), store.claim_ownerships(&b)).await;
        let (wa, wb) = (wa.expect("claim a"), wb.expect("claim b"));
        assert_eq!(wa.len() + wb.len(), 1, "round {round}: exactly one first claim wins: {wa:?} {wb:?}");
        let winner = if wa.is_empty() { "b" } else { "a" };
        let listed = store.list_ownerships(&ns, "hub", "$default").await.expect("list");
        let rec = listed.iter().find(|o| o.partition_id == partition).expect("the winner's record is listed");
        assert_eq!(rec.owner_id, winner);
    }
}

/// A claim with the ETag of an older read loses; the ETag changes on every write, even two in a row.
pub async fn a_stale_etag_is_refused_and_every_write_changes_the_etag(store: &dyn CheckpointStore) {
    let ns = fresh_namespace("etag");
    let first = store.claim_ownerships(&[claim(&ns, "0", "a", None)]).await.expect("claim");
    assert_eq!(first.len(), 1, "a first claim wins");
    let e1 = first[0].etag.clone().expect("a won claim carries its ETag");
    assert!(first[0].last_modified.is_some(), "a won claim carries its last-modified time");
    let renewed = store.claim_ownerships(&[claim(&ns, "0", "a", Some(e1.clone()))]).await.expect("renew");
    assert_eq!(renewed.len(), 1, "renewing with the current ETag wins");
    let e2 = renewed[0].etag.clone().expect("etag");
    assert_ne!(e1, e2, "every write changes the ETag");
    let stale = store.claim_ownerships(&[claim(&ns, "0", "b", Some(e1))]).await.expect("stale claim");
    assert!(stale.is_empty(), "a stale ETag is refused: {stale:?}");
    let again = store.claim_ownerships(&[claim(&ns, "0", "b", None)]).await.expect("claim as new");
    assert!(again.is_empty(), "a claim as new of an existing record is refused: {again:?}");
    let listed = store.list_ownerships(&ns, "hub", "$default").await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].owner_id, "a");
    assert_eq!(listed[0].etag.as_deref(), Some(e2.as_str()), "listing returns the current ETag");
}

/// An owner that stops releases its partition (owner id `""`); another takes it with that ETag.
pub async fn a_released_ownership_can_be_claimed_by_another(store: &dyn CheckpointStore) {
    let ns = fresh_namespace("release");
    let won = store.claim_ownerships(&[claim(&ns, "1", "a", None)]).await.expect("claim");
    let released = store.claim_ownerships(&[claim(&ns, "1", "", won[0].etag.clone())]).await.expect("release");
    assert_eq!(released.len(), 1, "the owner can release");
    let listed = store.list_ownerships(&ns, "hub", "$default").await.expect("list");
    assert!(listed[0].is_released(), "a released ownership has an empty owner id: {listed:?}");
    let taken = store.claim_ownerships(&[claim(&ns, "1", "b", listed[0].etag.clone())]).await.expect("take over");
    assert_eq!(taken.len(), 1, "another processor claims a released partition");
    assert_eq!(store.list_ownerships(&ns, "hub", "$default").await.expect("list")[0].owner_id, "b");
}

/// One call claims several partitions; those whose condition fails are left out.
pub async fn a_claim_of_several_partitions_returns_only_the_winners(store: &dyn CheckpointStore) {
    let ns = fresh_namespace("many");
    let held = store.claim_ownerships(&[claim(&ns, "2", "other", None)]).await.expect("claim");
    assert_eq!(held.len(), 1);
    let wanted: Vec<Ownership> = (0..4).map(|p| claim(&ns, &p.to_string(), "me", None)).collect();
    let mut won: Vec<String> =
        store.claim_ownerships(&wanted).await.expect("claim").into_iter().map(|o| o.partition_id).collect();
    won.sort();
    assert_eq!(won, ["0", "1", "3"], "partition 2 was taken already");
    assert_eq!(store.list_ownerships(&ns, "hub", "$default").await.expect("list").len(), 4);
}

/// Checkpoints read back as written, offsets as opaque strings; a new one replaces the old.
pub async fn checkpoints_round_trip_with_opaque_offsets_and_replace_each_other(store: &dyn CheckpointStore) {
    let ns = fresh_namespace("checkpoint");
    let cp = |partition: &str, offset: Option<&str>, seq: Option<i64>| Checkpoint {
        namespace: ns.clone(),
        event_hub: "hub".into(),
        consumer_group: "$default".into(),
        partition_id: partition.into(),
        offset: offset.map(Into::into),
        sequence_number: seq,
    };
    assert!(store.list_checkpoints(&ns, "hub", "$default").await.expect("list").is_empty());
    store.update_checkpoint(&cp("0", Some("4096"), Some(41))).await.expect("update");
    store.update_checkpoint(&cp("1", Some("g1:opaque/offset=7"), Some(7))).await.expect("update");
    store.update_checkpoint(&cp("0", Some("8192"), Some(99))).await.expect("update replaces");
    store.update_checkpoint(&cp("2", None, Some(i64::MAX))).await.expect("update without offset");
    let got = store.list_checkpoints(&ns, "hub", "$default").await.expect("list");
    assert_eq!(
        got,
        vec![
            cp("0", Some("8192"), Some(99)),
            cp("1", Some("g1:opaque/offset=7"), Some(7)),
            cp("2", None, Some(i64::MAX))
        ]
    );
}

/// Namespace, hub and consumer group are matched without regard to case, and records of other
/// hubs and groups stay apart.
pub async fn names_are_lowercased_and_scoped(store: &dyn CheckpointStore) {
    let ns = fresh_namespace("CASE");
    let mut o = claim(&ns, "0", "a", None);
    o.event_hub = "MyHub".into();
    o.consumer_group = "$Default".into();
    assert_eq!(store.claim_ownerships(&[o]).await.expect("claim").len(), 1);
    let listed = store.list_ownerships(&ns.to_lowercase(), "myhub", "$default").await.expect("list");
    assert_eq!(listed.len(), 1, "found under the lower-cased names");
    assert_eq!(listed[0].event_hub, "myhub");
    assert_eq!(listed[0].consumer_group, "$default");
    assert_eq!(listed[0].namespace, ns.to_lowercase());
    assert_eq!(store.list_ownerships(&ns, "MYHUB", "$DEFAULT").await.expect("list").len(), 1);
    assert!(store.list_ownerships(&ns, "myhub", "other").await.expect("list").is_empty(), "groups stay apart");
    assert!(store.list_ownerships(&ns, "myhub2", "$default").await.expect("list").is_empty(), "hubs stay apart");
    let c = Checkpoint {
        namespace: ns.clone(),
        event_hub: "MyHub".into(),
        consumer_group: "$Default".into(),
        partition_id: "0".into(),
        offset: Some("1".into()),
        sequence_number: Some(1),
    };
    store.update_checkpoint(&c).await.expect("update");
    let got = store.list_checkpoints(&ns, "myhub", "$DEFAULT").await.expect("list");
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].event_hub.as_str(), got[0].consumer_group.as_str()), ("myhub", "$default"));
}
