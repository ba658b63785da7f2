//! Load balancing for event processors: which partitions a processor instance claims, renews
//! and releases each cycle, by the rules every official SDK follows (`shared` reference,
//! peers.md §2.4), so that our processors and the official ones share partitions fairly.
//!
//! Each cycle a processor lists the ownership records of its hub and consumer group, asks
//! [`LoadBalancer::plan`] what to claim, and claims it through its
//! [`CheckpointStore`](crate::CheckpointStore); the claims that win are the partitions it
//! processes until the next cycle.
//!
//! - An ownership is **active** when its owner id is not empty and it was written less than the
//!   ownership expiry ago (by the store's clock, compared with ours). Released (`""`) and expired
//!   ownerships count as unowned.
//! - The owners are the instances with at least one active partition, plus this one. Each should
//!   hold `partitions / owners` partitions; when that does not divide, up to `remainder` of them
//!   hold one more.
//! - Every cycle renews every partition this instance holds (a claim with the record's ETag, which
//!   refreshes its last-modified time).
//! - Below its share, it claims unowned or expired partitions first, picked at random; only when
//!   there are none does it steal one from the most-loaded owner, and only from an owner above the
//!   most anyone should hold, or above the minimum while this instance is below it.
//! - [`LoadBalancingStrategy::Balanced`] claims at most one new partition per cycle;
//!   [`LoadBalancingStrategy::Greedy`] claims its whole deficit at once.
//! - On a graceful stop, [`LoadBalancer::release`] gives every held partition back (owner id
//!   `""`), so that peers take them within one cycle rather than after the expiry.

//!
//! The processor itself, [`EventProcessor`], comes in two shapes: pull
//! ([`EventProcessor::next_partition_client`], as the official Rust and Go SDKs) and push
//! ([`EventProcessor::run_with_handler`] with an [`EventHandler`], or
//! [`EventProcessor::run_with_factory`] with a [`PartitionProcessor`] per partition, as Python,
//! JavaScript, .NET and the seed).

mod handler;
mod run;

pub use handler::{CloseReason, EventHandler, PartitionContext, PartitionProcessor};
pub use run::{EventProcessor, EventProcessorOptions, PartitionClient};

use crate::checkpoint::Ownership;
use rand::seq::SliceRandom;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// How a processor takes on partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadBalancingStrategy {
    /// At most one new partition per cycle: the load spreads smoothly (the default).
    #[default]
    Balanced,
    /// The whole fair share at once: faster to settle, more contention while it does.
    Greedy,
}

/// The balancing decisions of one processor instance.
#[derive(Debug, Clone)]
pub struct LoadBalancer {
    /// This instance's owner id.
    pub owner_id: String,
    /// The strategy.
    pub strategy: LoadBalancingStrategy,
    /// How long an ownership lasts without renewal.
    pub ownership_expiry: Duration,
}

