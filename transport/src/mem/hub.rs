//! The hub: who is attached where, partitions, links, NATs and relay sessions.

use super::*;

/// A set of in-memory nodes that can dial each other.
#[derive(Clone, Debug, Default)]
pub struct Hub(Arc<HubInner>);

#[derive(Debug, Default)]
pub(super) struct HubInner {
    pub(super) state: Mutex<HubState>,
}

#[derive(Debug, Default)]
pub(super) struct HubState {
    pub(super) endpoints: HashMap<String, Weak<Shared>>,
    pub(super) unreachable: HashSet<NodeId>,
    pub(super) partitions: HashSet<(NodeId, NodeId)>,
    pub(super) links: HashMap<(NodeId, NodeId), LinkModel>,
    /// NAT boxes by public host name, and which node sits behind which.
    pub(super) nats: HashMap<String, NatBox>,
    pub(super) behind: HashMap<NodeId, String>,
    /// Relay sessions: caller-side endpoint → callee-side endpoint.
    pub(super) relays: HashMap<String, String>,
    pub(super) next_relay: u64,
    /// Nodes that do not speak media (as a peer that predates it).
    pub(super) no_media: HashSet<NodeId>,
    /// Nodes that do not speak streams (as the Go reference).
    pub(super) no_streams: HashSet<NodeId>,
    /// Media link models, per direction (datagrams and messages of media sessions).
    pub(super) media_links: HashMap<(NodeId, NodeId), LinkModel>,
    /// The receive budget of new media sessions (`None`: the default).
    pub(super) media_budget: Option<crate::media::MediaBudget>,
    /// Birthday punches waiting for a probe, by the hard side's NAT host.
    pub(super) birthdays: HashMap<String, Vec<BirthdayWait>>,
    /// Birthday probes sent by easy sides, all told.
    pub(super) birthday_probes: u64,
    /// Datagrams aimed at each host (punches, birthday probes of either side), by host.
    pub(super) aimed: HashMap<String, u64>,
}

impl HubState {
    pub(super) fn aim(&mut self, endpoint: &str) {
        *self.aimed.entry(host_of(endpoint).to_owned()).or_default() += 1;
    }
}

/// A hard side of a birthday punch, waiting for a probe on one of its sockets' ports.
#[derive(Debug)]
pub(super) struct BirthdayWait {
    pub(super) hard: NodeId,
    /// Public port → socket.
    pub(super) ports: HashMap<u16, u32>,
    /// Where the probe must come from.
    pub(super) easy: String,
    pub(super) probe: Vec<u8>,
    pub(super) hit: Option<tokio::sync::oneshot::Sender<u32>>,
}

impl HubState {
    /// The public endpoint `id` sends to `dest` from, opening (or reusing) its NAT mapping and
    /// recording `dest` as let in; `None` for a node behind no NAT.
    pub(super) fn outbound(&mut self, id: NodeId, dest: &str) -> Option<String> {
        self.outbound_on(id, 0, dest)
    }

    /// [`HubState::outbound`] from one of the node's sockets (a birthday punch's sockets
    /// each get their own mappings).
    pub(super) fn outbound_on(&mut self, id: NodeId, socket: u32, dest: &str) -> Option<String> {
        let host = self.behind.get(&id)?.clone();
        let nat = self.nats.get_mut(&host)?;
        let dependent = nat.model.mapping == Mapping::EndpointDependent || socket != 0;
        // The node's mapping (for this destination alone, if endpoint-dependent); if a dropped
        // packet from `dest` claimed its port, the destination gets a mapping of its own.
        let mut found = nat.maps.iter().position(|m| {
            m.internal == id
                && m.socket == socket
                && (!dependent || m.dest.as_deref() == Some(dest))
        });
        if let Some(i) = found.filter(|&i| nat.claimed(nat.maps[i].port, dest)) {
            found = nat.maps.iter().position(|m| {
                m.internal == id
                    && m.socket == socket
                    && m.dest.as_deref() == Some(dest)
                    && !nat.claimed(m.port, dest)
            });
            debug_assert_ne!(found, Some(i));
        }
        let exception = found.is_none() && nat.maps.iter().any(|m| m.internal == id);
        let i = match found {
            Some(i) => i,
            None => {
                let port = if nat.model.random_ports {
                    // A full NAT (all 64,512 ports mapped) reuses a port rather than spin.
                    let mut p = 1024;
                    for _ in 0..65_536 {
                        p = nat.rng.port();
                        if !nat.maps.iter().any(|m| m.port == p) {
                            break;
                        }
                    }
                    p
                } else {
                    let p = nat.next_port;
                    nat.next_port = nat.next_port.wrapping_add(1).max(30000);
                    p
                };
                nat.maps.push(NatMapping {
                    internal: id,
                    socket,
                    dest: (dependent || exception).then(|| dest.to_owned()),
                    port,
                    sent_to: HashSet::new(),
                });
                nat.maps.len() - 1
            }
        };
        let m = &mut nat.maps[i];
        m.sent_to.insert(dest.to_owned());
        Some(format!("{host}:{}", m.port))
    }

