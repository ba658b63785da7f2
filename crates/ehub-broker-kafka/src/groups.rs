//! The group coordinator for Kafka's classic consumer-group protocol: JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup. One coordinator (node 0) for the namespace; groups are created on
//! first use and live in memory (members rejoin after a restart, as after a coordinator
//! failover); their committed offsets are durable in [`crate::offsets`].
//!
//! A rebalance ends when every known member has rejoined, or at the rebalance timeout, when
//! those that did not are removed. The sweeper also removes members whose session timed out.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Kafka error codes the coordinator answers with.
pub mod code {
    /// ILLEGAL_GENERATION.
    pub const ILLEGAL_GENERATION: i16 = 22;
    /// INCONSISTENT_GROUP_PROTOCOL.
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    /// INVALID_GROUP_ID.
    pub const INVALID_GROUP_ID: i16 = 24;
    /// UNKNOWN_MEMBER_ID.
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    /// INVALID_SESSION_TIMEOUT.
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    /// REBALANCE_IN_PROGRESS.
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    /// MEMBER_ID_REQUIRED.
    pub const MEMBER_ID_REQUIRED: i16 = 79;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// What a member's JoinGroup gets.
#[derive(Debug, Clone, Default)]
pub struct Joined {
    /// Error code (0 = none).
    pub error: i16,
    /// The generation.
    pub generation: i32,
    /// The chosen protocol (assignor).
    pub protocol: Option<String>,
    /// The protocol type (`consumer`).
    pub protocol_type: String,
    /// The leader's member id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// A member as seen by DescribeGroups.
#[derive(Debug, Clone)]
pub struct MemberView {
    /// Member id.
    pub id: String,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Its assignment.
    pub assignment: Bytes,
}

/// A group as seen by DescribeGroups and ListGroups.
#[derive(Debug, Clone)]
pub struct GroupView {
    /// State name (Empty, PreparingRebalance, CompletingRebalance, Stable, Dead).
    pub state: &'static str,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen protocol.
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberView>,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    last_seen: Instant,
    join: Option<oneshot::Sender<Joined>>,
    sync: Option<oneshot::Sender<(i16, Bytes)>>,
    assignment: Bytes,
}

#[derive(Debug)]
struct Group {
    state: State,
    generation: i32,
    protocol_type: String,
    protocol: Option<String>,
    leader: Option<String>,
    members: HashMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
}

impl Group {
    fn new() -> Self {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: None,
            leader: None,
            members: HashMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
        }
    }

    fn prepare_rebalance(&mut self) {
        if self.state != State::PreparingRebalance {
            self.state = State::PreparingRebalance;
            let timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or(Duration::from_secs(60));
            self.rebalance_deadline = Some(Instant::now() + timeout);
            // Members waiting in SyncGroup learn of the new round.
            for m in self.members.values_mut() {
                if let Some(tx) = m.sync.take() {
                    let _ = tx.send((code::REBALANCE_IN_PROGRESS, Bytes::new()));
                }
            }
        }
    }

    /// Ends the join phase if every member has rejoined (or `force`: the deadline passed, and
    /// those that did not rejoin are removed).
    fn maybe_complete_join(&mut self, force: bool) {
        if self.state != State::PreparingRebalance {
            return;
        }
        if !force && self.members.values().any(|m| m.join.is_none()) {
            return;
        }
        self.members.retain(|_, m| m.join.is_some());
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader = None;
            self.protocol = None;
            self.generation += 1;
            return;
        }
        // The first protocol of the leader's list that every member supports.
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            let mut ids: Vec<_> = self.members.keys().cloned().collect();
            ids.sort();
            self.leader = ids.into_iter().next();
        }
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.members[&leader]
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == n)));
        self.generation += 1;
        self.protocol = protocol.clone();
        self.state = State::CompletingRebalance;
        let all: Vec<_> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m.protocols.iter().find(|(p, _)| Some(p) == protocol.as_ref()).map(|(_, b)| b.clone());
                (id.clone(), m.instance_id.clone(), meta.unwrap_or_default())
            })
            .collect();
        let now = Instant::now();
        for (id, m) in self.members.iter_mut() {
            m.last_seen = now;
            m.assignment = Bytes::new();
            if let Some(tx) = m.join.take() {
                let _ = tx.send(Joined {
                    error: 0,
                    generation: self.generation,
                    protocol: protocol.clone(),
                    protocol_type: self.protocol_type.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader { all.clone() } else { Vec::new() },
                });
            }
        }
    }

    fn remove(&mut self, id: &str) {
        if self.members.remove(id).is_some() {
            if self.members.is_empty() {
                self.state = State::Empty;
                self.leader = None;
                self.protocol = None;
                self.rebalance_deadline = None;
            } else {
                self.prepare_rebalance();
                self.maybe_complete_join(false);
            }
        }
    }
}