/// Where a partition stands in one cycle's view of the records.
enum Holder<'a> {
    Me(&'a Ownership),
    Other(&'a str),
    /// Never owned, released or expired; with its record, if it has one.
    Free(Option<&'a Ownership>),
}

impl LoadBalancer {
    /// A balancer for the instance `owner_id`.
    pub fn new(owner_id: impl Into<String>, strategy: LoadBalancingStrategy, ownership_expiry: Duration) -> Self {
        LoadBalancer { owner_id: owner_id.into(), strategy, ownership_expiry }
    }

    fn is_active(&self, o: &Ownership, now: SystemTime) -> bool {
        !o.is_released()
            && o.last_modified.is_some_and(|t| now.duration_since(t).unwrap_or_default() < self.ownership_expiry)
    }

    /// The claims to make this cycle: renewals of every partition this instance holds, then the
    /// new partitions it should take (unowned first, at random; then one stolen from the most
    /// loaded owner). `template` gives the namespace, hub and consumer group of new records.
    pub fn plan(
        &self,
        partition_ids: &[String],
        ownerships: &[Ownership],
        template: &Ownership,
        now: SystemTime,
    ) -> Vec<Ownership> {
        let records: HashMap<&str, &Ownership> = ownerships.iter().map(|o| (o.partition_id.as_str(), o)).collect();
        let holders: Vec<(&String, Holder<'_>)> = partition_ids
            .iter()
            .map(|p| {
                let holder = match records.get(p.as_str()) {
                    // Ours even when it looks expired (a cycle that came late, a coarse clock):
                    // renewing what we own is every cycle's first job, and the renewal is
                    // conditional on the ETag, so a processor that took it meanwhile still wins.
                    Some(o) if o.owner_id == self.owner_id && !o.is_released() => Holder::Me(o),
                    Some(o) if self.is_active(o, now) => Holder::Other(o.owner_id.as_str()),
                    Some(o) => Holder::Free(Some(o)),
                    None => Holder::Free(None),
                };
                (p, holder)
            })
            .collect();
        let mut load: HashMap<&str, usize> = HashMap::new();
        load.insert(self.owner_id.as_str(), 0);
        for (_, h) in &holders {
            match h {
                Holder::Me(_) => *load.entry(self.owner_id.as_str()).or_default() += 1,
                Holder::Other(owner) => *load.entry(owner).or_default() += 1,
                Holder::Free(_) => {}
            }
        }
        let mine = load[self.owner_id.as_str()];
        let (n, owners) = (partition_ids.len(), load.len());
        let min_share = n / owners;
        let remainder = n % owners;
        let at_max = load.values().filter(|&&c| c > min_share).count();
        // Below the minimum: up to it. At the minimum: one more only while fewer than `remainder`
        // owners already hold one more.
        let deficit = if mine < min_share {
            min_share - mine + usize::from(remainder > at_max)
        } else if mine == min_share && remainder > at_max {
            1
        } else {
            0
        };
        let want = match self.strategy {
            LoadBalancingStrategy::Balanced => deficit.min(1),
            LoadBalancingStrategy::Greedy => deficit,
        };

        let mut claims: Vec<Ownership> = holders
            .iter()
            .filter_map(|(_, h)| match h {
                Holder::Me(o) => Some(Ownership { owner_id: self.owner_id.clone(), ..(*o).clone() }),
                _ => None,
            })
            .collect();
        if want == 0 {
            return claims;
        }
        let mut rng = rand::thread_rng();
        let mut free: Vec<(&String, Option<&Ownership>)> = holders
            .iter()
            .filter_map(|(p, h)| match h {
                Holder::Free(record) => Some((*p, *record)),
                _ => None,
            })
            .collect();
        free.shuffle(&mut rng);
        for (partition, record) in free.into_iter().take(want) {
            claims.push(self.claim_of(partition, record, template));
        }
        let taken = claims.len() - mine;
        if taken == 0 {
            // Nothing free: steal one partition from the most loaded owner, when it holds more
            // than the most anyone should, or when this instance is below the minimum and that
            // owner above it.
            let max_share = min_share + usize::from(remainder > 0);
            let max_other = load.iter().filter(|(o, _)| **o != self.owner_id).map(|(_, c)| *c).max().unwrap_or(0);
            if max_other > max_share || (mine < min_share && max_other > min_share) {
                let mut victims: Vec<(&String, &Ownership)> = holders
                    .iter()
                    .filter_map(|(p, h)| match h {
                        Holder::Other(owner) if load[owner] == max_other => Some((*p, records[p.as_str()])),
                        _ => None,
                    })
                    .collect();
                victims.shuffle(&mut rng);
                if let Some((partition, record)) = victims.first() {
                    claims.push(self.claim_of(partition, Some(record), template));
                }
            }
        }
        claims
    }

    fn claim_of(&self, partition: &str, record: Option<&Ownership>, template: &Ownership) -> Ownership {
        match record {
            Some(o) => Ownership { owner_id: self.owner_id.clone(), ..o.clone() },
            None => Ownership {
                partition_id: partition.to_owned(),
                owner_id: self.owner_id.clone(),
                etag: None,
                last_modified: None,
                ..template.clone()
            },
        }
    }

    /// The claims that give back every partition this instance holds (owner id `""`), for a
    /// graceful stop.
    pub fn release(&self, ownerships: &[Ownership], now: SystemTime) -> Vec<Ownership> {
        ownerships
            .iter()
            .filter(|o| o.owner_id == self.owner_id && self.is_active(o, now))
            .map(|o| Ownership { owner_id: String::new(), ..o.clone() })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{CheckpointStore, InMemoryCheckpointStore};
    use proptest::prelude::*;

    fn template() -> Ownership {
        Ownership {
            namespace: "localhost:5672".into(),
            event_hub: "eh1".into(),
            consumer_group: "$default".into(),
            partition_id: String::new(),
            owner_id: String::new(),
            etag: None,
            last_modified: None,
        }
    }

    fn partitions(n: usize) -> Vec<String> {
        (0..n).map(|p| p.to_string()).collect()
    }

    const EXPIRY: Duration = Duration::from_secs(60);

    /// Runs one cycle of `b` against `store`; returns how many partitions it holds afterwards.
    async fn cycle(b: &LoadBalancer, store: &InMemoryCheckpointStore, n: usize) -> usize {
        let t = template();
        let owned = store.list_ownerships(&t.namespace, &t.event_hub, &t.consumer_group).await.unwrap();
        let plan = b.plan(&partitions(n), &owned, &t, SystemTime::now());
        store.claim_ownerships(&plan).await.unwrap().len()
    }

    async fn counts(store: &InMemoryCheckpointStore, owners: &[LoadBalancer]) -> Vec<usize> {
        let t = template();
        let owned = store.list_ownerships(&t.namespace, &t.event_hub, &t.consumer_group).await.unwrap();
        owners.iter().map(|b| owned.iter().filter(|o| o.owner_id == b.owner_id).count()).collect()
    }

    #[tokio::test]
    async fn three_balanced_processors_settle_at_3_3_2_on_8_partitions() {
        let store = InMemoryCheckpointStore::new();
        let bs: Vec<LoadBalancer> =
            (0..3).map(|i| LoadBalancer::new(format!("p{i}"), LoadBalancingStrategy::Balanced, EXPIRY)).collect();
        for _ in 0..10 {
            for b in &bs {
                cycle(b, &store, 8).await;
            }
        }
        let mut c = counts(&store, &bs).await;
        c.sort();
        assert_eq!(c, vec![2, 3, 3]);
    }

    /// A cycle that comes after the expiry (a stalled process, a loaded machine, a store that
    /// shows Last-Modified in whole seconds) still renews every partition the instance owns;
    /// once, a balanced processor renewed only one of them and dropped the rest as lost.
    #[tokio::test]
    async fn a_late_cycle_renews_every_partition_it_owns_even_when_its_records_look_expired() {
        let store = InMemoryCheckpointStore::new();
        let b = LoadBalancer::new("late", LoadBalancingStrategy::Balanced, Duration::from_millis(50));
        let greedy = LoadBalancer::new("late", LoadBalancingStrategy::Greedy, Duration::from_millis(50));
        assert_eq!(cycle(&greedy, &store, 4).await, 4);
        tokio::time::sleep(Duration::from_millis(120)).await;
        let t = template();
        let owned = store.list_ownerships(&t.namespace, &t.event_hub, &t.consumer_group).await.unwrap();
        let plan = b.plan(&partitions(4), &owned, &t, SystemTime::now());
        assert_eq!(plan.len(), 4, "all four renewed: {plan:?}");
        assert!(plan.iter().all(|o| o.etag.is_some()), "renewals are conditional on the ETags read");
        assert_eq!(store.claim_ownerships(&plan).await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn a_greedy_processor_takes_its_whole_share_in_one_cycle_and_balanced_one_partition() {
        let store = InMemoryCheckpointStore::new();
        let greedy = LoadBalancer::new("g", LoadBalancingStrategy::Greedy, EXPIRY);
        assert_eq!(cycle(&greedy, &store, 8).await, 8, "alone, the greedy one takes all 8 at once");
        let store = InMemoryCheckpointStore::new();
        let balanced = LoadBalancer::new("b", LoadBalancingStrategy::Balanced, EXPIRY);
        assert_eq!(cycle(&balanced, &store, 8).await, 1, "the balanced one takes one per cycle");
        assert_eq!(cycle(&balanced, &store, 8).await, 2, "and renews what it has");
    }

    #[tokio::test]
    async fn a_newcomer_steals_from_the_most_loaded_owner_only_below_its_share() {
        let store = InMemoryCheckpointStore::new();
        let old = LoadBalancer::new("old", LoadBalancingStrategy::Greedy, EXPIRY);
        cycle(&old, &store, 4).await;
        let new = LoadBalancer::new("new", LoadBalancingStrategy::Balanced, EXPIRY);
        // The newcomer is invisible until it owns something: its first cycle sees one owner (4 of
        // 4) and itself, so its share is 2; nothing is free, so it steals one.
        assert_eq!(cycle(&new, &store, 4).await, 1);
        assert_eq!(cycle(&new, &store, 4).await, 2);
        // At its share it steals no more.
        assert_eq!(cycle(&new, &store, 4).await, 2);
        // The old owner renews only what it still holds (its stale ETags lose).
        assert_eq!(cycle(&old, &store, 4).await, 2);
        assert_eq!(counts(&store, &[old, new]).await, vec![2, 2]);
    }

    #[tokio::test]
    async fn released_and_expired_partitions_count_as_unowned() {
        let store = InMemoryCheckpointStore::new();
        let a = LoadBalancer::new("a", LoadBalancingStrategy::Greedy, EXPIRY);
        cycle(&a, &store, 4).await;
        let t = template();
        let owned = store.list_ownerships(&t.namespace, &t.event_hub, &t.consumer_group).await.unwrap();
        assert_eq!(store.claim_ownerships(&a.release(&owned, SystemTime::now())).await.unwrap().len(), 4);
        let b = LoadBalancer::new("b", LoadBalancingStrategy::Greedy, EXPIRY);
        assert_eq!(cycle(&b, &store, 4).await, 4, "released partitions are free at once");

        // Seen from 61 s later, b's ownerships have expired: c takes them all.
        let owned = store.list_ownerships(&t.namespace, &t.event_hub, &t.consumer_group).await.unwrap();
        let c = LoadBalancer::new("c", LoadBalancingStrategy::Greedy, EXPIRY);
        let later = SystemTime::now() + Duration::from_secs(61);
        let plan = c.plan(&partitions(4), &owned, &t, later);
        assert_eq!(plan.len(), 4);
        assert!(plan.iter().all(|o| o.owner_id == "c" && o.etag.is_some()), "claims over the expired records");
    }

    #[test]
    fn a_released_owner_is_not_counted_as_an_owner() {
        // Eight partitions, four released by a stopped peer: a lone live instance should take
        // all eight, not stop at four as if "" were a live owner.
        let t = template();
        let now = SystemTime::now();
        let released: Vec<Ownership> = (0..4)
            .map(|p| Ownership {
                partition_id: p.to_string(),
                owner_id: String::new(),
                etag: Some(format!("e{p}")),
                last_modified: Some(now),
                ..t.clone()
            })
            .collect();
        let me = LoadBalancer::new("me", LoadBalancingStrategy::Greedy, EXPIRY);
        assert_eq!(me.plan(&partitions(8), &released, &t, now).len(), 8);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any number of processors, any mix of strategies, any order of cycles: after enough
        /// cycles every partition is owned and the loads differ by at most one.
        #[test]
        fn processors_converge_to_a_fair_split(
            n in 1usize..33,
            greedy in proptest::collection::vec(any::<bool>(), 1..6),
            order_seed in any::<u64>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let store = InMemoryCheckpointStore::new();
                let bs: Vec<LoadBalancer> = greedy
                    .iter()
                    .enumerate()
                    .map(|(i, g)| {
                        let s = if *g { LoadBalancingStrategy::Greedy } else { LoadBalancingStrategy::Balanced };
                        LoadBalancer::new(format!("p{i}"), s, EXPIRY)
                    })
                    .collect();
                let mut order: Vec<usize> = (0..bs.len()).collect();
                let mut seed = order_seed;
                for _ in 0..(2 * n + 10) {
                    // A different order every round (a tiny LCG, so the case replays from its seed).
                    for i in (1..order.len()).rev() {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        order.swap(i, (seed >> 33) as usize % (i + 1));
                    }
                    for &i in &order {
                        cycle(&bs[i], &store, n).await;
                    }
                }
                let c = counts(&store, &bs).await;
                let owned: usize = c.iter().sum();
                prop_assert_eq!(owned, n, "every partition is owned: {:?}", c);
                let (lo, hi) = (*c.iter().min().unwrap(), *c.iter().max().unwrap());
                prop_assert!(hi - lo <= 1, "loads differ by at most one: {:?}", c);
                Ok(())
            })?;
        }
    }
}
