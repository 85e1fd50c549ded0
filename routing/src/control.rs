//! Control-frame codecs: Pong, Siblings, Lookup and Neighbors, and the contact list they carry.
//!
//! | frame | payload |
//! |---|---|
//! | Ping (2), Leave (7) | empty (anything there is ignored) |
//! | Pong (3) | exactly one address: where the responder saw the pinger come from |
//! | Siblings (6) | exactly an 8-byte nonce |
//! | Lookup (4) | an envelope whose payload is exactly an 8-byte nonce |
//! | Neighbors (5) | an envelope whose payload is `nonce(8) | uvarint(n) | contact*` |
//!
//! A contact is `id(32) | ed_pub(32) | x_pub(32) | caps(u32 BE) | uvarint(naddrs) | addr*`; an
//! all-zero key means "unknown". A Neighbors list holds at most 17 contacts (16 siblings and
//! the responder) and 256 addresses in all. All of these decode canonically (trailing bytes
//! refused) and without allocating.

use nodenet_identity::PUBLIC_KEY_LEN;
use nodenet_kad::NodeId;
use nodenet_wire::{Addr, AddrList, AddrRef, Reader, WireError, Writer, uvarint_len};

/// Length of lookup and sibling nonces.
pub const NONCE_LEN: usize = 8;
/// Most contacts in one Neighbors list: the 16 siblings plus the responder.
pub const MAX_NEIGHBORS: usize = 17;
/// Most addresses across one Neighbors list.
pub const MAX_NEIGHBOR_ADDRS: usize = 256;

/// Self-reported capability hints (tier 3: they carry no security weight).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Caps(pub u32);

impl Caps {
    /// Volunteers to relay for peers that cannot hole-punch.
    pub const CAN_RELAY: Self = Self(1);
    /// A stable, directly dialable node (a bootstrap anchor).
    pub const PUBLIC_ANCHOR: Self = Self(2);

    /// True if every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union.
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// An owned contact: what the knowledge table stores about a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contact {
    /// The node.
    pub id: NodeId,
    /// Its Ed25519 key, once bound (its hash must be `id`).
    pub ed_pub: Option<[u8; PUBLIC_KEY_LEN]>,
    /// Its X25519 key, only ever learned through a verified rendezvous.
    pub x_pub: Option<[u8; PUBLIC_KEY_LEN]>,
    /// Capability hints.
    pub caps: Caps,
    /// Where to dial it.
    pub addrs: Vec<Addr>,
}

impl Contact {
    /// A contact known only by id and addresses (a bootstrap entry).
    pub fn new(id: NodeId, addrs: Vec<Addr>) -> Self {
        Self {
            id,
            addrs,
            ..Self::default()
        }
    }
}

/// A contact borrowed from a decoded list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContactRef<'a> {
    /// The node.
    pub id: NodeId,
    /// Its Ed25519 key (all zeros when unknown).
    pub ed_pub: &'a [u8; PUBLIC_KEY_LEN],
    /// Its X25519 key (all zeros when unknown).
    pub x_pub: &'a [u8; PUBLIC_KEY_LEN],
    /// Capability hints.
    pub caps: Caps,
    /// Addresses.
    pub addrs: AddrList<'a>,
}

impl<'a> ContactRef<'a> {
    fn decode(r: &mut Reader<'a>, addr_budget: &mut usize) -> Result<Self, WireError> {
        let id = r.id()?;
        let ed_pub = r.array::<PUBLIC_KEY_LEN>()?;
        let x_pub = r.array::<PUBLIC_KEY_LEN>()?;
        let caps = Caps(r.u32()?);
        let addrs = AddrList::decode(r, *addr_budget)?;
        *addr_budget -= addrs.len();
        Ok(Self {
            id,
            ed_pub,
            x_pub,
            caps,
            addrs,
        })
    }

    /// An owned copy; all-zero keys become `None`.
    pub fn to_contact(&self) -> Contact {
        let key = |k: &[u8; 32]| (*k != [0; 32]).then_some(*k);
        Contact {
            id: self.id,
            ed_pub: key(self.ed_pub),
            x_pub: key(self.x_pub),
            caps: self.caps,
            addrs: self.addrs.iter().map(|a| a.to_owned_addr()).collect(),
        }
    }
}

/// A validated contact list, still encoded.
#[derive(Clone, Copy, Debug)]
pub struct ContactList<'a> {
    raw: &'a [u8],
    count: usize,
}