/// A join's parameters.
#[derive(Debug)]
pub struct JoinRequest {
    /// Group.
    pub group: String,
    /// Member id ("" for a new member).
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout: Duration,
    /// Rebalance timeout.
    pub rebalance_timeout: Duration,
    /// Protocol type.
    pub protocol_type: String,
    /// (assignor, metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// The request's version (MEMBER_ID_REQUIRED from v4).
    pub version: i16,
}

/// Every Kafka group's membership.
#[derive(Debug, Default)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    next: std::sync::atomic::AtomicU64,
}

fn immediate(j: Joined) -> oneshot::Receiver<Joined> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(j);
    rx
}

impl Coordinator {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        format!("{client_id}-{nanos:x}-{n}")
    }

    /// JoinGroup: the answer arrives when the rebalance completes.
    pub fn join(&self, r: JoinRequest) -> oneshot::Receiver<Joined> {
        let fail = |error: i16, member_id: String| immediate(Joined { error, member_id, ..Joined::default() });
        if r.group.is_empty() {
            return fail(code::INVALID_GROUP_ID, r.member_id);
        }
        if r.session_timeout < Duration::from_millis(1000) || r.session_timeout > Duration::from_secs(30 * 60) {
            return fail(code::INVALID_SESSION_TIMEOUT, r.member_id);
        }
        let mut groups = self.lock();
        let g = groups.entry(r.group.clone()).or_insert_with(Group::new);
        if g.state != State::Empty && !g.members.is_empty() && g.protocol_type != r.protocol_type
            || r.protocols.is_empty()
            || (!g.members.is_empty()
                && !r
                    .protocols
                    .iter()
                    .any(|(p, _)| g.members.values().all(|m| m.protocols.iter().any(|(q, _)| q == p))))
        {
            return fail(code::INCONSISTENT_GROUP_PROTOCOL, r.member_id);
        }
        let member_id = if r.member_id.is_empty() {
            let id = self.new_member_id(&r.client_id);
            if r.version >= 4 {
                g.pending.insert(id.clone(), Instant::now());
                return fail(code::MEMBER_ID_REQUIRED, id);
            }
            id
        } else {
            if !g.members.contains_key(&r.member_id) && g.pending.remove(&r.member_id).is_none() {
                return fail(code::UNKNOWN_MEMBER_ID, r.member_id);
            }
            r.member_id.clone()
        };
        let (tx, rx) = oneshot::channel();
        let unchanged = g.members.get(&member_id).is_some_and(|m| m.protocols == r.protocols);
        let now = Instant::now();
        match g.members.get_mut(&member_id) {
            Some(m) => {
                m.protocols = r.protocols;
                m.session_timeout = r.session_timeout;
                m.rebalance_timeout = r.rebalance_timeout;
                m.last_seen = now;
                m.join = Some(tx);
            }
            None => {
                g.members.insert(
                    member_id.clone(),
                    Member {
                        instance_id: r.instance_id,
                        client_id: r.client_id,
                        client_host: r.client_host,
                        session_timeout: r.session_timeout,
                        rebalance_timeout: r.rebalance_timeout,
                        protocols: r.protocols,
                        last_seen: now,
                        join: Some(tx),
                        sync: None,
                        assignment: Bytes::new(),
                    },
                );
            }
        }
        g.protocol_type = r.protocol_type;
        // A follower rejoining a stable group with nothing changed gets the current round back.
        if g.state == State::Stable && unchanged && g.leader.as_deref() != Some(member_id.as_str()) {
            let m = g.members.get_mut(&member_id).expect("just inserted");
            if let Some(tx) = m.join.take() {
                let _ = tx.send(Joined {
                    error: 0,
                    generation: g.generation,
                    protocol: g.protocol.clone(),
                    protocol_type: g.protocol_type.clone(),
                    leader: g.leader.clone().unwrap_or_default(),
                    member_id,
                    members: Vec::new(),
                });
            }
            return rx;
        }
        g.prepare_rebalance();
        g.maybe_complete_join(false);
        rx
    }

    /// SyncGroup: a member's assignment, once the leader has sent them.
    pub fn sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> oneshot::Receiver<(i16, Bytes)> {
        let (tx, rx) = oneshot::channel();
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group).filter(|g| g.members.contains_key(member_id)) else {
            let _ = tx.send((code::UNKNOWN_MEMBER_ID, Bytes::new()));
            return rx;
        };
        if generation != g.generation {
            let _ = tx.send((code::ILLEGAL_GENERATION, Bytes::new()));
            return rx;
        }
        match g.state {
            State::Empty | State::PreparingRebalance => {
                let _ = tx.send((code::REBALANCE_IN_PROGRESS, Bytes::new()));
            }
            State::Stable => {
                let m = &g.members[member_id];
                let _ = tx.send((0, m.assignment.clone()));
            }
            State::CompletingRebalance => {
                let now = Instant::now();
                if g.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, m) in g.members.iter_mut() {
                        m.assignment = given.remove(id).unwrap_or_default();
                        m.last_seen = now;
                        if let Some(w) = m.sync.take() {
                            let _ = w.send((0, m.assignment.clone()));
                        }
                    }
                    g.state = State::Stable;
                    let _ = tx.send((0, g.members[member_id].assignment.clone()));
                } else if let Some(m) = g.members.get_mut(member_id) {
                    m.last_seen = now;
                    m.sync = Some(tx);
                }
            }
        }
        rx
    }

    /// Heartbeat: the error code to answer with.
    pub fn heartbeat(&self, group: &str, generation: i32, member_id: &str) -> i16 {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else { return code::UNKNOWN_MEMBER_ID };
        let state = g.state;
        let gen = g.generation;
        let Some(m) = g.members.get_mut(member_id) else { return code::UNKNOWN_MEMBER_ID };
        m.last_seen = Instant::now();
        if state == State::PreparingRebalance {
            code::REBALANCE_IN_PROGRESS
        } else if generation != gen {
            code::ILLEGAL_GENERATION
        } else {
            0
        }
    }

    /// LeaveGroup of one member: the error code.
    pub fn leave(&self, group: &str, member_id: &str) -> i16 {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else { return code::UNKNOWN_MEMBER_ID };
        if !g.members.contains_key(member_id) {
            return code::UNKNOWN_MEMBER_ID;
        }
        g.remove(member_id);
        0
    }

    /// Whether an offset commit from (`generation`, `member_id`) is allowed: the error code.
    /// Commits with no membership (generation -1, no member) are allowed while the group has no
    /// members, as for `assign()` consumers.
    pub fn check_commit(&self, group: &str, generation: i32, member_id: &str) -> i16 {
        let groups = self.lock();
        let Some(g) = groups.get(group) else {
            return if generation < 0 { 0 } else { code::ILLEGAL_GENERATION };
        };
        if generation < 0 && member_id.is_empty() {
            return if g.members.is_empty() { 0 } else { code::ILLEGAL_GENERATION };
        }
        if !g.members.contains_key(member_id) {
            return code::UNKNOWN_MEMBER_ID;
        }
        if generation != g.generation {
            return code::ILLEGAL_GENERATION;
        }
        0
    }

    /// A group's state for DescribeGroups (`None` if it has never been used).
    pub fn describe(&self, group: &str) -> Option<GroupView> {
        let groups = self.lock();
        let g = groups.get(group)?;
        Some(GroupView {
            state: g.state.as_str(),
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone().unwrap_or_default(),
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    id: id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(p, _)| Some(p) == g.protocol.as_ref())
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Every group with members: (name, protocol type, state).
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        let groups = self.lock();
        groups.iter().map(|(n, g)| (n.clone(), g.protocol_type.clone(), g.state.as_str())).collect()
    }

    /// Removes members whose session timed out, ends rebalances past their deadline, and
    /// forgets member ids handed out but never used.
    pub fn expire(&self, now: Instant) {
        let mut groups = self.lock();
        for (name, g) in groups.iter_mut() {
            g.pending.retain(|_, at| now.duration_since(*at) < Duration::from_secs(300));
            if g.state == State::PreparingRebalance {
                if g.rebalance_deadline.is_some_and(|d| now >= d) {
                    tracing::info!(group = %name, "Kafka group: rebalance timed out; members that did not rejoin are removed");
                    g.maybe_complete_join(true);
                }
                continue;
            }
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| m.join.is_none() && now.duration_since(m.last_seen) > m.session_timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %name, member = %id, "Kafka group: member's session timed out");
                g.remove(&id);
            }
        }
    }
}