    /// Whether packets from `source` reach the node `id`: it sits behind no NAT, or its NAT
    /// lets `source` in on one of its mappings.
    pub(super) fn reaches(&self, id: NodeId, source: &str) -> bool {
        let Some(host) = self.behind.get(&id) else {
            return true;
        };
        let Some(nat) = self.nats.get(host) else {
            return true;
        };
        nat.maps
            .iter()
            .filter(|m| m.internal == id)
            .any(|m| nat.lets_in(m, source))
    }

    /// The node behind the public endpoint `endpoint`, if the NAT lets `source` in.
    pub(super) fn inbound(&self, endpoint: &str, source: &str) -> Option<NodeId> {
        let (host, port) = endpoint.rsplit_once(':')?;
        let nat = self.nats.get(host)?;
        let port: u16 = port.parse().ok()?;
        let m = nat.maps.iter().find(|m| m.port == port)?;
        nat.lets_in(m, source).then_some(m.internal)
    }

    /// A packet from `source` reached the public endpoint `endpoint` and was not let in: a
    /// NAT that [claims dropped packets](NatModel::claims_dropped) remembers it.
    pub(super) fn dropped(&mut self, endpoint: &str, source: &str) {
        let Some((host, port)) = endpoint.rsplit_once(':') else {
            return;
        };
        let (Some(nat), Ok(port)) = (self.nats.get_mut(host), port.parse::<u16>()) else {
            return;
        };
        if nat.model.claims_dropped {
            let now = Instant::now();
            nat.claims.retain(|_, until| *until > now);
            nat.claims
                .entry((port, source.to_owned()))
                .or_insert(now + CLAIM_TTL);
        }
    }

    /// Who receives what is sent to `endpoint`: the node bound there, or the node behind the
    /// NAT mapping there.
    pub(super) fn owner(&self, endpoint: &str) -> Option<NodeId> {
        if let Some(t) = self.endpoints.get(endpoint).and_then(Weak::upgrade) {
            return Some(t.id);
        }
        let (host, port) = endpoint.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let nat = self.nats.get(host)?;
        nat.maps.iter().find(|m| m.port == port).map(|m| m.internal)
    }

    /// The fixed one-way delay of the link `from → to`.
    pub(super) fn delay(&self, from: NodeId, to: NodeId) -> Duration {
        self.links
            .get(&(from, to))
            .map_or(Duration::ZERO, |l| l.delay)
    }
}

