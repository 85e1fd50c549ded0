//! Multi-node test clusters in memory, for testing an application built on nodenet.
//!
//! A [`Cluster`] is N nodes on one in-memory [`Hub`]: no sockets, no real time when the test
//! runs on tokio's paused clock (`#[tokio::test(start_paused = true)]`, tokio's `test-util`
//! feature), and the hub's network models (partitions, lossy links, NATs) at hand. Node 0 is
//! the bootstrap node every other joins through. The cluster owns the hub, so its nodes keep
//! their network for as long as it lives, and it holds each node's deliveries
//! ([`Cluster::inbox`]) until the application under test takes them
//! ([`Cluster::take_inbox`]).
//!
//! The paused clock makes waiting free only while nothing runs: every node's maintenance and
//! traffic still cost CPU. Measured in a debug build on a 2-core machine, the crate's
//! `cluster_test` example (20 nodes: join, 38 messages, an isolated node, 10 s of waiting)
//! simulates 12 s in 0.2 s of CPU, and 12 nodes through a 90 s isolation and a rejoin take
//! about 1 s. A panic in a task you spawned does not fail the test by itself (await its
//! handle).
//!
//! Node 0 is everyone's bootstrap contact, so right after [`Cluster::settled`] it is one hop
//! from every node; maintenance spreads the edges out over the following minutes. Test
//! multi-hop behaviour between other nodes, or let the cluster run a while first.
//!
//! ```
//! use std::time::Duration;
//! use nodenet::testing::Cluster;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In a test: #[tokio::test(start_paused = true)] async fn my_app_works() { ... }
//! let mut cluster = Cluster::builder(20).build();
//! cluster.settled(Duration::from_secs(120)).await?; // every node holds 3 edges or more
//! let (from, to) = (cluster.node(3).clone(), cluster.node(17).id());
//! from.send(to, b"hello")?;
//! let d = tokio::time::timeout(Duration::from_secs(5), cluster.inbox(17).recv()).await?;
//! assert_eq!(d.map(|d| d.payload), Some(b"hello".to_vec()));
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Identities and the nodes' random choices are fixed functions of each node's index, so a run
//! on the paused clock repeats exactly. Maintenance runs 5× faster than the default
//! ([`Maintenance::scaled`]) so clusters converge in fewer simulated seconds; the rules are
//! the same.

use std::sync::Arc;
use std::time::Duration;

use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_routing::Contact;
use nodenet_transport::Transport;
use nodenet_transport::mem::{Hub, LinkModel, MemTransport, NatModel};

use crate::{Builder, Deliveries, Maintenance, Node};

/// Edges every node must hold for [`Cluster::settled`] (fewer in a cluster too small for it).
pub const SETTLED_EDGES: usize = 3;

type Configure = Box<dyn Fn(usize, Builder) -> Builder>;

/// Sets up a [`Cluster`].
pub struct ClusterBuilder {
    n: usize,
    difficulty: u32,
    maintenance: Maintenance,
    delivery_buffer: usize,
    nats: Vec<(usize, NatModel)>,
    configure: Option<Configure>,
}

impl std::fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("n", &self.n)
            .field("difficulty", &self.difficulty)
            .finish_non_exhaustive()
    }
}

impl ClusterBuilder {
    /// Proof-of-work difficulty: every identity is minted to it and every node enforces it
    /// (default 0). Minting is deterministic, from the node's index, on one core: each bit
    /// doubles the work, so keep it low (8 takes microseconds per node, 16 milliseconds).
    ///
    /// # Panics
    /// Above 24 bits: minting N identities would take minutes.
    pub fn difficulty(mut self, bits: u32) -> Self {
        assert!(
            bits <= 24,
            "a test cluster's difficulty above 24 bits would mint for minutes"
        );
        self.difficulty = bits;
        self
    }

    /// Maintenance timers (default [`Maintenance::scaled`]`(5)`).
    pub fn maintenance(mut self, m: Maintenance) -> Self {
        self.maintenance = m;
        self
    }

    /// Each node's delivery queue (default 4,096, so a test that reads late loses nothing).
    pub fn delivery_buffer(mut self, n: usize) -> Self {
        self.delivery_buffer = n;
        self
    }

    /// Puts node `i` behind a NAT of `model`, alone on its own NAT host; it advertises no
    /// address (it cannot be dialed) and reaches the others by dialing out.
    pub fn behind_nat(mut self, i: usize, model: NatModel) -> Self {
        self.nats.push((i, model));
        self
    }