impl<'a> ContactList<'a> {
    /// Decodes `uvarint(n) | contact*` with at most [`MAX_NEIGHBORS`] contacts and
    /// [`MAX_NEIGHBOR_ADDRS`] addresses; the count is checked before any contact is read.
    pub fn decode(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let n = r.uvarint()?;
        if n > MAX_NEIGHBORS as u64 {
            return Err(WireError::TooMany {
                count: n,
                max: MAX_NEIGHBORS,
            });
        }
        let count = usize::try_from(n).map_err(|_| WireError::Truncated)?;
        let mut body = r.clone();
        let start = body.position();
        let mut budget = MAX_NEIGHBOR_ADDRS;
        for _ in 0..count {
            ContactRef::decode(&mut body, &mut budget)?;
        }
        let raw = r.bytes(body.position() - start)?;
        Ok(Self { raw, count })
    }

    /// Number of contacts.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The contacts.
    pub fn iter(&self) -> impl Iterator<Item = ContactRef<'a>> + 'a {
        let mut r = Reader::new(self.raw);
        let mut budget = usize::MAX;
        // Validated by `decode`; an error cannot happen, and would end the iteration.
        (0..self.count).map_while(move |_| ContactRef::decode(&mut r, &mut budget).ok())
    }
}

/// Bytes `contacts` take as a list.
pub fn contacts_len(contacts: &[Contact]) -> usize {
    uvarint_len(contacts.len() as u64)
        + contacts
            .iter()
            .map(|c| 32 + 32 + 32 + 4 + AddrList::encoded_len_of(c.addrs.iter().map(Addr::as_ref)))
            .sum::<usize>()
}

/// Writes `contacts` as a list. Refuses lists a peer would refuse.
pub fn encode_contacts(w: &mut Writer<'_>, contacts: &[Contact]) -> Result<(), WireError> {
    if contacts.len() > MAX_NEIGHBORS {
        return Err(WireError::TooMany {
            count: contacts.len() as u64,
            max: MAX_NEIGHBORS,
        });
    }
    let addrs: usize = contacts.iter().map(|c| c.addrs.len()).sum();
    if addrs > MAX_NEIGHBOR_ADDRS {
        return Err(WireError::TooMany {
            count: addrs as u64,
            max: MAX_NEIGHBOR_ADDRS,
        });
    }
    let need = contacts_len(contacts);
    if need > w.remaining() {
        return Err(WireError::BufferTooSmall {
            need,
            have: w.remaining(),
        });
    }
    w.put_uvarint(contacts.len() as u64)?;
    for c in contacts {
        w.put_id(&c.id)?;
        w.put_bytes(&c.ed_pub.unwrap_or_default())?;
        w.put_bytes(&c.x_pub.unwrap_or_default())?;
        w.put_u32(c.caps.0)?;
        AddrList::encode(w, c.addrs.iter().map(Addr::as_ref))?;
    }
    Ok(())
}

/// Decodes a Pong payload: exactly one address.
pub fn parse_pong(payload: &[u8]) -> Result<AddrRef<'_>, WireError> {
    let mut r = Reader::new(payload);
    let addr = AddrRef::decode(&mut r)?;
    r.finish()?;
    Ok(addr)
}

/// Decodes a nonce-only payload (Siblings, or a Lookup envelope's payload): exactly 8 bytes.
pub fn parse_nonce(payload: &[u8]) -> Result<[u8; NONCE_LEN], WireError> {
    let mut r = Reader::new(payload);
    let nonce = *r.array::<NONCE_LEN>()?;
    r.finish()?;
    Ok(nonce)
}

/// Decodes a Neighbors envelope's payload: the nonce it answers and the contacts.
pub fn parse_neighbors(payload: &[u8]) -> Result<([u8; NONCE_LEN], ContactList<'_>), WireError> {
    let mut r = Reader::new(payload);
    let nonce = *r.array::<NONCE_LEN>()?;
    let list = ContactList::decode(&mut r)?;
    r.finish()?;
    Ok((nonce, list))
}

/// Writes a Neighbors envelope's payload.
pub fn encode_neighbors(
    w: &mut Writer<'_>,
    nonce: &[u8; NONCE_LEN],
    contacts: &[Contact],
) -> Result<(), WireError> {
    let need = NONCE_LEN + contacts_len(contacts);
    if need > w.remaining() {
        return Err(WireError::BufferTooSmall {
            need,
            have: w.remaining(),
        });
    }
    w.put_bytes(nonce)?;
    encode_contacts(w, contacts)
}