/// Why [`Hub::transport`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// Another live transport already has this address.
    #[error("address mem/{0} is taken")]
    AddrInUse(String),
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// A transport for the node `id`, reachable at `mem/<name>`. Its peers learn its NodeId
    /// but no key ([`crate::Conn::remote_key`] is `None`).
    pub fn transport(&self, id: NodeId, name: &str) -> Result<MemTransport, HubError> {
        self.make(id, None, name, DEFAULT_EVENT_QUEUE)
    }

    /// A transport for `identity`, reachable at `mem/<name>`: its peers learn its Ed25519 key
    /// with its NodeId, as over QUIC.
    pub fn transport_for(
        &self,
        identity: &nodenet_identity::Identity,
        name: &str,
    ) -> Result<MemTransport, HubError> {
        self.make(
            identity.node_id(),
            Some(identity.ed_public()),
            name,
            DEFAULT_EVENT_QUEUE,
        )
    }

    /// Like [`Hub::transport`], with an event queue of `event_queue` entries.
    pub fn transport_with(
        &self,
        id: NodeId,
        name: &str,
        event_queue: usize,
    ) -> Result<MemTransport, HubError> {
        self.make(id, None, name, event_queue)
    }

    pub(super) fn make(
        &self,
        id: NodeId,
        ed_pub: Option<[u8; 32]>,
        name: &str,
        event_queue: usize,
    ) -> Result<MemTransport, HubError> {
        let mut state = self.lock();
        if state.endpoints.get(name).and_then(Weak::upgrade).is_some() {
            return Err(HubError::AddrInUse(name.to_owned()));
        }
        let shared = Arc::new(Shared {
            id,
            ed_pub,
            addr: Addr::new(NET, name),
            hub: Arc::downgrade(&self.0),
            events: Events::new(event_queue),
            counters: Arc::default(),
            conns: ConnSet::default(),
        });
        state
            .endpoints
            .insert(name.to_owned(), Arc::downgrade(&shared));
        Ok(MemTransport(shared))
    }

    /// Cuts the link between `a` and `b` both ways: frames vanish, dials fail.
    pub fn partition(&self, a: NodeId, b: NodeId) {
        let mut state = self.lock();
        state.partitions.insert((a, b));
        state.partitions.insert((b, a));
    }

    /// Undoes [`Hub::partition`].
    pub fn heal(&self, a: NodeId, b: NodeId) {
        let mut state = self.lock();
        state.partitions.remove(&(a, b));
        state.partitions.remove(&(b, a));
    }

    /// Makes `id` reachable or not: dials to an unreachable node fail with no route, as
    /// toward a node behind a NAT, while the edges it dials itself work both ways.
    pub fn set_reachable(&self, id: NodeId, reachable: bool) {
        let mut state = self.lock();
        if reachable {
            state.unreachable.remove(&id);
        } else {
            state.unreachable.insert(id);
        }
    }

    /// Puts the node `id` behind the NAT whose public host is `host` (created with `model` if
    /// new; several nodes may share one). Its own address then reaches no one outside; peers
    /// see it, and dial it, at `host:<port>` mappings that its outbound dials and punches open.
    pub fn set_nat(&self, id: NodeId, host: &str, model: NatModel) {
        let mut state = self.lock();
        state.nats.entry(host.to_owned()).or_insert_with(|| NatBox {
            model,
            next_port: 30000,
            maps: Vec::new(),
            claims: HashMap::new(),
            rng: LinkRng::seeded(host.bytes()),
        });
        state.behind.insert(id, host.to_owned());
    }

    /// Changes the behaviour of the NAT at `host` (a router swap): mappings it already holds
    /// keep working, new ones follow `model`.
    pub fn set_nat_model(&self, host: &str, model: NatModel) {
        if let Some(nat) = self.lock().nats.get_mut(host) {
            nat.model = model;
        }
    }

    /// Sets the model of the direction `from → to`; frames already in flight keep theirs.
    pub fn set_link(&self, from: NodeId, to: NodeId, model: LinkModel) {
        self.lock().links.insert((from, to), model);
    }

    /// Sets the media model of the direction `from → to`: loss, MTU, the bottleneck and
    /// reordering shape media datagrams; delay and jitter apply to datagrams and messages
    /// (messages are never lost). Sessions opened later use it.
    pub fn set_media_link(&self, from: NodeId, to: NodeId, model: LinkModel) {
        self.lock().media_links.insert((from, to), model);
    }

    /// Makes `id` speak media or not (not: its peers' [`Media::open_media`](crate::Media::open_media) fails with
    /// [`crate::MediaError::Unsupported`], as toward a node that predates media).
    pub fn set_media(&self, id: NodeId, on: bool) {
        let mut state = self.lock();
        if on {
            state.no_media.remove(&id);
        } else {
            state.no_media.insert(id);
        }
    }

    /// Makes `id` speak streams or not (not: its peers' [`Streams::open_stream`](crate::Streams::open_stream) fails
    /// with [`crate::StreamError::Unsupported`], as toward the Go reference).
    pub fn set_streams(&self, id: NodeId, on: bool) {
        let mut state = self.lock();
        if on {
            state.no_streams.remove(&id);
        } else {
            state.no_streams.insert(id);
        }
    }

    /// Birthday probes that easy sides have sent so far.
    pub fn birthday_probes(&self) -> u64 {
        self.lock().birthday_probes
    }

    /// Datagrams any node has aimed at `host` so far, whether or not they arrived: hole
    /// punches ([`Punch::punch`](crate::Punch::punch)) and birthday probes, of the easy side and of each hard
    /// side's socket. What a test counts to show that nobody was made to spray a bystander.
    pub fn datagrams_to(&self, host: &str) -> u64 {
        self.lock().aimed.get(host).copied().unwrap_or(0)
    }

    /// Sets the receive budget of media sessions opened from now on.
    pub fn set_media_budget(&self, budget: crate::media::MediaBudget) {
        self.lock().media_budget = Some(budget);
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        lock(&self.0.state)
    }
}

pub(super) fn partitioned(hub: &Weak<HubInner>, a: NodeId, b: NodeId) -> bool {
    hub.upgrade()
        .is_none_or(|h| lock(&h.state).partitions.contains(&(a, b)))
}