    /// Adjusts node `i`'s builder (relays, media consent, timeouts, ...) before it is built.
    pub fn configure(mut self, f: impl Fn(usize, Builder) -> Builder + 'static) -> Self {
        self.configure = Some(Box::new(f));
        self
    }

    /// Builds and starts every node; all but node 0 bootstrap through node 0. Must be called
    /// within a tokio runtime. Await [`Cluster::settled`] before testing routed traffic.
    ///
    /// # Panics
    /// If a node cannot be built: only a `configure` hook that breaks the node's own
    /// identity or difficulty can cause that.
    pub fn build(self) -> Cluster {
        let mut cluster = Cluster {
            hub: Hub::new(),
            members: Vec::new(),
            difficulty: self.difficulty,
            maintenance: self.maintenance,
            delivery_buffer: self.delivery_buffer,
        };
        for i in 0..self.n {
            let identity = identity_at(i, self.difficulty);
            let nat = self.nats.iter().find(|(j, _)| *j == i).map(|(_, m)| *m);
            let configure = self.configure.as_ref();
            cluster.add(identity, nat, |b| match configure {
                Some(f) => f(i, b),
                None => b,
            });
        }
        cluster
    }
}

/// One node of a cluster.
#[derive(Debug)]
struct Member {
    node: Node,
    inbox: Option<Deliveries>,
    transport: MemTransport,
    killed: bool,
}

/// N nodes on one in-memory hub (see the [module docs](self)).
#[derive(Debug)]
pub struct Cluster {
    hub: Hub,
    members: Vec<Member>,
    difficulty: u32,
    maintenance: Maintenance,
    delivery_buffer: usize,
}

/// Why [`Cluster::settled`] gave up: the nodes still below the edge floor, as
/// `(index, edges)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not settled after {waited:?}: nodes (index, edges) below the floor: {short:?}")]
pub struct NotSettled {
    /// How long it waited.
    pub waited: Duration,
    /// The nodes below the floor, and their edges.
    pub short: Vec<(usize, usize)>,
}

impl Cluster {
    /// A cluster of `n` nodes, to set up.
    pub fn builder(n: usize) -> ClusterBuilder {
        ClusterBuilder {
            n,
            difficulty: 0,
            maintenance: Maintenance::scaled(5),
            delivery_buffer: 4096,
            nats: Vec::new(),
            configure: None,
        }
    }

    /// Adds a node with `identity` (it need not meet the cluster's difficulty: a test of
    /// refusal) that bootstraps through node 0, and returns its index. `configure` adjusts
    /// its builder, which starts with the cluster's settings.
    ///
    /// # Panics
    /// If the node cannot be built (a `configure` that demands more difficulty than
    /// `identity` has).
    pub fn join(
        &mut self,
        identity: Identity,
        configure: impl FnOnce(Builder) -> Builder,
    ) -> usize {
        self.add(identity, None, configure)
    }