/// Runs [`Coordinator::expire`] every 500 ms until `stop`.
pub(crate) async fn sweep(ep: Arc<crate::Endpoint>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => ep.groups.expire(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(group: &str, member: &str, version: i16) -> JoinRequest {
        JoinRequest {
            group: group.into(),
            member_id: member.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            version,
        }
    }

    fn now(rx: &mut oneshot::Receiver<Joined>) -> Joined {
        rx.try_recv().expect("answered")
    }

    #[test]
    fn two_members_join_sync_and_rebalance_when_one_leaves() {
        let c = Coordinator::default();
        // v4+: a new member first gets an id.
        let j = now(&mut c.join(req("g", "", 5)));
        assert_eq!(j.error, code::MEMBER_ID_REQUIRED);
        let a = j.member_id;
        let ja = now(&mut c.join(req("g", &a, 5)));
        assert_eq!((ja.error, ja.generation, ja.leader.as_str()), (0, 1, a.as_str()));
        assert_eq!(ja.members.len(), 1);
        let mut s = c.sync("g", 1, &a, vec![(a.clone(), Bytes::from_static(b"all"))]);
        assert_eq!(s.try_recv().unwrap(), (0, Bytes::from_static(b"all")));
        assert_eq!(c.heartbeat("g", 1, &a), 0);

        // A second member (v3: no id round) starts a rebalance; the first learns by heartbeat.
        let mut rb = c.join(req("g", "", 3));
        assert!(rb.try_recv().is_err(), "waits for the first member to rejoin");
        assert_eq!(c.heartbeat("g", 1, &a), code::REBALANCE_IN_PROGRESS);
        let ja = now(&mut c.join(req("g", &a, 5)));
        let jb = now(&mut rb);
        assert_eq!((ja.generation, jb.generation), (2, 2));
        assert_eq!(ja.leader, a);
        assert_eq!((ja.members.len(), jb.members.len()), (2, 0));
        let b = jb.member_id;
        let mut sb = c.sync("g", 2, &b, vec![]);
        assert!(sb.try_recv().is_err(), "a follower waits for the leader's assignments");
        let mut sa = c.sync("g", 2, &a, vec![(a.clone(), "p0".into()), (b.clone(), "p1".into())]);
        assert_eq!(sa.try_recv().unwrap(), (0, Bytes::from_static(b"p0")));
        assert_eq!(sb.try_recv().unwrap(), (0, Bytes::from_static(b"p1")));
        assert_eq!(c.check_commit("g", 2, &b), 0);
        assert_eq!(c.check_commit("g", 1, &b), code::ILLEGAL_GENERATION);
        assert_eq!(c.check_commit("g", -1, ""), code::ILLEGAL_GENERATION);

        // b leaves: a rejoins alone at generation 3.
        assert_eq!(c.leave("g", &b), 0);
        assert_eq!(c.heartbeat("g", 2, &a), code::REBALANCE_IN_PROGRESS);
        let ja = now(&mut c.join(req("g", &a, 5)));
        assert_eq!((ja.generation, ja.members.len()), (3, 1));
        assert_eq!(c.describe("g").unwrap().state, "CompletingRebalance");
        assert_eq!(c.leave("g", &a), 0);
        assert_eq!(c.describe("g").unwrap().state, "Empty");
        assert_eq!(c.check_commit("g", -1, ""), 0, "simple commits once the group is empty");
    }

    #[test]
    fn a_silent_member_is_removed_after_its_session() {
        let c = Coordinator::default();
        let a = now(&mut c.join(req("g", "", 3))).member_id;
        let mut s = c.sync("g", 1, &a, vec![]);
        assert_eq!(s.try_recv().unwrap().0, 0);
        let mut rb = c.join(req("g", "", 3));
        // a never rejoins: at the rebalance deadline it is dropped and b's join completes.
        c.expire(Instant::now() + Duration::from_secs(11));
        let jb = now(&mut rb);
        assert_eq!((jb.error, jb.generation, jb.members.len()), (0, 2, 1));
        assert_eq!(c.heartbeat("g", 2, &a), code::UNKNOWN_MEMBER_ID);
        // b stops heartbeating: its session ends.
        c.expire(Instant::now() + Duration::from_secs(11));
        assert_eq!(c.describe("g").unwrap().members.len(), 0);
    }
}