    fn add(
        &mut self,
        identity: Identity,
        nat: Option<NatModel>,
        configure: impl FnOnce(Builder) -> Builder,
    ) -> usize {
        let i = self.members.len();
        let id = identity.node_id();
        #[allow(
            clippy::expect_used,
            reason = "two transports of one cluster never clash"
        )]
        let transport = self
            .hub
            .transport_for(&identity, &format!("node{i}"))
            .expect("a fresh name on this hub");
        let mut builder = Node::builder(identity)
            .transport(Arc::new(transport.clone()))
            .min_difficulty(if nodenet_pow::verify(&id, self.difficulty) {
                self.difficulty
            } else {
                0
            })
            .maintenance(self.maintenance.clone())
            .delivery_buffer(self.delivery_buffer)
            .deterministic_seed(i as u64 + 1);
        if let Some(model) = nat {
            self.hub.set_nat(id, &format!("nat{i}"), model);
            builder = builder.advertise(Vec::new());
        }
        #[allow(clippy::expect_used, reason = "documented: a broken configure hook")]
        let node = configure(builder).build().expect("a cluster node builds");
        #[allow(clippy::expect_used, reason = "a node just built")]
        let inbox = Some(node.deliveries().expect("a fresh node's deliveries"));
        node.spawn();
        if let Some(boot) = self.members.first() {
            node.bootstrap(vec![Contact::new(
                boot.node.id(),
                vec![boot.transport.local_addr()],
            )]);
        }
        self.members.push(Member {
            node,
            inbox,
            transport,
            killed: false,
        });
        i
    }

    /// Nodes in the cluster.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True for a cluster of no nodes.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Node `i`.
    ///
    /// # Panics
    /// If there is no node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.members[i].node
    }

    /// Every node, by index.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.members.iter().map(|m| &m.node)
    }

    /// Node `i`'s NodeId.
    ///
    /// # Panics
    /// If there is no node `i`.
    pub fn id(&self, i: usize) -> NodeId {
        self.members[i].node.id()
    }

    /// What has been delivered to node `i`.
    ///
    /// # Panics
    /// If there is no node `i`, or its inbox was taken ([`Cluster::take_inbox`]).
    pub fn inbox(&mut self, i: usize) -> &mut Deliveries {
        #[allow(clippy::expect_used, reason = "documented")]
        self.members[i]
            .inbox
            .as_mut()
            .expect("the inbox was taken with take_inbox")
    }

    /// Hands node `i`'s deliveries to the application under test (which reads them itself,
    /// as it would [`Node::deliveries`]); `None` if taken before.
    ///
    /// # Panics
    /// If there is no node `i`.
    pub fn take_inbox(&mut self, i: usize) -> Option<Deliveries> {
        self.members[i].inbox.take()
    }

    /// The hub, for its other network models ([`Hub::set_link`], [`Hub::set_nat`], ...).
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Cuts every path between nodes `a` and `b` (both ways) until [`Cluster::heal`].
    pub fn partition(&self, a: usize, b: usize) {
        self.hub.partition(self.id(a), self.id(b));
    }

    /// Restores the paths [`Cluster::partition`] cut.
    pub fn heal(&self, a: usize, b: usize) {
        self.hub.heal(self.id(a), self.id(b));
    }

    /// Cuts node `i` off from every other node (as [`Cluster::partition`] with each), until
    /// [`Cluster::rejoin`]. It keeps running; its edges die by their dead-edge timers, so
    /// allow them 90 s of simulated time (with the cluster's 5× maintenance) before you
    /// expect no edge to or from it. What is sent to it meanwhile is lost, not held.
    ///
    /// # Panics
    /// If there is no node `i`.
    pub fn isolate(&self, i: usize) {
        for j in (0..self.len()).filter(|&j| j != i) {
            self.partition(i, j);
        }
    }

    /// Restores the paths [`Cluster::isolate`] cut. Node `i` finds its way back through its
    /// bootstrap contact and maintenance.
    ///
    /// # Panics
    /// If there is no node `i`.
    pub fn rejoin(&self, i: usize) {
        for j in (0..self.len()).filter(|&j| j != i) {
            self.heal(i, j);
        }
    }

    /// Gives the link from node `a` to node `b` loss, delay and jitter.
    pub fn set_link(&self, a: usize, b: usize, model: LinkModel) {
        self.hub.set_link(self.id(a), self.id(b), model);
    }

    /// Node `i` vanishes without a word: its transport stops, as a crashed process's would.
    /// The others notice only by their dead-edge timers.
    ///
    /// # Panics
    /// If there is no node `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].transport.close();
        self.members[i].killed = true;
    }

    /// Waits until every node (killed ones aside) holds at least [`SETTLED_EDGES`] edges, or
    /// an edge to every other node in a smaller cluster: a real condition, checked every
    /// 100 ms of (simulated) time, instead of a guessed sleep.
    ///
    /// # Errors
    /// [`NotSettled`] after `timeout`, naming the nodes still short.
    pub async fn settled(&self, timeout: Duration) -> Result<(), NotSettled> {
        let start = tokio::time::Instant::now();
        loop {
            let short = self.short();
            if short.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(NotSettled {
                    waited: timeout,
                    short,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn short(&self) -> Vec<(usize, usize)> {
        let live = self.members.iter().filter(|m| !m.killed).count();
        let floor = SETTLED_EDGES.min(live.saturating_sub(1));
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.killed)
            .map(|(i, m)| (i, m.node.edges().len()))
            .filter(|&(_, edges)| edges < floor)
            .collect()
    }

    /// Shuts every node down (each says Leave to its neighbours).
    pub async fn shutdown(self) {
        for m in &self.members {
            m.node.shutdown().await;
        }
    }
}

/// The identity of node `i`: the first seed of the index's own stream whose NodeId meets
/// `difficulty`.
fn identity_at(i: usize, difficulty: u32) -> Identity {
    let base = u64::try_from(i).unwrap_or(u64::MAX);
    (0u64..)
        .map(|k| {
            let mut seed = [0x5au8; 32];
            seed[..8].copy_from_slice(&base.to_be_bytes());
            seed[8..16].copy_from_slice(&k.to_be_bytes());
            Identity::from_seed(&seed)
        })
        .find(|id| nodenet_pow::verify(&id.node_id(), difficulty))
        .unwrap_or_else(|| Identity::from_seed(&[0; 32]))
}
